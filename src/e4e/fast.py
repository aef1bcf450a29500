"""Fast inference for an Inverter: the one place that chooses precision, op implementations, layout and
torch.compile.

In: an Inverter on its device and a few choices (all optional). Out: fn(x) -> (images at the generator's
resolution, W+ codes), float32, under no_grad. Why here: the networks only expose explicit switches
(Generator.configure, the encoder's memory format); this module decides them for inference so that
callers (e4e invert, e4e.invert, the benchmarks) get one behaviour.

Defaults (precision="auto", impl=None):
- CUDA: TF32 tensor cores for convolutions and matmuls (what PyTorch's cuDNN default gives the official
  code; images 2e-3 to 3e-3 from fp32 in earlier runs), shared-weight modulated convs with the
  demodulation, noise, bias and activation fused in one Triton kernel per layer (the PyTorch reference
  where Triton is missing), encoder and generator NHWC, and the eager forward replayed from one CUDA
  graph per bucket of batch sizes (GraphedForward). No flag, no compile wait. Measured on an H100
  (2026-12-07, docs/benchmarks.md): 2.08x / 1.87x the official code at batch 8 / 16 (1.43x / 1.48x
  without the NHWC generator and the graphs), 5.5 GiB at batch 8 (official 6.5), error 2.5e-3.
- CPU: fp32 and the reference forms, unchanged (the exact reference numbers).
precision="fp32" is the strict reference on every device (no TF32); "bf16" is bfloat16 autocast
(images within ~3e-2, codes within ~1e-4: faster, but not a default).

graphs (default on CUDA except strict fp32 and compile): no compiling; the eager kernels replayed from
one CUDA graph per bucket (GraphedForward), which removes the host's per-kernel launch cost.
channels_last (same default): the generator NHWC, so cuDNN's tensor-core convolutions need no layout
transposes (the Triton blur takes NHWC). Strict fp32 keeps the plain NCHW eager reference.
compile="aot": the same graph compiled ahead of time by AOTInductor (e4e.aot): one package per bucket
kept in compile_cache_dir()/aot, which a later process loads without tracing (no Dynamo, no CUDA graphs).

compile=True: torch.compile of the whole encode+decode with the FIR filters as fusable taps (impl
"taps"). Batches are padded up to a bucket (a power of two, capped at batch_size) so that a folder of
any size compiles at most log2(batch_size) + 1 shapes, and compiled code is cached on disk in
compile_cache_dir() (~/.cache/e4e/inductor, or $TORCHINDUCTOR_CACHE_DIR): a second process on the same
machine reuses it instead of compiling again.
"""
import contextlib
import os
import sys
import threading
from pathlib import Path

import torch

from e4e.errors import first_line
from e4e.ops.impl import check_impl, triton_available

PRECISIONS = ("auto", "fp32", "tf32", "bf16")
COMPILE_CHOICES = (False, True, "aot")


def default_precision(device: torch.device) -> str:
    """TF32 on CUDA (PyTorch's own cuDNN default; images 2e-3 to 3e-3 from fp32), fp32 elsewhere."""
    return "tf32" if torch.device(device).type == "cuda" else "fp32"


