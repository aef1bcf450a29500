"""Training throughput of both trainers against the hardware floor, old and new in one run. One table.

    python bench/train_bench.py --json rows.json                       # GPU: every row below
    python bench/train_bench.py --device cpu --configs tiny --steps 4  # a smoke run

GAN rows (`e4e train-generator`): config x trainer, where trainer is
  - old: the trainer as it was before this round (a copy of its file given with --old-trainer, run
    through its own train_gan on the same random images; its rate is read back from its log),
  - reference: impl="reference" (eager steps, images decoded from disk every step, plain Adam),
  - fast: impl="fast" (dataset resident on the GPU as uint8, compiled main steps, fused Adam).
Each times whole lazy-regularisation cycles (d_reg_every steps: R1 and path-length steps included)
after a warm-up that compiles every graph. Columns: images/s, ms/step, peak memory, FLOPs per step
(counted with FlopCounterMode over one eager cycle: the same arithmetic for every trainer), achieved
TFLOP/s and its share of the bf16 matmul rate measured in the same run, and the first-step (compile) time.
`--second-process` also starts a fresh process for the fast rows and reports its first-step time, which
shows what the on-disk compile caches save.

e4e rows (`e4e train`): the encoder step (encoder forward, generator forward, L2 + LPIPS-shaped
perceptual + delta-reg + latent discriminator with R1 every 16 steps) eager vs compiled, at the FFHQ
config (IR-SE50 at 256 px, 1024 px generator, batch 8) and the avatar-128 config.
Weights and images are random: speed does not depend on their values.
"""
import argparse
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from bench import matmul_peak, sync  # noqa: E402

GAN_CONFIGS = {
    # the avatar-128 generator (issue #15's config)
    "avatar128": dict(size=128, style_dim=512, n_mlp=8, channel_multiplier=1, channel_max=256, batch=64),
    # the embedded emoji-64 generator's config (docs/model_card.md)
    "emoji64": dict(size=64, style_dim=128, n_mlp=4, channel_multiplier=1, channel_max=128, batch=64),
    "tiny": dict(size=16, style_dim=16, n_mlp=2, channel_multiplier=1, channel_max=8, batch=4),
}


def write_images(folder: Path, n: int, size: int) -> None:
    from e4e.imageio import to_pil
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for i in range(0, n, 64):
        for j, im in enumerate(to_pil(torch.rand(min(64, n - i), 3, size, size, generator=g) * 2 - 1)):
            im.save(folder / f"{i + j:06d}.png", compress_level=1)


def gan_config(name, data, out, device, impl, **kw):
    from e4e.train.stylegan import GANTrainConfig
    c = dict(GAN_CONFIGS[name])
    return GANTrainConfig(data=str(data), out=str(out), device=device, impl=impl, bf16=device != "cpu",
                          workers=8, **c, **kw)


def gan_flops_per_step(cfg) -> float:
    """FLOPs of one lazy-regularisation cycle of eager steps, divided by its length."""
    from torch.utils.flop_counter import FlopCounterMode

    from e4e.train.stylegan import GANTrainer
    tr = GANTrainer(dataclasses.replace(cfg, impl="reference", compile="off"), _info(cfg.device))
    real = torch.rand(cfg.batch, 3, cfg.size, cfg.size, device=cfg.device) * 2 - 1
    cycle = cfg.d_reg_every
    with FlopCounterMode(display=False) as fc:
        for _ in range(cycle):
            tr.step(real)
    return fc.get_total_flops() / cycle


def _info(device):
    from e4e.train import dist as D
    return D.DistInfo(device=torch.device(device))


