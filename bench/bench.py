"""Inversion and training throughput against the hardware floor. Prints one Markdown table.

    python bench/bench.py --device cuda                     # full matrix on a GPU
    python bench/bench.py --device cpu --configs small --batches 1 8 --precisions fp32

Rows: config x task (encode 256->W+, generate W+->image, both) x batch x precision x mode (eager /
torch.compile). Columns: images/s, ms/image, peak memory, FLOPs/image (counted with torch's
FlopCounterMode on one forward), achieved TFLOP/s and its ratio to the measured matmul peak of the same
device and precision in the same run, and the max relative error of the output against fp32 eager.
Weights are random: speed does not depend on their values (timed on random data, never zeros).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from e4e.inverter import build_inverter  # noqa: E402
from e4e.nets.encoders import EncoderConfig  # noqa: E402
from e4e.nets.stylegan2 import GeneratorConfig  # noqa: E402

CONFIGS = {
    # the official FFHQ model: IR-SE50 e4e encoder, 1024px config-f generator, 18 styles
    "ffhq": (EncoderConfig(kind="e4e", num_layers=50, mode="ir_se", stylegan_size=1024),
             GeneratorConfig(size=1024, channel_multiplier=2), 256),
    # the embedded emoji model (docs/model_card.md)
    "small": (EncoderConfig(kind="e4e", mode="ir_se", stylegan_size=64, style_dim=128, widths=(32, 48, 64, 128),
                            units=(2, 2, 3, 2), input_size=64),
              GeneratorConfig(size=64, style_dim=128, n_mlp=4, channel_multiplier=1, channel_max=128), 64),
}


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_fn(fn, dev, warmup=2, reps=5, budget_s=20.0):
    for _ in range(warmup):
        fn()
    sync(dev)
    times = []
    t_end = time.perf_counter() + budget_s
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync(dev)
        times.append(time.perf_counter() - t)
        if time.perf_counter() > t_end:
            break
    times.sort()
    return times[len(times) // 2]


def matmul_peak(dev, precision):
    """Measured dense matmul rate (FLOP/s) of this device at this precision: the floor's denominator."""
    n = 8192 if dev.type == "cuda" else 1024
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    t = time_fn(lambda: a @ b, dev, warmup=3, reps=10)
    return 2 * n ** 3 / t


