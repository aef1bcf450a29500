"""torch.compile cold start vs warm start: the same compiled inversion in two fresh processes.

    python bench/compile_warm_start.py --device cpu --config tiny [--aot] [--cache-dir DIR]

Each process builds the inverter (random weights), then times e4e.fast.prepare(..., compile=True, or
compile="aot" with --aot) up to
its first output: the wait a user sees. The first process starts from an empty cache folder (compiles);
the second finds the on-disk caches the first one left (e4e.fast.compile_cache_dir). Prints both times.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

TINY = dict(enc=dict(kind="e4e", stylegan_size=32, style_dim=32, widths=(8, 16, 24, 32), units=(1, 1, 1, 1),
                     input_size=32, mode="ir"),
            gen=dict(size=32, style_dim=32, n_mlp=2, channel_max=16), size=32)


def one_process(args):
    import torch

    from e4e.fast import prepare
    from e4e.inverter import build_inverter
    from e4e.nets.encoders import EncoderConfig
    from e4e.nets.stylegan2 import GeneratorConfig
    if args.config == "tiny":
        ecfg, gcfg, size = EncoderConfig(**TINY["enc"]), GeneratorConfig(**TINY["gen"]), TINY["size"]
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench import CONFIGS
        ecfg, gcfg, size = CONFIGS[args.config]
    dev = torch.device(args.device)
    torch.manual_seed(0)
    inv = build_inverter(ecfg, gcfg, latent_avg=torch.randn(1, gcfg.style_dim)).to(dev).eval()
    x = torch.rand(args.batch, 3, size, size, device=dev) * 2 - 1
    t = time.perf_counter()
    run = prepare(inv, args.precision, compile="aot" if args.aot else True, batch_size=args.batch)
    run(x)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    first = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(args.reps):  # the steady rate after the wait
        run(x)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    rate = args.reps * args.batch / (time.perf_counter() - t) if args.reps else float("nan")
    print(json.dumps({"prepare_to_first_output_s": first, "images_per_s": rate}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--config", default="tiny", choices=("tiny", "small", "ffhq"))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--reps", type=int, default=5, help="batches timed after the first output")
    ap.add_argument("--aot", action="store_true", help="AOTInductor packages (e4e.aot) instead of torch.compile")
    ap.add_argument("--cache-dir", help="cache folder (default: a new empty temporary one)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return one_process(args)
    cache = args.cache_dir or tempfile.mkdtemp(prefix="e4e_inductor_")
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
    cmd = [sys.executable, __file__, "--child", "--device", args.device, "--config", args.config,
           "--batch", str(args.batch), "--precision", args.precision, "--reps", str(args.reps)] + (["--aot"] if args.aot else [])
    for label in ("first process (empty cache)", "second process (warm cache)"):
        t = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        t = time.perf_counter() - t
        if r.returncode != 0:  # the last line that names an error (warnings come after it at exit)
            lines = [ln for ln in r.stderr.strip().splitlines() if "Error" in ln or "error" in ln]
            sys.stderr.write(r.stderr[-6000:])
            sys.exit(f"error: {label} failed: {(lines or r.stderr.strip().splitlines() or [r.returncode])[-1]}")
        row = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"{label}: {row['prepare_to_first_output_s']:.1f} s to the first output ({t:.1f} s from process "
              f"start to exit); then {row['images_per_s']:.1f} images/s over {args.reps} batches", flush=True)
    print(f"cache: {cache}")


if __name__ == "__main__":
    main()