def time_gan(cfg, warmup: int, steps: int) -> dict:
    """Steps of the new trainer (either impl) fed as train_gan feeds them; -> rates and memory."""
    from e4e.train.stylegan import GANTrainer, load_training_data, training_batches
    dev = torch.device(cfg.device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    images, plan = load_training_data(cfg, dev)
    tr = GANTrainer(cfg, _info(cfg.device))
    batches = training_batches(cfg, images, plan, 0, warmup + steps, tr.info)
    t = time.perf_counter()
    first = None
    for s, real in batches:
        if s == warmup:
            sync(dev)
            t = time.perf_counter()
        tr.step(real.to(dev, non_blocking=True))
        if s == 0:
            sync(dev)
            first = time.perf_counter() - t
    sync(dev)
    el = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated(dev) / 2 ** 30 if dev.type == "cuda" else float("nan")
    return dict(steps_per_s=steps / el, images_per_s=steps * cfg.batch / el, ms_per_step=1e3 * el / steps,
                peak_gib=peak, first_step_s=first)


def time_old_gan(path: Path, cfg, steps: int) -> dict:
    """The pre-round trainer file, run through its own train_gan; its rate from its log (steady state)."""
    spec = importlib.util.spec_from_file_location("e4e_old_stylegan", path)
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    ocfg = old.GANTrainConfig(**{k: v for k, v in cfg.__dict__.items() if k in old.GANTrainConfig.__dataclass_fields__})
    ocfg.steps, ocfg.log_every, ocfg.sample_every, ocfg.save_every = steps, cfg.d_reg_every, 10 ** 9, 10 ** 9
    dev = torch.device(cfg.device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    old.train_gan(ocfg)
    rows = [json.loads(x) for x in open(Path(ocfg.out) / "log.jsonl")]
    # each row's steps_per_s is cumulative since the start: recover times, rate over the later rows
    times = [r["step"] / r["steps_per_s"] for r in rows]
    a, b = len(rows) // 3, len(rows) - 1
    sps = (rows[b]["step"] - rows[a]["step"]) / (times[b] - times[a])
    peak = torch.cuda.max_memory_allocated(dev) / 2 ** 30 if dev.type == "cuda" else float("nan")
    # its log has no per-step time, so the first step's (compile-free) wait is not known: left empty
    return dict(steps_per_s=sps, images_per_s=sps * cfg.batch, ms_per_step=1e3 / sps, peak_gib=peak,
                first_step_s=None)


def e4e_rows(device, configs, steps, peak):
    """Encoder training step, eager vs compiled (the e4e trainer's fast path), per config."""
    from e4e.train.e4e_bench import time_e4e_step
    rows = []
    for name in configs:
        for compiled in (False, True):
            r = time_e4e_step(name, device, compiled=compiled, steps=steps)
            r.update(trainer="e4e", config=name, impl="fast" if compiled else "reference")
            if r.get("flops_per_step"):
                r["tflops"] = r["flops_per_step"] * r["steps_per_s"] / 1e12
                r["floor_share"] = r["flops_per_step"] * r["steps_per_s"] / peak
            rows.append(r)
            print(json.dumps(r), flush=True)
    return rows


def fmt(v, spec):
    return "" if v is None or v != v else format(v, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--configs", nargs="+", default=["avatar128", "emoji64"])
    ap.add_argument("--impls", nargs="+", default=["old", "reference", "fast"])
    ap.add_argument("--old-trainer", type=Path, help="the pre-round src/e4e/train/stylegan.py (for the old rows)")
    ap.add_argument("--warmup", type=int, default=32, help="steps before timing (compiles every graph)")
    ap.add_argument("--steps", type=int, default=64, help="timed steps (a multiple of d_reg_every)")
    ap.add_argument("--images", type=int, default=2048, help="random training images written per size")
    ap.add_argument("--e4e-configs", nargs="*", default=[], help="e4e trainer rows: ffhq avatar128")
    ap.add_argument("--second-process", action="store_true", help="fast rows: time a fresh process's first step")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: one fast row in this process, JSON to stdout
    args = ap.parse_args()
    dev = torch.device(args.device)
    if args.one:
        name, data, out = args.one.split(",")
        r = time_gan(gan_config(name, data, out, args.device, "fast"), warmup=1, steps=max(1, args.steps))
        print("ROW " + json.dumps(r))
        return
    peak = matmul_peak(dev, "bf16") if dev.type == "cuda" else matmul_peak(dev, "fp32")
    print(f"device {torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}, torch {torch.__version__}, "
          f"measured matmul peak {peak / 1e12:.0f} TFLOP/s ({'bf16' if dev.type == 'cuda' else 'fp32'})", flush=True)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="train_bench_"))
    for name in args.configs:
        c = GAN_CONFIGS[name]
        data = tmp / f"data{c['size']}"
        if not data.is_dir():
            write_images(data, max(args.images, 4 * c["batch"]), c["size"])
        flops = gan_flops_per_step(gan_config(name, data, tmp / "flops", args.device, "reference"))
        for impl in args.impls:
            out = tmp / f"{name}_{impl}"
            if impl == "old":
                if not args.old_trainer:
                    continue
                r = time_old_gan(args.old_trainer, gan_config(name, data, out, args.device, "reference"),
                                 args.warmup + args.steps)
            else:
                r = time_gan(gan_config(name, data, out, args.device, impl), args.warmup, args.steps)
            r.update(trainer="gan", config=name, impl=impl, batch=c["batch"], flops_per_step=flops,
                     tflops=flops * r["steps_per_s"] / 1e12, floor_share=flops * r["steps_per_s"] / peak)
            if impl == "fast" and args.second_process:
                cmd = [sys.executable, __file__, "--device", args.device, "--steps", "2",
                       "--one", f"{name},{data},{tmp / (name + '_second')}"]
                t = time.perf_counter()
                res = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
                line = [x for x in res.stdout.splitlines() if x.startswith("ROW ")]
                r["second_process_first_step_s"] = json.loads(line[-1][4:])["first_step_s"] if line else None
                r["second_process_wall_s"] = time.perf_counter() - t
            rows.append(r)
            print(json.dumps(r), flush=True)
    if args.e4e_configs:
        rows += e4e_rows(args.device, args.e4e_configs, args.steps, peak)
    print()
    print("| trainer | config | impl | batch | images/s | ms/step | peak GiB | GFLOP/step | TFLOP/s | share of peak "
          "| first step s | 2nd process first step s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['trainer']} | {r['config']} | {r['impl']} | {r.get('batch', '')} | {fmt(r['images_per_s'], '.1f')} "
              f"| {fmt(r['ms_per_step'], '.1f')} | {fmt(r['peak_gib'], '.1f')} "
              f"| {fmt((r.get('flops_per_step') or float('nan')) / 1e9, '.0f')} | {fmt(r.get('tflops'), '.1f')} "
              f"| {fmt(100 * r['floor_share'] if r.get('floor_share') else None, '.1f')}% "
              f"| {fmt(r.get('first_step_s'), '.1f')} | {fmt(r.get('second_process_first_step_s'), '.1f')} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
