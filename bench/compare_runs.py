"""Compare training runs' log.jsonl: loss curves against a reference run, and steady-state steps/s.

    python bench/compare_runs.py REF_DIR RUN_DIR NOISE_DIR [--every 30] [--skip 50]

REF and RUN share the global batch and seed (e.g. 1 GPU and 2 GPUs); NOISE differs only in the seed, so
|NOISE - REF| is the run-to-run noise that |RUN - REF| is judged against. Steps/s is measured between the
first logged step at or after --skip and the last one, so start-up and compilation are left out.
"""
import argparse
import json
from pathlib import Path


def read(run: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in open(run / "log.jsonl")]
    return {r["step"]: r for r in rows if "val" not in r}


def rate(rows: dict[int, dict], skip: int) -> float:
    steps = sorted(s for s in rows if s >= skip and "time_s" in rows[s])
    a, b = steps[0], steps[-1]
    return (b - a) / (rows[b]["time_s"] - rows[a]["time_s"])


def smooth(rows: dict[int, dict], key: str, steps: list[int], width: int) -> list[float]:
    vals = [rows[s][key] for s in steps]
    return [sum(vals[max(0, i - width + 1):i + 1]) / len(vals[max(0, i - width + 1):i + 1]) for i in range(len(vals))]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ref", type=Path)
    ap.add_argument("run", type=Path)
    ap.add_argument("noise", type=Path)
    ap.add_argument("--every", type=int, default=30, help="print a row every N steps")
    ap.add_argument("--skip", type=int, default=50, help="steps left out of the rate and the error means")
    ap.add_argument("--smooth", type=int, default=5, help="moving average over this many logged points")
    ap.add_argument("--gpus", type=int, default=2, help="GPUs of RUN, for the scaling efficiency")
    a = ap.parse_args(argv)
    ref, run, noise = read(a.ref), read(a.run), read(a.noise)
    steps = sorted(set(ref) & set(run) & set(noise))
    keys = [k for k in ("loss", "loss_l2", "loss_lpips", "offset_norm_mean") if k in ref[steps[0]]]
    print(f"| step | stage | " + " | ".join(f"{k} ({n})" for k in keys[:2] for n in ("ref", "run", "noise")) + " |")
    print("|---|---|" + "---|" * 6)
    for s in steps:
        if s % a.every == 0 or s == steps[-1]:
            cells = [f"{d[s][k]:.4f}" for k in keys[:2] for d in (ref, run, noise)]
            print(f"| {s} | {ref[s]['stage']} | " + " | ".join(cells) + " |")
    print()
    print("| quantity | mean abs(run − ref) / ref | mean abs(noise − ref) / ref | ratio |")
    print("|---|---|---|---|")
    for k in keys:
        sm = {n: dict(zip(steps, smooth(d, k, steps, a.smooth))) for n, d in (("ref", ref), ("run", run), ("noise", noise))}
        late = [s for s in steps if s >= a.skip and sm["ref"][s] != 0]  # offsets are all 0 before stage 1
        e_run = sum(abs(sm["run"][s] - sm["ref"][s]) / abs(sm["ref"][s]) for s in late) / len(late)
        e_noise = sum(abs(sm["noise"][s] - sm["ref"][s]) / abs(sm["ref"][s]) for s in late) / len(late)
        print(f"| {k} (moving avg of {a.smooth}) | {e_run:.4f} | {e_noise:.4f} | {e_run / max(e_noise, 1e-12):.2f} |")
    r_ref, r_run = rate(ref, a.skip), rate(run, a.skip)
    print()
    print(f"steps/s after step {a.skip}: ref {r_ref:.3f}, run {r_run:.3f}, noise {rate(noise, a.skip):.3f}; "
          f"speed-up {r_run / r_ref:.2f}x on {a.gpus} GPUs, scaling efficiency {r_run / (a.gpus * r_ref):.1%}")


if __name__ == "__main__":
    main()
