"""How long the compiled GAN trainer waits before its first step, per FIR implementation. One line each.

    python bench/gan_compile_time.py --impl ref      # FIR filters as depthwise convs under torch.compile
    python bench/gan_compile_time.py --impl taps     # FIR filters as shifted-slice taps

Set TORCHINDUCTOR_CACHE_DIR to an empty folder for a cold compile (the default cache would make the second
run warm). Times the first GANTrainer.step (compiles the D and G main steps) and the next 6 steps.
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from e4e.train.stylegan import GANTrainConfig, GANTrainer  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impl", default="ref", choices=["ref", "taps"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = GANTrainConfig(size=args.size, style_dim=32, n_mlp=2, channel_max=16, batch=4, device=args.device,
                         impl="fast", compile="on", d_reg_every=2, g_reg_every=2)
    tr = GANTrainer(cfg)
    tr.g.configure(impl=args.impl)
    real = torch.rand(4, 3, args.size, args.size, device=args.device) * 2 - 1
    t = time.perf_counter()
    tr.step(real)
    first = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(6):
        tr.step(real)
    if args.device != "cpu":
        torch.cuda.synchronize()
    print(f"impl={args.impl} device={args.device} size={args.size}: first step {first:.1f} s, "
          f"next 6 steps {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
