"""Where the trainers' time goes: each step split into its phases, and the GPU's kernels into classes.

    python bench/train_profile.py --json profile.json                         # GPU: the rows below
    python bench/train_profile.py --device cpu --gan-configs tiny --e4e-configs tiny --cycles 1  # smoke

For each (trainer, config, mode) it warms up (compiling every graph), then
1. times `--cycles` whole lazy-regularisation cycles with the trainer's own phase marks
   (`e4e.train.phases.PhaseClock`: CUDA events, no host sync inside a step) -> ms per step per phase;
2. records one more cycle under torch.profiler -> device time per kernel class (convolution, matmul,
   inductor's Triton kernels, eager elementwise, reductions, optimizer, copies), kernels per step, the
   mean kernel length, and the share of the wall time the GPU was busy (the union of kernel intervals):
   a low busy share means the step waits on the host (launches, Python), not on arithmetic.

Modes: `eager` (impl=fast with compile off) and `compiled` (impl=fast, the CUDA default). GAN configs
are bench/train_bench.py's (avatar128: issue #15's), e4e configs too (ffhq: the official recipe). Weights
and images are random: speed does not depend on their values.
"""
import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from bench import sync  # noqa: E402
from train_bench import (E4E_CONFIGS, GAN_CONFIGS, _free, _info, e4e_config, e4e_trainer, e4e_world,  # noqa: E402
                         gan_config, write_images)

# (class, substrings of the kernel name), first match wins: inductor names its kernels after the ops they
# fuse ("triton_poi_fused_add_convolution_mul_0"), so Triton comes before convolution
KERNEL_CLASSES = (
    ("Triton (inductor-fused)", ("triton",)),
    ("convolution (cuDNN, depthwise)", ("fprop", "dgrad", "wgrad", "conv", "cudnn", "implicit", "winograd")),
    ("matmul (cuBLAS/CUTLASS)", ("gemm", "nvjet", "cutlass", "cublas", "splitk")),
    ("optimizer (fused/foreach)", ("multi_tensor", "fused_adam", "adam", "foreach")),
    ("reduction", ("reduce", "norm", "softmax")),
    ("elementwise (eager ATen)", ("elementwise", "vectorized", "unrolled", "index", "cat", "copy", "fill")),
    ("memcpy / memset", ("memcpy", "memset")),
)


TOP = 15  # kernels listed by name


def kernel_class(name: str) -> str:
    low = name.lower()
    for cls, keys in KERNEL_CLASSES:
        if any(k in low for k in keys):
            return cls
    return "other"


