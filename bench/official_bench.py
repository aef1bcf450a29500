"""The official e4e implementation against ours, same weights, same GPU, one run. Prints one table.

    python bench/official_bench.py --official PATH/TO/encoder4editing --batches 8 16 64 \\
        --official-max-batch 16 --compile --json OUT.json

PATH is a checkout of github.com/omertov/encoder4editing (not part of this package; fetch it yourself).
Its fused_bias_act and upfirdn2d CUDA ops are built on first import by torch.utils.cpp_extension (nvcc
and ninja needed; only this benchmark needs them). The FFHQ configuration is built once in the official
code with random weights; our inverter is loaded from that official state dict through
e4e.checkpoints.official, so both compute the same function and the error column compares them.

Task timed: image (B,3,256,256) -> encoder -> W+ (+ latent_avg) -> 1024x1024 image, noise fixed, no
final resize. Rows per batch (each: images/s, peak memory, first-call time, max relative error against
the strict-fp32 reference, share of the measured bf16 matmul peak with FLOPs counted by FlopCounterMode):

  official, its default      float32 with PyTorch's defaults (cuDNN uses TF32 for convolutions), as its
                             scripts run; only up to --official-max-batch (it fails at 64 on an H200)
  ours, no flags             e4e.fast.prepare(inv): what `e4e invert` runs without options (since
                             2026-12-07: TF32, Triton kernels, NHWC generator, CUDA graphs)
  ours, fp32 strict / tf32 / bf16 eager     the PyTorch reference ops (impl="ref"), NCHW, eager
  ours, bf16 + triton        bf16 autocast with the Triton kernels (impl="triton")
  ours, ... NHWC generator / CUDA graphs / fold: the default's parts alone and combined (OURS below)
  ours, bf16 + compile       torch.compile (--compile, at --compile-batches): first call in this process
                             (compiles, cold caches), then the same in a second process (warm start from
                             the on-disk caches: what a user's next run waits)
  ours, bf16 + aot           the same graph compiled ahead of time (--aot, e4e.aot): refused on CUDA since
                             its package load segfaulted there (2026-12-07), so recorded as skipped
  ours, fp32 strict, own process: PyTorch's cuDNN defaults, then e4e.fast's strict-fp32 setup (batch 8 memory rows)
  ours, CPU                  small (embedded) model, 2 threads, batch 8, s/image

The reference is the official code in strict fp32 where it runs at that batch, else ours in strict fp32.
--budget-s skips the remaining rows (recorded as skipped) once the run has taken that long.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from bench import CONFIGS, count_flops, matmul_peak, time_fn  # noqa: E402
from e4e.errors import first_line  # noqa: E402
from e4e.fast import prepare  # noqa: E402


def import_official(root: Path):
    """-> (Encoder4Editing class, Generator class) from an official checkout, building its CUDA ops."""
    if not (root / "models" / "stylegan2" / "op" / "fused_act.py").is_file():
        sys.exit(f"error: {root} is not an encoder4editing checkout (no models/stylegan2/op/fused_act.py)")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", "/tmp/torch_extensions")
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", f"{major}.{minor}")
    sys.path.insert(0, str(root))
    t = time.perf_counter()
    try:
        from models.encoders.psp_encoders import Encoder4Editing
        from models.stylegan2.model import Generator
    except Exception as e:  # the build prints its own log above
        sys.exit(f"error: the official CUDA ops did not build or import: {type(e).__name__}: {str(e)[:300]}")
    print(f"official ops built and imported in {time.perf_counter() - t:.0f} s", flush=True)
    return Encoder4Editing, Generator


class Official(torch.nn.Module):
    """The official pSp wrapper's forward with resize=False, randomize_noise=False."""

    def __init__(self, Encoder4Editing, Generator):
        super().__init__()
        self.encoder = Encoder4Editing(50, "ir_se", Namespace(stylegan_size=1024))
        self.decoder = Generator(1024, 512, 8, channel_multiplier=2)
        self.register_buffer("latent_avg", torch.randn(1, 512))

    def forward(self, x):
        codes = self.encoder(x) + self.latent_avg.repeat(x.shape[0], 1, 1)
        images, _ = self.decoder([codes], input_is_latent=True, randomize_noise=False)
        return images


def ours_from(official: Official):
    from e4e.checkpoints.official import inverter_from_official
    state = {f"encoder.{k}": v for k, v in official.encoder.state_dict().items()}
    state.update({f"decoder.{k}": v for k, v in official.decoder.state_dict().items()})
    ckpt = {"state_dict": state, "latent_avg": official.latent_avg.clone(),
            "opts": {"encoder_type": "Encoder4Editing", "stylegan_size": 1024, "start_from_latent_avg": True}}
    return inverter_from_official(ckpt, where="official model")


