"""Where the GPU memory of one inversion call goes: peak per setting, and the blocks alive at the peak.

    python bench/memory_probe.py --json OUT.json > OUT.md

Why: issue #16's strict-fp32 row peaked at 36.1 GiB at batch 8 on an H200 (14.7 GiB at batch 16), while
the activations need about 5 GiB, and capping cuDNN's workspace did not change it. This probe runs the
FFHQ configuration (random weights: memory does not depend on them) image -> W+ -> 1024 image through
e4e.fast.prepare, once per setting, each in its own process (clean allocator and cuDNN plan caches), with
PyTorch's allocator history on. From the trace it replays allocations and frees, finds the peak and lists
the largest blocks alive there with the Python line that asked for them.

Settings (name: precision, batch, extra): see SETTINGS. Output: a markdown table (setting, peak
allocated GiB, the largest block) and, per setting, the top blocks at its peak.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (precision, batch, environment for the child)
SETTINGS = {
    "fp32 b8": ("fp32", 8, {}),
    "fp32 b8, cudnn.benchmark": ("fp32", 8, {"E4E_PROBE_BENCHMARK": "1"}),
    "fp32 b8, workspace cap 256 MiB": ("fp32", 8, {"CUDNN_CONV_WSCAP_DBG": "256"}),
    "fp32 b8, cuDNN off for transposed convs": ("fp32", 8, {"E4E_PROBE_NO_CUDNN_T": "1"}),
    "fp32 b8, cuDNN v7 API (its workspace cap applies)": ("fp32", 8, {"TORCH_CUDNN_V8_API_DISABLED": "1"}),
    "fp32 b8, memory fraction 0.15": ("fp32", 8, {"E4E_PROBE_FRACTION": "0.15"}),
    "fp32 b16": ("fp32", 16, {}),
    "tf32 b8 (no flags)": ("auto", 8, {}),
}


def peak_blocks(snapshot, top):
    """Replay the allocator trace: -> (peak bytes, [(bytes, where)] of the largest blocks alive at it)."""
    live, cur, peak, at_peak = {}, 0, 0, {}
    for dev_trace in snapshot["device_traces"]:
        for ev in dev_trace:
            if ev["action"] == "alloc":
                live[ev["addr"]] = ev
                cur += ev["size"]
                if cur > peak:
                    peak, at_peak = cur, dict(live)
            elif ev["action"] in ("free_completed",) and ev["addr"] in live:
                cur -= live.pop(ev["addr"])["size"]
    blocks = sorted(at_peak.values(), key=lambda e: -e["size"])[:top]
    return peak, [(e["size"], where(e.get("frames", []))) for e in blocks]


def where(frames):
    """The innermost frames of this package (or the first frames) as 'file:line fn' strings."""
    ours = [f for f in frames if "/e4e/" in f.get("filename", "") or "bench/" in f.get("filename", "")]
    pick = (ours or frames)[:3]
    return " < ".join(f"{Path(f['filename']).name}:{f['line']} {f['name']}" for f in pick) or "?"


def child(name, top):
    import torch
    sys.path.insert(0, str(HERE))
    from bench import CONFIGS
    from e4e.fast import prepare
    from e4e.inverter import build_inverter
    precision, batch, _ = SETTINGS[name]
    if os.environ.get("E4E_PROBE_BENCHMARK"):
        torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    if os.environ.get("E4E_PROBE_FRACTION"):  # a plan whose workspace does not fit is skipped by PyTorch
        torch.cuda.set_per_process_memory_fraction(float(os.environ["E4E_PROBE_FRACTION"]), dev)
    ecfg, gcfg, size = CONFIGS["ffhq"]
    torch.manual_seed(0)
    inv = build_inverter(ecfg, gcfg, latent_avg=torch.randn(1, gcfg.style_dim)).to(dev).eval()
    if os.environ.get("E4E_PROBE_NO_CUDNN_T"):
        import torch.nn.functional as F
        plain = F.conv_transpose2d

        def no_cudnn(*a, **k):
            with torch.backends.cudnn.flags(enabled=False):
                return plain(*a, **k)
        F.conv_transpose2d = no_cudnn
    x = torch.rand(batch, 3, size, size, device=dev) * 2 - 1
    run = prepare(inv, precision)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.memory._record_memory_history(stacks="python", max_entries=200_000)
    run(x)
    torch.cuda.synchronize()
    snap = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    peak, blocks = peak_blocks(snap, top)
    print(json.dumps({"setting": name, "max_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
                      "weights_gib": base / 2**30, "trace_peak_gib": peak / 2**30,
                      "blocks": [(b / 2**30, w) for b, w in blocks]}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.top)
    rows = []
    for name in args.settings:
        env = {**os.environ, **SETTINGS[name][2]}
        p = subprocess.run([sys.executable, __file__, "--child", name, "--top", str(args.top)], env=env,
                           capture_output=True, text=True, timeout=300)
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
        if p.returncode or not lines:
            rows.append({"setting": name, "error": (p.stderr.strip().splitlines() or ["?"])[-1]})
        else:
            rows.append(json.loads(lines[-1]))
    print("| setting | peak allocated GiB | weights GiB | largest block at the peak |")
    print("|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['setting']} | failed: {r['error']} | | |")
            continue
        big = r["blocks"][0] if r["blocks"] else (0, "")
        print(f"| {r['setting']} | {r['max_allocated_gib']:.2f} | {r['weights_gib']:.2f} | "
              f"{big[0]:.2f} GiB at {big[1]} |")
    for r in rows:
        if "error" not in r:
            print(f"\n{r['setting']}: blocks alive at the traced peak ({r['trace_peak_gib']:.2f} GiB)")
            for gib, w in r["blocks"]:
                print(f"- {gib:.3f} GiB  {w}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