def busy_time(intervals) -> float:
    """Length of the union of (start, end) intervals."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if a > end:
            total, end = total + b - a, b
        elif b > end:
            total, end = total + b - end, b
    return total


def kernel_table(prof, steps: int, wall_s: float) -> dict:
    """Device kernels of a torch.profiler run over `steps` steps -> per-class ms/step, counts, busy share."""
    from torch.autograd import DeviceType
    per: dict[str, list] = {}
    names: dict[str, list] = {}
    spans = []
    for e in prof.events():
        if e.device_type != DeviceType.CUDA or getattr(e, "is_user_annotation", False):
            continue  # kernels only: record_function ranges show up on the device timeline too
        a, b = e.time_range.start, e.time_range.end
        spans.append((a, b))
        c = per.setdefault(kernel_class(e.name), [0.0, 0])
        c[0] += (b - a) / 1e3
        c[1] += 1
        t = names.setdefault(e.name, [0.0, 0])
        t[0] += (b - a) / 1e3
        t[1] += 1
    total_ms = sum(v[0] for v in per.values())
    classes = {k: dict(ms_per_step=v[0] / steps, share=v[0] / total_ms if total_ms else 0.0,
                       kernels_per_step=v[1] / steps, mean_us=1e3 * v[0] / v[1])
               for k, v in sorted(per.items(), key=lambda kv: -kv[1][0])}
    n = sum(v[1] for v in per.values())
    top = [dict(name=k[:120], kernel_class=kernel_class(k), ms_per_step=v[0] / steps, kernels_per_step=v[1] / steps)
           for k, v in sorted(names.items(), key=lambda kv: -kv[1][0])[:TOP]]
    return dict(classes=classes, top=top, kernels_per_step=n / steps, kernel_ms_per_step=total_ms / steps,
                busy_share=(busy_time(spans) / 1e3) / (1e3 * wall_s) if spans else None,
                mean_kernel_us=1e3 * total_ms / n if n else None)


def profile_steps(run_step, n_warm: int, cycle: int, cycles: int, clock_holder, dev, trace: Path | None):
    """run_step(i) runs step i. -> dict(phases, wall ms/step, kernels)."""
    from e4e.train.phases import NO_PHASES, PhaseClock
    i = 0
    t = time.perf_counter()
    for _ in range(n_warm):
        run_step(i)
        i += 1
    sync(dev)
    warm_s = time.perf_counter() - t
    clock = PhaseClock(dev)
    clock_holder.clock = clock
    n = cycle * cycles
    t = time.perf_counter()
    for _ in range(n):
        run_step(i)
        i += 1
    sync(dev)
    wall = time.perf_counter() - t
    totals = clock.totals()
    clock_holder.clock = NO_PHASES
    phases = {k: dict(ms_per_step=1e3 * v / n, share=v / sum(totals.values())) for k, v in totals.items()}
    out = dict(warmup_s=warm_s, ms_per_step=1e3 * wall / n, phases=phases, phase_ms_sum=1e3 * sum(totals.values()) / n)
    if dev.type == "cuda":
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            t = time.perf_counter()
            for _ in range(cycle):
                run_step(i)
                i += 1
            sync(dev)
            pwall = time.perf_counter() - t
        out["kernels"] = kernel_table(prof, cycle, pwall)
        out["profiled_ms_per_step"] = 1e3 * pwall / cycle
        if trace:
            prof.export_chrome_trace(str(trace))
    return out


def parse_settings(text: str, config=None) -> dict:
    """'channels_last=true reg_bf16=true' -> fields of `config` (GANTrainConfig by default), typed as the
    field's default."""
    if config is None:
        from e4e.train.stylegan import GANTrainConfig as config
    fields = {f.name: f for f in dataclasses.fields(config)}
    out = {}
    for item in text.split():
        k, _, v = item.partition("=")
        if k not in fields:
            sys.exit(f"train_profile: unknown {config.__name__} setting {k!r}")
        kind = type(fields[k].default)
        out[k] = v.lower() in ("1", "true", "yes", "on") if kind is bool else kind(v)
    return out


def gan_profile(name, mode, device, root: Path, cycles: int, warmup: int, trace_dir, settings: str = ""):
    from e4e.train.stylegan import GANTrainer, load_training_data
    dev = torch.device(device)
    data = root / f"gan_{GAN_CONFIGS[name]['size']}"
    if not data.is_dir():
        write_images(data, 512, GAN_CONFIGS[name]["size"])
    cfg = gan_config(name, data, root / f"gan_{name}_{mode}", device, "fast", compile="off" if mode == "eager" else "on",
                     **parse_settings(settings))
    torch._dynamo.reset()
    _free(dev)
    images, plan = load_training_data(cfg, dev)
    tr = GANTrainer(cfg, _info(device))
    cycle = cfg.d_reg_every
    trace = Path(trace_dir) / f"gan_{name}_{mode}.json" if trace_dir else None

    def run_step(i):
        tr.step(images.batch(plan, i, 0, 1))

    r = profile_steps(run_step, warmup, cycle, cycles, tr, dev, trace)
    r.update(trainer="gan", config=name, mode=mode, batch=cfg.batch, settings=settings)
    r["images_per_s"] = 1e3 * cfg.batch / r["ms_per_step"]
    del tr, images
    _free(dev)
    return r


def e4e_profile(name, mode, device, root: Path, cycles: int, warmup: int, trace_dir, settings: str = ""):
    from e4e.train.e4e import E4ETrainConfig
    dev = torch.device(device)
    kw = {**e4e_world(name, root), **parse_settings(settings, E4ETrainConfig)}
    cycle = kw.get("d_reg_every", 16)
    total = warmup + cycle * (cycles + 1)
    cfg = e4e_config(kw, device, root / f"e4e_{name}_{mode}", "fast", device != "cpu",
                     "off" if mode == "eager" else "on", max_steps=total)
    torch._dynamo.reset()
    _free(dev)
    tr = e4e_trainer(cfg)
    batches = tr.batches(0, total)
    trace = Path(trace_dir) / f"e4e_{name}_{mode}.json" if trace_dir else None

    def run_step(i):
        step, x = next(batches)
        tr.train_step(step, x)

    r = profile_steps(run_step, warmup, cycle, cycles, tr, dev, trace)
    r.update(trainer="e4e", config=name, mode=mode, batch=cfg.batch_size, settings=settings)
    r["images_per_s"] = 1e3 * cfg.batch_size / r["ms_per_step"]
    del tr, batches
    _free(dev)
    return r


