"""Throughput of `e4e data avatars`, and the label rates of the curated distribution.

    python bench/avatars.py --count 3000 --size 128 --workers 2          # one Markdown row
    python bench/avatars.py --rates 60000                                # label rates, no rasterising

A row times the whole build (worker start-up, rendering, PNG writing, the pairs of the test split,
labels.csv) into a fresh temporary folder (or --out DIR, which must not exist), and prints
images/s = dataset images / wall seconds, renders/s counting the pair images too, and the CPU time per
render (this process and its workers: the number that does not depend on how busy a shared machine is). --json PATH also
writes the row as JSON. --rates resolves seeds '0-<i>' without drawing them (dicebear only).
"""
import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from e4e.data import avatars  # noqa: E402


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the workers)."""
    return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for f in ("ru_utime", "ru_stime"))


def bench(count: int, size: int, workers: int, out: Path | None, pairs: bool) -> dict:
    tmp = None
    if out is None:
        tmp = Path(tempfile.mkdtemp(prefix="e4e-avatars-bench-"))
        out = tmp / "ds"
    elif out.exists():
        raise SystemExit(f"{out} exists: give a new folder")
    try:
        start, cpu0 = time.perf_counter(), cpu_seconds()
        stats = avatars.build_avatars(out, size=size, count=count, workers=workers, pairs=pairs, progress=False)
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    n_pairs = sum(stats["pairs"].values()) if pairs else 0
    return {"count": count, "size": size, "workers": workers, "pairs": n_pairs, "seconds": round(seconds, 2),
            "images_per_s": round(count / seconds, 1), "renders_per_s": round((count + n_pairs) / seconds, 1),
            "cpu_ms_per_render": round(1000 * cpu / (count + n_pairs), 2), "load_average": os.getloadavg()[0],
            "cpus": os.cpu_count(), "python": platform.python_version(), "packages": avatars.versions()}


def rates(n: int) -> dict:
    rows = [avatars.clean_labels(avatars.resolve(avatars.seed_of(0, i))[1]) for i in range(n)]
    return {"seeds": n, **avatars._rates(rows),
            "mouth": {m: round(sum(r["mouth"] == m for r in rows) / n, 4)
                      for m in (*avatars.SMILE_MOUTHS, *avatars.OTHER_MOUTHS)}}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=3000)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--no-pairs", action="store_true")
    p.add_argument("--out", type=Path, help="build here and keep it (default: a temporary folder, removed)")
    p.add_argument("--rates", type=int, metavar="N", help="label rates over N seeds instead of a timing")
    p.add_argument("--json", type=Path, help="also write the result here")
    a = p.parse_args()
    if a.rates:
        result = rates(a.rates)
        print(json.dumps(result, indent=2))
    else:
        result = bench(a.count, a.size, a.workers, a.out, not a.no_pairs)
        print("| count | size | workers | CPUs | load avg | pairs | seconds | images/s | renders/s | CPU ms/render |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        print("| {count} | {size} | {workers} | {cpus} | {load_average:.1f} | {pairs} | {seconds} | {images_per_s} | "
              "{renders_per_s} | {cpu_ms_per_render} |".format(**result))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
