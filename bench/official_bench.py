"""The official e4e implementation against ours, same weights, same GPU, same run. Prints one table.

    python bench/official_bench.py --official PATH/TO/encoder4editing [--batches 8 64] [--compile]

PATH is a checkout of github.com/omertov/encoder4editing (not part of this package; fetch it yourself).
Its fused_bias_act and upfirdn2d CUDA ops are built on first import by torch.utils.cpp_extension (nvcc
and ninja needed; only this benchmark needs them). The FFHQ configuration is built once in the official
code with random weights; our inverter is loaded from that official state dict through
e4e.checkpoints.official, so both compute the same function and the error column compares them.

Task timed: image (B,3,256,256) -> encoder -> W+ (+ latent_avg) -> 1024x1024 image, noise fixed, no
final resize; our bench.py's "both" task. The official code runs in float32 with PyTorch's defaults
(cuDNN may use TF32 for convolutions; matmuls do not), as its scripts do.
"""
import argparse
import json
import os
import sys
import time
from argparse import Namespace
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from bench import count_flops, matmul_peak, time_fn  # noqa: E402
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, required=True, help="encoder4editing checkout")
    ap.add_argument("--batches", nargs="+", type=int, default=[8, 64])
    ap.add_argument("--compile", action="store_true", help="also time ours under torch.compile (bf16)")
    ap.add_argument("--compile-mode", default="default", help="torch.compile mode, e.g. reduce-overhead")
    ap.add_argument("--official-max-batch", type=int, default=10 ** 9,
                    help="run the official code only up to this batch (above it, ours is compared with the "
                         "best official rate at any batch)")
    ap.add_argument("--official-only", action="store_true", help="time the official code only")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("error: the official ops need a CUDA GPU")
    dev = torch.device("cuda")
    Encoder4Editing, Generator = import_official(args.official)
    torch.manual_seed(0)
    official = Official(Encoder4Editing, Generator).eval()
    for m in official.encoder.modules():  # random but non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    ours = ours_from(official).to(dev).eval()
    official = official.to(dev)
    peaks = {p: matmul_peak(dev, p) for p in ("fp32", "tf32", "bf16")}
    print(f"device: {torch.cuda.get_device_name(dev)}; torch {torch.__version__}; matmul peak "
          + ", ".join(f"{p} {v / 1e12:.0f}" for p, v in peaks.items()) + " TFLOP/s", flush=True)

    def official_fn(x, tf32_convs):
        def fn():
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = tf32_convs
            with torch.no_grad():
                return official(x)
        return fn

    def ours_fn(x, precision, compiled=False):
        """The user's fast path, e4e.fast.prepare (shared modconv, NHWC encoder, precision, compile)."""
        if compiled:
            # a fresh dynamo cache per batch size: a second shape of the same code would otherwise be
            # compiled with a dynamic batch dimension (slower kernels), not what a fixed-batch user gets
            torch._dynamo.reset()
        run = prepare(ours, precision, compile=compiled, compile_mode=args.compile_mode)
        return lambda: run(x)[0]

    rows = []
    for batch in args.batches:
        x = torch.rand(batch, 3, 256, 256, device=dev) * 2 - 1
        with_official = batch <= args.official_max_batch
        # strict fp32 output: the reference (the official code's where it runs, else ours)
        ref_fn = official_fn(x, False) if with_official else ours_fn(x, "fp32")
        ref = ref_fn().float()
        flops = count_flops(ref_fn) / batch
        cases = []
        if with_official:
            cases += [("official", "fp32 strict", "fp32", official_fn(x, False)),
                      ("official", "fp32 (PyTorch defaults: TF32 convs)", "tf32", official_fn(x, True))]
        if not args.official_only:
            cases += [("ours", "fp32 strict", "fp32", ours_fn(x, "fp32")),
                      ("ours", "tf32", "tf32", ours_fn(x, "tf32")),
                      ("ours", "bf16 autocast", "bf16", ours_fn(x, "bf16"))]
        if args.compile and not args.official_only:
            cases.append(("ours", f"bf16 autocast, torch.compile ({args.compile_mode})", "bf16",
                          ours_fn(x, "bf16", compiled=True)))
        for impl, mode, peak_key, fn in cases:
            torch.cuda.reset_peak_memory_stats(dev)
            t0 = time.perf_counter()
            try:
                out = fn().float()
                first = time.perf_counter() - t0
                t = time_fn(fn, dev, warmup=2, reps=5)
            except RuntimeError as e:  # OOM, or cuDNN finding no engine for a layer in this mode
                print(f"failed: {impl} {mode} batch {batch}: {str(e).splitlines()[0][:200]}", flush=True)
                rows.append(dict(impl=impl, mode=mode, batch=batch, failed=str(e).splitlines()[0][:120]))
                torch.cuda.empty_cache()
                continue
            err = float((out - ref).abs().max() / ref.abs().max())
            tflops = flops * batch / t / 1e12
            rows.append(dict(impl=impl, mode=mode, batch=batch, img_s=batch / t, ms_img=1000 * t / batch,
                             peak_gib=torch.cuda.max_memory_allocated(dev) / 2 ** 30, first_call_s=first,
                             tflop_s=tflops, floor=tflops * 1e12 / peaks[peak_key], err=err))
            print(json.dumps(rows[-1]), flush=True)
            del out
        del ref
        torch.cuda.empty_cache()
    print()
    print("| implementation | precision | batch | images/s | ms/image | × best official | peak GiB | TFLOP/s "
          "| of matmul peak | max rel err vs fp32 reference |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "failed" in r:
            print(f"| {r['impl']} | {r['mode']} | {r['batch']} | failed: {r['failed']} | | | | | | |")
            continue
        # against the fastest official mode at this batch; where the official code did not run at this
        # batch, against its best rate at any batch (marked *)
        ok = [b for b in rows if b["impl"] == "official" and "failed" not in b]
        same = [b for b in ok if b["batch"] == r["batch"]]
        base = max(same or ok, key=lambda b: b["img_s"], default=None)
        if base is None:
            continue
        star = "" if same else "*"
        print(f"| {r['impl']} | {r['mode']} | {r['batch']} | {r['img_s']:.1f} | {r['ms_img']:.2f} | "
              f"{r['img_s'] / base['img_s']:.2f}{star} | {r['peak_gib']:.1f} | {r['tflop_s']:.1f} | "
              f"{100 * r['floor']:.1f}% | {r['err']:.1e} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": torch.cuda.get_device_name(dev), "torch": torch.__version__,
                                               "peaks": peaks, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