def print_row(r):
    print(f"\n### {r['trainer']} {r['config']} {r['mode']} {r.get('settings', '')}: {r['ms_per_step']:.1f} ms/step = "
          f"{r['images_per_s']:.1f} images/s (batch {r['batch']}; warm-up {r['warmup_s']:.0f} s)")
    print("\n| phase | ms/step | share |\n|---|---|---|")
    for k, v in r["phases"].items():
        print(f"| {k} | {v['ms_per_step']:.2f} | {100 * v['share']:.1f} % |")
    k = r.get("kernels")
    if k:
        print(f"\nkernels: {k['kernels_per_step']:.0f} per step, mean {k['mean_kernel_us']:.1f} us, "
              f"{k['kernel_ms_per_step']:.1f} ms of kernels per step against {r['profiled_ms_per_step']:.1f} ms "
              f"of wall (profiled), GPU busy {100 * k['busy_share']:.0f} % of the wall")
        print("\n| kernel class | ms/step | share of kernel time | kernels/step | mean us |\n|---|---|---|---|---|")
        for c, v in k["classes"].items():
            print(f"| {c} | {v['ms_per_step']:.2f} | {100 * v['share']:.1f} % | {v['kernels_per_step']:.0f} | "
                  f"{v['mean_us']:.1f} |")
        print("\n| top kernels | class | ms/step | kernels/step |\n|---|---|---|---|")
        for v in k["top"]:
            print(f"| `{v['name'][:90]}` | {v['kernel_class']} | {v['ms_per_step']:.2f} | {v['kernels_per_step']:.1f} |")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--gan-configs", nargs="*", default=["avatar128"], choices=list(GAN_CONFIGS))
    ap.add_argument("--e4e-configs", nargs="*", default=["ffhq"], choices=list(E4E_CONFIGS))
    ap.add_argument("--modes", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"])
    ap.add_argument("--e4e-modes", nargs="+", choices=["eager", "compiled"], help="e4e rows (default: --modes)")
    ap.add_argument("--gan-set", nargs="+", default=[""], metavar="SETTINGS",
                    help="GAN variants, each a quoted list of KEY=VALUE GANTrainConfig settings ('' = defaults)")
    ap.add_argument("--e4e-set", nargs="+", default=[""], metavar="SETTINGS",
                    help="e4e variants, each a quoted list of KEY=VALUE E4ETrainConfig settings, e.g. "
                         "'compile_mode=reduce-overhead' ('' = defaults)")
    ap.add_argument("--cycles", type=int, default=2, help="timed lazy-regularisation cycles (16 steps each)")
    ap.add_argument("--warmup", type=int, default=18, help="steps before timing (compiles every graph)")
    ap.add_argument("--root", help="folder for the random weights and images (default: a temporary one)")
    ap.add_argument("--trace-dir", help="write a Chrome trace of each profiled cycle here")
    ap.add_argument("--json", help="append the rows here (one JSON object per line)")
    a = ap.parse_args()
    if a.cycles < 1 or a.warmup < 1:
        sys.exit("train_profile: --cycles and --warmup must be >= 1")
    root = Path(a.root) if a.root else Path(tempfile.mkdtemp(prefix="train_profile_"))
    root.mkdir(parents=True, exist_ok=True)
    if a.trace_dir:
        Path(a.trace_dir).mkdir(parents=True, exist_ok=True)
    if torch.cuda.is_available():
        print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}")
    jobs = [(gan_profile, c, m, v) for c in a.gan_configs for m in a.modes for v in a.gan_set]
    jobs += [(e4e_profile, c, m, v) for c in a.e4e_configs for m in (a.e4e_modes or a.modes) for v in a.e4e_set]
    for fn, c, m, v in jobs:
        r = fn(c, m, a.device, root, a.cycles, a.warmup, a.trace_dir, v)
        print_row(r)
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