def resolve_precision(precision: str | None, device: torch.device) -> str:
    if precision is None or precision == "auto":
        return default_precision(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return precision


# The Triton kernels are the CUDA default: their GPU tests (tests/test_ops_triton.py, tests/test_fast.py,
# -m gpu) passed on an H200 on 2026-12-02, and they made the no-flag default 1.05x / 1.23x the official
# code at batch 8 / 16 there (docs/benchmarks.md). E4E_KERNELS=ref keeps the PyTorch reference ops.
TRITON_BY_DEFAULT = os.environ.get("E4E_KERNELS", "triton") != "ref"


def default_impl(device: torch.device, compile: bool = False) -> str:
    """Op implementation for inference: "taps" under torch.compile; "triton" where its kernels run and
    they are enabled (TRITON_BY_DEFAULT); else the reference."""
    if compile:
        return "taps"
    return "triton" if TRITON_BY_DEFAULT and triton_available(device) else "ref"


@contextlib.contextmanager
def precision_scope(precision: str, device: torch.device):
    """TF32 switches are global in PyTorch: set them for the duration only."""
    precision = resolve_precision(precision, device)
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def configure(inv, impl: str | None = None, compile: bool = False, channels_last: bool = False) -> str:
    """Set the inverter's networks up for fast inference on their device; -> the op implementation used.

    On CUDA the generator runs the shared-weight modulated conv (one weight for the whole batch, fused
    epilogue) and the encoder NHWC; on CPU the reference forms stay (they are faster there).
    channels_last: the generator NHWC too (prepare turns it on for CUDA's fast paths: with the Triton
    upfirdn2d taking NHWC it was 1.5-1.9x faster in TF32 on an H100; in 2026-11, when the blur was ATen's
    depthwise conv, it was slower)."""
    dev = next(inv.parameters()).device
    impl = check_impl(impl) if impl is not None else default_impl(dev, compile)
    inv.decoder.configure(grouped=dev.type != "cuda", impl=impl, channels_last=channels_last)
    if dev.type == "cuda":
        inv.encoder.to(memory_format=torch.channels_last)
    return impl


CUDNN_WORKSPACE_MIB = 1024


def limit_cudnn_workspace(mib: int = CUDNN_WORKSPACE_MIB) -> str:
    """Cap cuDNN's per-convolution workspace (PyTorch's CUDNN_CONV_WSCAP_DBG, MiB) unless the user set it.

    On PyTorch's default cuDNN v8 API it had no effect (a 256 MiB cap left a 33 GiB workspace,
    bench/memory_probe.py); on the legacy v7 API, which strict fp32 takes (strict_fp32_cudnn), the same call
    peaked at 4.2 GiB with it. Takes effect for convolutions planned after the call.
    -> the value in force."""
    return os.environ.setdefault("CUDNN_CONV_WSCAP_DBG", str(int(mib)))


def strict_fp32_cudnn() -> str:
    """Strict fp32 on CUDA: cuDNN through its legacy (v7) API, where the workspace cap above applies.

    Why: PyTorch's cuDNN v8 API lets a plan take as much workspace as there is free memory, and in strict
    fp32 its first plan for one 3x3 convolution of the FFHQ generator (256 channels at 128 px, batch 8)
    took a 33.3 GiB workspace: a 34.8 GiB peak (bench/memory_probe.py on an H100; neither the cap nor
    cudnn.benchmark changed it). Through the v7 API the same call peaked at 4.2-4.4 GiB and ran 66.5 images/s
    instead of 50.8. TF32 stays on the v8 API (188 images/s there, 151 through v7). PyTorch reads
    TORCH_CUDNN_V8_API_DISABLED once, at the process's first cuDNN convolution: set here unless the user
    set it, it takes effect when prepare(..., "fp32") comes before any convolution, and then holds for the
    whole process. -> the value in force."""
    return os.environ.setdefault("TORCH_CUDNN_V8_API_DISABLED", "1")


def bucket(n: int, batch_size: int | None = None) -> int:
    """The batch a compiled graph is run at for n images: the next power of two, capped at batch_size."""
    b = 1 << max(n - 1, 0).bit_length()
    return max(n, min(b, batch_size)) if batch_size else b


def compile_cache_dir() -> Path:
    """Where torch.compile keeps its on-disk caches (FX graphs, AOT graphs, Triton kernels, autotuning):
    $TORCHINDUCTOR_CACHE_DIR if set, else ~/.cache/e4e/inductor (stable across reboots, unlike the
    default under /tmp). Sets the variable so that inductor and Triton use it."""
    d = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or str(Path.home() / ".cache" / "e4e" / "inductor")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = d
    Path(d).mkdir(parents=True, exist_ok=True)
    return Path(d)


def enable_compile_caches() -> Path:
    """Persistent compile caches on (they are PyTorch's defaults; set here so a user's config can't
    leave a new process compiling from scratch); -> the cache folder."""
    d = compile_cache_dir()
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config
    inductor_config.fx_graph_cache = True
    inductor_config.autotune_local_cache = True
    functorch_config.enable_autograd_cache = True
    return d


def save_portable_cache(path) -> int:
    """Write every compile artifact this process made (FX/AOT graphs, Triton kernels, autotuning:
    PyTorch's "mega-cache") to one file that another machine of the same GPU and torch can load, so a
    fresh machine skips most of the compile wait. -> bytes written (0: nothing compiled yet)."""
    from e4e.outputs import atomic_write
    got = torch.compiler.save_cache_artifacts()
    if not got or not got[0]:
        return 0
    data = got[0]
    atomic_write(path, lambda f: f.write(data), mode="wb")
    return len(data)


def load_portable_cache(path) -> bool:
    """Load a file of save_portable_cache before compiling; -> whether anything was loaded. A file from
    another torch version or a corrupt one is skipped (compiling from scratch is always correct)."""
    path = Path(path)
    if not path.is_file():
        return False
    enable_compile_caches()
    try:
        return torch.compiler.load_cache_artifacts(path.read_bytes()) is not None
    except Exception as e:  # noqa: BLE001 - any failure just means a cold compile
        print(f"{path}: compile cache not loaded ({type(e).__name__}); compiling from scratch")
        return False


class GraphedForward:
    """forward(x) replayed from a CUDA graph, one per input shape, captured at its first call: the eager
    kernels (cuDNN, Triton, ATen) without their per-launch host cost and without any compiling.

    Why: eager, the FFHQ inversion at batch 8 spends a large fixed time per call (bf16 + Triton: ~38 ms of
    52 ms, from the batch-8 and batch-16 rates of docs/benchmarks.md), the host launching a thousand
    small kernels; a graph replays them with one launch. The capture runs the forward twice on a side
    stream first (Triton's JIT and cuDNN's plans must happen outside the capture). The outputs are copied
    out of the graph's memory, which the next replay overwrites. A capture that fails (an op that syncs
    with the host, say) is said once on stderr and the eager forward runs from then on.
    """

    def __init__(self, forward):
        self.forward = forward
        self.graphs = {}  # (shape, dtype) -> (graph, static input, static outputs)
        self.pool = None  # one memory pool for every bucket's graph: a replay's outputs are copied out at
        # once and the graphs are never replayed together, so one graph's temporaries may reuse another's
        self.failed = False
        self.lock = threading.Lock()  # one static input per graph: calls from threads (e4e serve) take turns

    def __call__(self, x):
        if self.failed:
            return self.forward(x)
        key = (tuple(x.shape), x.dtype)
        with self.lock:
            if key not in self.graphs:
                try:
                    self.graphs[key] = self._capture(x)
                except RuntimeError as e:
                    self.failed = True
                    recover_from_failed_capture(x.device)
                    print(f"e4e: CUDA graph capture failed ({first_line(e)}); running eager", file=sys.stderr)
                    return self.forward(x)
            graph, static_x, static_out = self.graphs[key]
            static_x.copy_(x)
            graph.replay()
            return tuple(o.clone() for o in static_out)

    def _capture(self, x):
        static_x = x.clone()
        side, main = torch.cuda.Stream(x.device), torch.cuda.current_stream(x.device)
        side.wait_stream(main)
        with torch.cuda.stream(side):
            for _ in range(2):
                self.forward(static_x)
        main.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: work that other threads launch meanwhile is not an error for this capture
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            static_out = self.forward(static_x)
        self.pool = self.pool or graph.pool()
        return graph, static_x, static_out


def recover_from_failed_capture(device) -> None:
    """Leave CUDA usable after a capture that raised.

    When a capture fails, PyTorch's capture_end raises before it hands the default CUDA generator back:
    the generator stays in capture mode and the next random op outside a graph fails ("Offset increment
    outside graph capture encountered unexpectedly", seen on an H100, 2026-12-07). A capture that
    succeeds ends that mode, so one of an op with no inputs is run here."""
    try:
        torch.cuda.synchronize(device)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, capture_error_mode="thread_local"):
            torch.zeros(1, device=device)
    except RuntimeError:  # the eager fallback is still tried: it says for itself what is wrong
        pass


