"""Pick the GAN trainer's ops for a time-limited run from an eager bench/train_profile.py run.

    python scripts/choose_gan_settings.py gan_profile.jsonl --minutes 12   # -> "reg_impl=fold compile=off"

In: the JSON rows of `train_profile.py --modes eager --gan-set ...` (one row per settings string, each
with its phases). Out (stdout): the settings to train with; the reasoning goes to stderr.

The lazy R1 and path-length steps run eager in every mode, so their phase times carry over; the main
steps either run eager (the profiled rows) or compiled, where they took COMPILED_MAIN_MS on the H200 after
a compile wait of about COMPILE_S (docs/benchmarks.md, "Where the trainers' time goes"). For a run of a
few minutes the wait decides: the choice is whichever shows more images in the time limit.
"""
import argparse
import json
import sys

COMPILED_MAIN_MS = 59.1  # D and G main steps + EMA, compiled, avatar128, H200 (docs/benchmarks.md)
COMPILE_S = 250.0  # the first compiled step's wait, cold caches (docs/training.md: ~290 s with the data)
REG_PHASES = ("D R1 (eager)", "G path length (eager)")


def reg_ms(row) -> float:
    return sum(row["phases"].get(k, {}).get("ms_per_step", 0.0) for k in REG_PHASES)


def choose(rows, minutes: float, data_s: float = 45.0) -> tuple[str, list[str]]:
    """-> (settings string, lines of reasoning). Compiled rows, where the profile has them (e.g. the
    default compile against compile_mode=reduce-overhead), give the compiled step time measured; else it is
    estimated from COMPILED_MAIN_MS and the eager rows' regularisers."""
    gan = [r for r in rows if r.get("trainer") == "gan"]
    measured = [r for r in gan if r.get("mode") == "compiled"]
    rows = [r for r in gan if r.get("mode") == "eager"]
    if not rows:
        return "", ["no eager GAN rows: default settings"]
    why = [f"{r['settings'] or 'defaults'}: {r['ms_per_step']:.1f} ms/step {r['mode']}, regularisers {reg_ms(r):.1f}"
           for r in rows + measured]
    run_s = max(minutes * 60 - data_s, 1.0)
    best_eager = min(rows, key=lambda r: r["ms_per_step"])
    if measured:
        best = min(measured, key=lambda r: r["ms_per_step"])
        compiled_settings, compiled_ms, how = best["settings"], best["ms_per_step"], "measured"
    else:  # the main steps as taps under torch.compile, the regularisers of the row without main_impl
        reg_rows = [r for r in rows if "main_impl" not in r["settings"]]
        best_reg = min(reg_rows or rows, key=reg_ms)
        compiled_settings, compiled_ms, how = best_reg["settings"], COMPILED_MAIN_MS + reg_ms(best_reg), "estimated"
    n_eager = run_s / best_eager["ms_per_step"] * 1e3
    n_compiled = max(run_s - COMPILE_S, 0.0) / compiled_ms * 1e3
    why.append(f"{minutes} min: eager {best_eager['settings'] or 'defaults'} -> {n_eager:.0f} steps; compiled "
               f"{compiled_settings or 'defaults'} ({how} {compiled_ms:.0f} ms/step after ~{COMPILE_S:.0f} s) -> "
               f"{n_compiled:.0f} steps")
    if n_compiled > n_eager:
        return compiled_settings, why
    return f"{best_eager['settings']} compile=off".strip(), why


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile", help="train_profile.py --json output")
    ap.add_argument("--minutes", type=float, required=True, help="the run's time limit")
    a = ap.parse_args()
    try:
        rows = [json.loads(line) for line in open(a.profile) if line.strip()]
    except (OSError, ValueError) as e:
        sys.exit(f"choose_gan_settings: cannot read {a.profile}: {e}")
    settings, why = choose(rows, a.minutes)
    print("\n".join(why), file=sys.stderr)
    print(settings)


if __name__ == "__main__":
    main()