def build_models(root: Path, dev):
    """The same seeded random weights in every process: official model and ours from its state dict."""
    Encoder4Editing, Generator = import_official(root)
    torch.manual_seed(0)
    official = Official(Encoder4Editing, Generator).eval()
    for m in official.encoder.modules():  # random but non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    ours = ours_from(official).to(dev).eval()
    return official.to(dev), ours


def batch_input(batch, dev):
    g = torch.Generator(device="cpu").manual_seed(batch)
    return (torch.rand(batch, 3, 256, 256, generator=g) * 2 - 1).to(dev)


# the rows: name -> keyword arguments of e4e.fast.prepare (None: the official code)
EAGER = dict(channels_last=False, graphs=False)  # the rows below that name no NHWC generator or graphs
OURS = {
    "ours, no flags (default)": {},
    # the no-flag default until 2026-12-07: TF32, Triton kernels, NCHW generator, eager
    "ours, tf32 + triton, NCHW, eager (previous default)": dict(precision="tf32", **EAGER),
    "ours, fp32 strict": dict(precision="fp32", impl="ref"),
    "ours, tf32": dict(precision="tf32", impl="ref", **EAGER),
    "ours, bf16 eager": dict(precision="bf16", impl="ref", **EAGER),
    "ours, bf16 + triton": dict(precision="bf16", impl="triton", **EAGER),
    # the parts of the default, alone: NHWC generator (the Triton blur takes NHWC); each FIR folded into
    # the convolution beside it (measured slower: not used); CUDA graphs of the eager forward (no compile)
    "ours, tf32 + NHWC generator": dict(precision="tf32", channels_last=True, graphs=False),
    "ours, tf32 + fold": dict(precision="tf32", impl="fold", **EAGER),
    "ours, tf32 + CUDA graphs (NCHW generator)": dict(precision="tf32", channels_last=False, graphs=True),
    "ours, tf32 + NHWC generator + CUDA graphs (the default's settings)": dict(precision="tf32", channels_last=True,
                                                                            graphs=True),
    "ours, bf16 + triton + NHWC generator": dict(precision="bf16", impl="triton", channels_last=True, graphs=False),
    "ours, bf16 + triton + CUDA graphs": dict(precision="bf16", impl="triton", channels_last=False, graphs=True),
    "ours, bf16 + triton + NHWC generator + CUDA graphs": dict(precision="bf16", impl="triton", channels_last=True,
                                                               graphs=True),
    "ours, bf16 + compile": dict(precision="bf16", compile=True),
    "ours, bf16 + aot": dict(precision="bf16", compile="aot"),
}


def measure(fn, dev, ref, flops, batch, peak_bf16, reps=5):
    """-> row fields for fn (first call separately timed: compile / kernel JIT / cuDNN planning)."""
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    out = fn().float()
    torch.cuda.synchronize(dev)
    first = time.perf_counter() - t0
    t = time_fn(fn, dev, warmup=1, reps=reps, budget_s=10)
    peak = torch.cuda.max_memory_allocated(dev) / 2 ** 30
    err = float((out - ref).abs().max() / ref.abs().max()) if ref is not None else 0.0
    tflops = flops * batch / t / 1e12 if flops else float("nan")
    return dict(img_s=batch / t, ms_img=1000 * t / batch, peak_gib=peak, first_call_s=first, err=err,
                tflop_s=tflops, bf16_floor=tflops * 1e12 / peak_bf16 if peak_bf16 else float("nan"))


def child(args):
    """One row in a fresh process (warm start, cuDNN workspace settings, CPU): prints it as JSON."""
    spec = json.loads(args.child)
    if spec["kind"] == "cpu":
        from e4e.inverter import build_inverter
        torch.set_num_threads(2)
        ecfg, gcfg, size = CONFIGS["small"]
        torch.manual_seed(0)
        inv = build_inverter(ecfg, gcfg, latent_avg=torch.randn(1, gcfg.style_dim)).eval()
        x = torch.rand(spec["batch"], 3, size, size) * 2 - 1
        run = prepare(inv)
        t = time_fn(lambda: run(x), torch.device("cpu"), warmup=1, reps=5)
        print(json.dumps(dict(s_img=t / spec["batch"])))
        return
    dev = torch.device("cuda")
    if not spec.get("wscap", True):  # measure PyTorch's own cuDNN behaviour: no cap, no v7 API from e4e.fast
        import e4e.fast
        e4e.fast.limit_cudnn_workspace = lambda *a, **k: None
        e4e.fast.strict_fp32_cudnn = lambda: os.environ.get("TORCH_CUDNN_V8_API_DISABLED", "")
    official, ours = build_models(args.official, dev)
    x = batch_input(spec["batch"], dev)
    with torch.no_grad():
        ref_run = prepare(ours, "fp32", impl="ref")
        ref = ref_run(x)[0]
    t0 = time.perf_counter()
    run = prepare(ours, **OURS[spec["case"]])
    row = measure(lambda: run(x)[0], dev, ref, spec.get("flops"), spec["batch"], spec.get("peak_bf16"), reps=3)
    row["first_call_s"] = time.perf_counter() - t0  # prepare + first call: the user's wait
    print(json.dumps(row))