def graphs_by_default(device, precision: str, compile=False) -> bool:
    """Whether prepare turns on the NHWC generator and CUDA graphs by itself: on CUDA in TF32 or bf16,
    uncompiled (measured there, docs/benchmarks.md); never for strict fp32, the plain reference."""
    return torch.device(device).type == "cuda" and resolve_precision(precision, device) != "fp32" and not compile


def prepare(inv, precision: str = "auto", compile: bool = False, batch_size: int | None = None,
            compile_mode: str | None = None, impl: str | None = None, channels_last: bool | None = None,
            graphs: bool | None = None):
    """-> fn(x) -> (images (B, 3, size, size), W+ codes (B, n_styles, style_dim)), both float32.

    precision: "auto" (tf32 on CUDA, fp32 on CPU), "fp32" (strict reference), "tf32", "bf16".
    impl: the generator's op implementation (e4e.ops.impl); None picks default_impl.
    channels_last: NHWC activations in the generator as well as the encoder (see configure); None: on
    CUDA in TF32 or bf16 without compile (the measured default), else off.
    compile: True: torch.compile with persistent caches and bucketed batches (see the module docstring);
    "aot": AOTInductor packages per bucket, cached on disk (e4e.aot);
    compile_mode: a torch.compile mode, by default CUDA graphs on GPU ("reduce-overhead"), "default"
    on CPU.
    graphs: without compiling, replay the eager forward from CUDA graphs (GraphedForward), one per
    bucket of batch sizes as for compile; ignored on CPU and with compile; None: as channels_last.
    The function has .step: what it runs per bucket (a GraphedForward when graphs are on).
    """
    dev = next(inv.parameters()).device
    precision = resolve_precision(precision, dev)
    if compile not in COMPILE_CHOICES:
        raise ValueError(f"compile must be one of {COMPILE_CHOICES}, not {compile!r}")
    on = graphs_by_default(dev, precision, compile)
    channels_last = on if channels_last is None else channels_last
    graphs = on if graphs is None else graphs
    impl = configure(inv, impl, bool(compile), channels_last)
    if dev.type == "cuda":
        limit_cudnn_workspace()
        if precision == "fp32":
            strict_fp32_cudnn()

    def forward(x):
        codes = inv.encode(x)
        return inv.decode(codes, resize=False), codes

    # CUDA graphs (reduce-overhead) took batch 8 at the FFHQ config from 325 to 403 images/s on an H100
    mode = compile_mode or ("reduce-overhead" if dev.type == "cuda" else "default")
    if compile:
        cache = enable_compile_caches()
    if compile == "aot":
        from e4e.aot import AotInverter
        step = AotInverter(inv, precision, impl, cache)
    elif compile:  # dynamic=False: one static graph per bucket (static kernels are the fast ones)
        step = torch.compile(forward, mode=mode, dynamic=False)
    else:
        graphs = graphs and dev.type == "cuda"
        step = GraphedForward(forward) if graphs else forward
    padded = bool(compile) or graphs  # a graph or compiled code per bucket, not per batch size

    @torch.no_grad()
    def run(x):
        n = x.shape[0]
        if padded:
            b = bucket(n, batch_size)
            if b > n:
                x = torch.cat([x, x[-1:].expand(b - n, *x.shape[1:])])
            if dev.type == "cuda" and compile is True:
                torch.compiler.cudagraph_mark_step_begin()
        with precision_scope(precision, dev):
            images, codes = step(x)
        images, codes = images[:n].float(), codes[:n].float()
        # a CUDA graph's outputs live in its memory pool and are overwritten by the next call
        return (images.clone(), codes.clone()) if compile is True else (images, codes)
    run.step = step
    return run