def count_flops(fn):
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def set_precision(precision):
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def profile(fn, dev, label, top=18):
    """Top kernels by device time over 3 calls: where the time goes, for the next optimisation."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with torch_profile(activities=acts) as prof:
        for _ in range(3):
            fn()
        sync(dev)
    sort = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
    print(f"profile {label} (3 calls):")
    print(prof.key_averages().table(sort_by=sort, row_limit=top, max_name_column_width=70), flush=True)


def run_case(inv, task, x, codes, dev, precision, compiled, compile_mode="default"):
    def fwd():
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            if task == "encode":
                return inv.encode(x)
            if task == "generate":
                return inv.decode(codes, resize=False)
            return inv(x, resize=False)[0]
    return torch.compile(fwd, mode=compile_mode) if compiled else fwd


def train_steps_per_s(cfg_name, dev, batch=8, steps=6):
    """One encoder training step (L2 + delta reg, frozen generator) at the given config, steps/s."""
    ecfg, gcfg, size = CONFIGS[cfg_name]
    inv = build_inverter(ecfg, gcfg, latent_avg=torch.zeros(1, gcfg.style_dim)).to(dev)
    if dev.type == "cuda":
        inv.decoder.use_grouped_conv(False)
    inv.decoder.requires_grad_(False)
    opt = torch.optim.Adam(inv.encoder.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, size, size, device=dev) * 2 - 1

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            y, codes = inv(x, resize=True, randomize_noise=True)
            loss = torch.nn.functional.mse_loss(y.float(), torch.nn.functional.interpolate(x, size=y.shape[-2:]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return 1.0 / time_fn(step, dev, warmup=2, reps=steps)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--configs", nargs="+", default=["ffhq", "small"])
    ap.add_argument("--tasks", nargs="+", default=["encode", "generate", "both"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8, 64])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "tf32", "bf16"])
    ap.add_argument("--compile", nargs="*", default=[],
                    help="config:task:precision:batch[@mode] entries to also run under torch.compile")
    ap.add_argument("--compile-mode", default="default", help="torch.compile mode for entries without @mode")
    ap.add_argument("--channels-last", nargs="*", default=[],
                    help="config:task:precision:batch entries to also run with an NHWC generator")
    ap.add_argument("--profile", nargs="*", default=[],
                    help="config:task:precision:batch[:mode] entries to profile: prints the top CUDA kernels")
    ap.add_argument("--train", action="store_true", help="also time training steps at batch 8 (ffhq config)")
    ap.add_argument("--json", help="write all rows here")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--cudnn-benchmark", action="store_true",
                    help="let cuDNN time its convolution algorithms for each shape (fixed shapes only)")
    ap.add_argument("--budget-s", type=float, default=1e9, help="skip the remaining cases after this many seconds")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    dev = torch.device(args.device)
    torch.manual_seed(0)
    peaks = {p: matmul_peak(dev, p) for p in args.precisions if not (dev.type == "cpu" and p == "tf32")}
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; measured matmul peak: "
          + ", ".join(f"{p} {v / 1e12:.1f} TFLOP/s" for p, v in peaks.items()))
    rows = []
    t_start = time.perf_counter()
    for cname in args.configs:
        ecfg, gcfg, size = CONFIGS[cname]
        inv = build_inverter(ecfg, gcfg, latent_avg=torch.randn(1, gcfg.style_dim)).to(dev).eval()
        if dev.type == "cuda":
            inv.encoder.to(memory_format=torch.channels_last)  # NHWC feeds the tensor cores without transposes
        for batch in args.batches:
            x = (torch.rand(batch, 3, size, size, device=dev) * 2 - 1)
            with torch.no_grad():
                codes = inv.encode(x)
            for task in args.tasks:
                ref = None
                flops = None
                for precision in args.precisions:
                    if precision not in peaks:
                        continue
                    key = f"{cname}:{task}:{precision}:{batch}"
                    # "KEY@MODE" compiles KEY with that torch.compile mode, e.g. @reduce-overhead (CUDA graphs)
                    compile_modes = [e.partition("@")[2] or args.compile_mode for e in args.compile
                                     if e.partition("@")[0] == key]
                    modes = ["eager"] + (["eager-nhwc"] if key in args.channels_last else []) + \
                        [f"compile:{m}" for m in compile_modes]
                    for mode in modes:
                        compiled = mode.startswith("compile")
                        if time.perf_counter() - t_start > args.budget_s:
                            continue
                        grouped = dev.type == "cpu" or batch == 1
                        # compiled: the FIR as fusable taps (what e4e.fast gives torch.compile)
                        inv.decoder.configure(grouped=grouped, channels_last=mode == "eager-nhwc",
                                              impl="taps" if compiled else "ref")
                        set_precision(precision)
                        if compiled:
                            torch._dynamo.reset()
                        fn = run_case(inv, task, x, codes, dev, precision, compiled, mode.partition(":")[2])
                        if dev.type == "cuda":
                            torch.cuda.reset_peak_memory_stats(dev)
                        try:
                            t0 = time.perf_counter()
                            fn()
                            sync(dev)
                            first = time.perf_counter() - t0
                            t = time_fn(fn, dev, warmup=2)
                        except torch.OutOfMemoryError:
                            print(f"OOM: {key}")
                            continue
                        if key in args.profile or f"{key}:{mode}" in args.profile:
                            profile(fn, dev, f"{key}:{mode}")
                        out = fn().float()
                        if ref is None:
                            set_precision("fp32")
                            ref = run_case(inv, task, x, codes, dev, "fp32", False)().float()
                            flops = count_flops(run_case(inv, task, x, codes, dev, "fp32", False)) / batch
                        err = float((out - ref).abs().max() / ref.abs().max())
                        mem = torch.cuda.max_memory_allocated(dev) / 2 ** 30 if dev.type == "cuda" else float("nan")
                        tflops = flops * batch / t / 1e12
                        rows.append(dict(config=cname, task=task, batch=batch, precision=precision,
                                         mode=mode, first_call_s=first,
                                         modconv="grouped" if grouped else "shared", img_s=batch / t,
                                         ms_img=1000 * t / batch, peak_gib=mem, gflop_img=flops / 1e9,
                                         tflop_s=tflops, floor_ratio=tflops * 1e12 / peaks[precision], max_rel_err=err))
                        print(json.dumps(rows[-1]), flush=True)
                        if args.json:  # kept up to date: a run cut short still leaves its rows
                            Path(args.json).write_text(json.dumps({"device": name, "torch": torch.__version__,
                                                                   "peaks": peaks, "rows": rows}, indent=1))
    if args.train and time.perf_counter() - t_start < args.budget_s:
        sps = train_steps_per_s("ffhq", dev)
        rows.append(dict(config="ffhq", task="train step", batch=8, precision="bf16" if dev.type == "cuda" else "fp32",
                         mode="eager", steps_s=sps))
    print()
    print("| config | task | batch | precision | mode | modconv | images/s | ms/image | peak GiB | GFLOP/image "
          "| TFLOP/s | of matmul peak | max rel err vs fp32 | first call s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "steps_s" in r:
            print(f"| {r['config']} | train step (L2, frozen G) | {r['batch']} | {r['precision']} | eager | | "
                  f"{r['steps_s']:.2f} steps/s | | | | | | | |")
            continue
        print(f"| {r['config']} | {r['task']} | {r['batch']} | {r['precision']} | {r['mode']} | {r['modconv']} | "
              f"{r['img_s']:.1f} | {r['ms_img']:.2f} | {r['peak_gib']:.2f} | {r['gflop_img']:.1f} | "
              f"{r['tflop_s']:.2f} | {100 * r['floor_ratio']:.1f}% | {r['max_rel_err']:.1e} | {r['first_call_s']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "torch": torch.__version__,
                                               "peaks": peaks, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