def run_child(args, spec, env=None, unset=(), timeout=240):
    cmd = [sys.executable, str(Path(__file__).resolve()), "--official", str(args.official), "--child", json.dumps(spec)]
    env = {k: v for k, v in dict(os.environ, **(env or {})).items() if k not in unset}
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"child process failed: {(r.stderr or r.stdout).strip().splitlines()[-1][:200]}")
    row = json.loads(r.stdout.strip().splitlines()[-1])
    row["process_s"] = time.perf_counter() - t
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, required=True, help="encoder4editing checkout")
    ap.add_argument("--batches", nargs="+", type=int, default=[8, 16, 64])
    ap.add_argument("--compile", action="store_true", help="also time ours under torch.compile (bf16)")
    ap.add_argument("--aot", action="store_true",
                    help="also time ours compiled ahead of time (AOTInductor, bf16): cold, then a second process")
    ap.add_argument("--compile-batches", nargs="+", type=int, default=[64],
                    help="batches to compile at (each compiles for about 100 s cold)")
    ap.add_argument("--official-max-batch", type=int, default=16,
                    help="run the official code only up to this batch (it fails at 64 on an H200)")
    ap.add_argument("--budget-s", type=float, default=300, help="skip the remaining rows after this many seconds")
    ap.add_argument("--compile-estimate-s", type=float, default=150,
                    help="start a compiled row only with this much of the budget left (cold compile + warm start)")
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU row")
    ap.add_argument("--json", help="write the rows here (default: $OUT/official_bench.json when $OUT is set)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # "cpu": the dry run in the tests
    args = ap.parse_args()
    if args.child:
        return child(args)
    if not torch.cuda.is_available():
        sys.exit("error: the official ops need a CUDA GPU")
    json_path = args.json or (str(Path(os.environ["OUT"]) / "official_bench.json") if os.environ.get("OUT") else None)
    t_start = time.perf_counter()
    # this process measures the no-flag rows: keep the cuDNN API a no-flag process gets (its strict-fp32
    # reference would otherwise switch the whole process to the v7 API, e4e.fast.strict_fp32_cudnn);
    # the strict-fp32 memory rows run in processes of their own
    os.environ.setdefault("TORCH_CUDNN_V8_API_DISABLED", "0")
    dev = torch.device(args.device)
    official, ours = build_models(args.official, dev)
    peaks = {p: matmul_peak(dev, p) for p in ("fp32", "tf32", "bf16")}
    name = torch.cuda.get_device_name(dev)
    print(f"device: {name}; torch {torch.__version__}; matmul peak "
          + ", ".join(f"{p} {v / 1e12:.0f}" for p, v in peaks.items()) + " TFLOP/s", flush=True)
    rows = []

    def official_fn(x, tf32_convs):
        def fn():
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = tf32_convs
            with torch.no_grad():
                return official(x)
        return fn

    def add(row):
        rows.append(row)
        print(json.dumps(row), flush=True)
        if json_path:  # kept up to date: a run cut short still leaves its rows
            Path(json_path).write_text(json.dumps({"device": name, "torch": torch.__version__, "peaks": peaks,
                                                   "rows": rows}, indent=1))

    def over_budget(case, batch, need_s=0.0):
        if time.perf_counter() - t_start + need_s > args.budget_s:
            why = f"needs {need_s:.0f} s more" if need_s else "spent"
            add(dict(case=case, batch=batch, skipped=f"skipped: --budget-s {args.budget_s:.0f} {why}"))
            return True
        return False

    flops_at = {}
    for batch in args.batches:
        x = batch_input(batch, dev)
        with_official = batch <= args.official_max_batch
        ref_fn = official_fn(x, False) if with_official else (lambda r=prepare(ours, "fp32", impl="ref"): r(x)[0])
        ref = ref_fn().float()
        flops_at[batch] = flops = count_flops(ref_fn) / batch
        def ours_fn(kw):  # prepare() configures the shared inverter: call it right before timing
            run = prepare(ours, **kw)
            return lambda: run(x)[0]
        cases = [("official, its default (TF32 convs)", lambda: official_fn(x, True))] if with_official else []
        cases += [(case, lambda kw=kw: ours_fn(kw)) for case, kw in OURS.items() if not kw.get("compile", False)]
        for case, make_fn in cases:
            if over_budget(case, batch):
                continue
            try:
                add(dict(case=case, batch=batch, **measure(make_fn(), dev, ref, flops, batch, peaks["bf16"])))
            except RuntimeError as e:  # OOM, or cuDNN finding no engine for a layer in this mode
                add(dict(case=case, batch=batch, failed=first_line(e, limit=120)))
                torch.cuda.empty_cache()
        del ref
        torch.cuda.empty_cache()
    # the batch-8 fp32 memory: a fresh process each, since cuDNN plans (and their workspaces) are cached
    for label, cap in (("PyTorch's cuDNN defaults (v8 API, no cap)", False),
                       ("e4e.fast's strict-fp32 cuDNN (v7 API, 1024 MiB cap)", True)):
        case = f"ours, fp32 strict, own process, {label}"
        if 8 in args.batches and not over_budget(case, 8):
            try:
                spec = dict(kind="gpu", case="ours, fp32 strict", batch=8, flops=flops_at.get(8),
                            peak_bf16=peaks["bf16"], wscap=cap)
                add(dict(case=case, batch=8, **run_child(args, spec, unset=("CUDNN_CONV_WSCAP_DBG",
                                                                            "TORCH_CUDNN_V8_API_DISABLED"))))
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                add(dict(case=case, batch=8, failed=str(e)[:160]))
    if not args.no_cpu and not over_budget("ours, CPU", 8):
        try:
            add(dict(case="ours, CPU (small model, 2 threads)", batch=8,
                     **run_child(args, dict(kind="cpu", batch=8), env={"CUDA_VISIBLE_DEVICES": ""})))
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            add(dict(case="ours, CPU", batch=8, failed=str(e)[:160]))
    compiled = ["ours, bf16 + compile"] if args.compile else []
    if args.aot:  # e4e.aot refuses CUDA: its package load crashed the process there
        add(dict(case="ours, bf16 + aot", batch=args.compile_batches[0], skipped="skipped: e4e.aot is CPU-only"))
    for case in compiled:  # last: the longest rows; started only with time left for a cold compile
        for batch in args.compile_batches:
            if over_budget(case, batch, need_s=args.compile_estimate_s):
                continue
            x = batch_input(batch, dev)
            ref = prepare(ours, "fp32", impl="ref")(x)[0]
            torch._dynamo.reset()
            t0 = time.perf_counter()
            run = prepare(ours, **OURS[case])
            try:
                row = measure(lambda: run(x)[0], dev, ref, flops_at.get(batch), batch, peaks["bf16"])
                row["first_call_s"] = time.perf_counter() - t0
                add(dict(case=case + " (this process: cold caches)", batch=batch, **row))
            except RuntimeError as e:
                add(dict(case=case, batch=batch, failed=first_line(e, limit=120)))
            del ref
            torch.cuda.empty_cache()
            if not over_budget(case + " (second process)", batch):
                try:
                    row = run_child(args, dict(kind="gpu", case=case, batch=batch, flops=flops_at.get(batch),
                                               peak_bf16=peaks["bf16"]))
                    add(dict(case=case + " (second process: warm start)", batch=batch, **row))
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    add(dict(case=case + " (second process)", batch=batch, failed=str(e)[:160]))
    print_table(rows)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")


def print_table(rows):
    print()
    print("| case | batch | images/s | × official | peak GiB | first call s | max rel err vs fp32 | TFLOP/s "
          "| of bf16 matmul peak |")
    print("|---|---|---|---|---|---|---|---|---|")
    ok = [r for r in rows if "img_s" in r and r["case"].startswith("official")]
    for r in rows:
        if "skipped" in r or "failed" in r:
            print(f"| {r['case']} | {r['batch']} | {r.get('skipped') or 'failed: ' + r['failed']} | | | | | | |")
            continue
        if "s_img" in r:
            print(f"| {r['case']} | {r['batch']} | {1 / r['s_img']:.1f} ({r['s_img']:.4f} s/image) | | | | | | |")
            continue
        same = [b for b in ok if b["batch"] == r["batch"]]
        base = max(same or ok, key=lambda b: b["img_s"], default=None)
        ratio = f"{r['img_s'] / base['img_s']:.2f}{'' if same else '*'}" if base else ""
        print(f"| {r['case']} | {r['batch']} | {r['img_s']:.1f} | {ratio} | {r['peak_gib']:.1f} | "
              f"{r['first_call_s']:.1f} | {r['err']:.1e} | {r['tflop_s']:.1f} | {100 * r['bf16_floor']:.1f}% |")
    print("\n× official: against the official default at the same batch; * where it did not run at that batch, "
          "against its best rate at any batch.")


if __name__ == "__main__":
    main()
