"""Regenerate what `e4e demo` (and `e4e serve`'s label sliders) ship: directions and held-out avatars.

    python scripts/make_demo_assets.py DATA            # DATA from `e4e data avatars DATA --size 128 --count 20000`
    python scripts/make_demo_assets.py DATA --device cuda --calib-samples 256 --full-curves   # on a GPU

In: an avatar dataset folder (labels.csv, pairs.csv, train/, test/, pairs/), the inverter (default: the
embedded model), the evaluation classifier (the judge, models/avatar/eval_convnet_B.safetensors: it
calibrates the strengths) and, for --kind ifg_samples or component, the similarity network
(models/avatar/sim_resnet_A.safetensors: it labels generator samples).
Out, under --out (default src/e4e/assets, beside the embedded model):
  directions.safetensors   e4e.benchmark's directions file: per (attribute, target) one direction of
                           --kind (default codes_wplus: the class-mean difference of the encoder's W+
                           codes of --codes labelled training avatars, style by style, one class gap long;
                           ifg_codes: InterFaceGAN's linear SVM on their mean over styles, a W direction
                           one W standard deviation long, which barely moves this model), with its
                           calibrated strength (info["strength"]: the strength at which the judge sees the
                           target on 90% of the images that lacked it, e4e.benchmark.calibrate: by default
                           the inversions of training avatars (--calib-on codes), the images a demo edit
                           starts from; DEFAULT_GAPS / DEFAULT_STRENGTH where it never does;
                           info["strength_rule"] says which),
                           plus the top SeFa direction ("sefa0", fixed strength: it has no label); the
                           file's info says how it was made and the sha256 of the model it was fitted to
  samples/NNNNNN.png       --sources held-out test avatars (never trained on), picked for variety
  samples/pairs/<attribute>/NNNNNN.png   their counterfactuals: the true result of each edit
  samples/labels.csv, samples/pairs.csv  their rows, in the dataset's format (a tiny dataset of its own,
                           read by e4e.benchmark.read_pairs)
The samples folder is replaced as a whole. Why a script: a new embedded model needs new directions (they
live in its W space); one command makes them and the demo warns when they belong to another model.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from e4e import benchmark as bm  # noqa: E402
from e4e.errors import E4EError  # noqa: E402

ASSETS = ROOT / "src" / "e4e" / "assets"
JUDGE = ROOT / "models" / "avatar" / "eval_convnet_B.safetensors"
LABELLER = ROOT / "models" / "avatar" / "sim_resnet_A.safetensors"
SEFA_STRENGTH = 1.0  # W standard deviations: the SeFa direction has no label to calibrate on (at 2 and 3,
# model version 4's negative side left the data: blobs in the demo's SeFa column; at 1 both sides stay avatars)
DEFAULT_STRENGTH = 3.0  # W standard deviations, where the judge never saw the target often enough
DEFAULT_GAPS = 2.0  # the same for codes_wplus, in class gaps (1 gap moves the mean code of one class onto
# the other's; edits of model version 4 at 3 gaps and more wrecked the image)
MAX_GAPS = 2.0  # the most a codes_wplus edit of the demo moves: twice the way from one class's mean to the
# other's. Model version 5's judge saw "hat" on 90 % of inversions only at 3.66 gaps, where the heads had
# become white blobs (it called blobs hats); at 2 gaps the hats were still drawn on faces
VARIETY = ("smile", "glasses", "facial_hair", "hat", "hair_colour", "skin_colour")
CODE_KINDS = ("ifg_codes", "codes_wplus")  # fitted on encoded training images with their true labels
HOW = {
    "ifg_codes": "InterFaceGAN: a linear SVM on the e4e encoder's codes (mean over styles) of {codes} labelled "
                 "training avatars, true labels from labels.csv (hair colour: one colour against the rest)",
    "ifg_samples": "InterFaceGAN: a linear SVM on {samples} generator W samples labelled by the similarity "
                   "network {labeller} (hair colour: one colour against the rest)",
    "codes_wplus": "the class-mean difference, style by style (a W+ direction), of the e4e encoder's codes of "
                   "{codes} labelled training avatars, true labels from labels.csv (hair colour: one colour "
                   "against the rest); strength in class gaps",
    "component": "the SeFa / GANSpace component whose W coordinate correlates best with the similarity "
                 "network's labels of {samples} generator samples",
}


def complete_sources(data: bm.PairSet) -> list[dict]:
    """Test rows that have every pair they can have: all five, or all but hair_colour under a hat."""
    have: dict[str, set] = {}
    for p in data.pairs:
        have.setdefault(p["source"], set()).add(p["attribute"])
    out = []
    for r in data.split("test"):
        need = {a for a in data.attributes if not (a == "hair_colour" and r.get("hat") == "1")}
        if need and need <= have.get(r["file"], set()):
            out.append(r)
    return out


def pick_sources(data: bm.PairSet, n: int) -> list[dict]:
    """n complete test sources for variety: greedily the one adding the most unseen (attribute, value)
    pairs of VARIETY (ties: file order); once nothing new is left, coverage starts again."""
    cands = complete_sources(data)
    if not cands:
        raise E4EError(f"{data.root}: no test avatar has all its pairs (a build made with --no-pairs?)")
    keys = [a for a in VARIETY if a in cands[0]]
    chosen, seen = [], set()
    while len(chosen) < n and cands:
        gain = [len({(a, r[a]) for a in keys} - seen) for r in cands]
        best = max(range(len(cands)), key=lambda i: (gain[i], -i))
        if gain[best] == 0:
            seen = set()
            continue
        r = cands.pop(best)
        chosen.append(r)
        seen |= {(a, r[a]) for a in keys}
    return sorted(chosen, key=lambda r: r["file"])


def default_strength(kind: str) -> float:
    """The strength a direction of this kind gets where calibration never reached the goal (its unit's)."""
    return DEFAULT_GAPS if kind == "codes_wplus" else DEFAULT_STRENGTH


def max_strength(kind: str) -> float | None:
    """The cap on a calibrated strength of this kind (MAX_GAPS for codes_wplus; none for W directions)."""
    return MAX_GAPS if kind == "codes_wplus" else None


def strength_of(d: bm.Direction, grid, goal: float = 0.9) -> tuple[float, str]:
    """The strength the demo uses, and why: s90 where the judge reached the goal, at most max_strength
    (past it the judge can be satisfied by a wrecked image); else the default of the direction's unit,
    DEFAULT_GAPS or DEFAULT_STRENGTH (a curve that never gets there says nothing reliable about where it
    would: its best point on a few dozen images is noise)."""
    default = default_strength(d.kind)
    cap = max_strength(d.kind)
    if d.s90 is not None and cap is not None and d.s90 > cap:
        return cap, f"s{goal * 100:.0f} {d.s90:.2f} above the cap: {cap:g}"
    if d.s90 is not None:
        return d.s90, f"s{goal * 100:.0f}"
    if not d.calibration:
        return default, "not calibrated: the default"
    k = max(range(len(d.calibration)), key=lambda i: (d.calibration[i], -i))
    return default, f"{goal:.0%} not reached (best {d.calibration[k]:.0%} at {grid[k]:g}): the default {default:g}"


def write_samples(data: bm.PairSet, sources: list[dict], folder: Path) -> int:
    """Copies the sources and their pairs (bytes unchanged) and writes their labels.csv / pairs.csv."""
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "pairs").mkdir(parents=True)
    clean = [c for c in ("seed", *_label_columns()) if c in data.labels[0]]
    names = {r["file"]: Path(r["file"]).name for r in sources}
    labels = []
    for r in sources:
        shutil.copyfile(data.root / r["file"], folder / names[r["file"]])
        labels.append({"file": names[r["file"]], "split": "test", **{c: r[c] for c in clean}})
    pairs = []
    for p in data.pairs:
        if p["source"] in names:
            dest = f"pairs/{p['attribute']}/{Path(p['file']).name}"
            (folder / dest).parent.mkdir(exist_ok=True)
            shutil.copyfile(data.root / p["file"], folder / dest)
            pairs.append({"file": dest, "source": names[p["source"]], "attribute": p["attribute"],
                          "target": p["target"], **{c: p[c] for c in clean if c in p}})
    for name, rows in (("labels.csv", labels), ("pairs.csv", pairs)):
        with open(folder / name, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return len(pairs)


def _label_columns():
    from e4e.data.avatars import LABEL_COLUMNS
    return LABEL_COLUMNS


def build(data_dir, out, inv, judge, labeller, opts: bm.DirectionOptions, n_sources: int = 6,
          files: dict | None = None, progress: bool = False, log=print) -> dict:
    """Fits, calibrates and writes directions.safetensors and samples/ under `out`; -> the file's info."""
    from e4e.evaluate import edit_directions, sample_w
    out = Path(out)
    data = bm.read_pairs(data_dir)
    kind = opts.kinds[0]
    targets = bm.targets_of(data.pairs)
    sources = pick_sources(data, n_sources)  # before the slow part: a dataset without pairs fails at once
    dirs, notes = bm.prepare_directions(data, targets, inv, judge, labeller, opts, progress)
    for d in dirs:
        d.info["strength"], d.info["strength_rule"] = strength_of(d, opts.calib_grid, opts.goal)
    g = inv.decoder
    sefa = edit_directions(g, sample_w(g, opts.samples, opts.seed), 1)
    dirs.append(bm.Direction("sefa", "sefa0", "+", sefa.directions[0],
                             {"strength": SEFA_STRENGTH, "strength_rule": "fixed (no label to calibrate on)",
                              "how": "the top SeFa eigenvector of every modulation layer, one W std long"}))
    files = files or {}
    cap = max_strength(kind)
    calibrated_on = bm.CALIBRATED_ON[opts.calib_on].format(n=opts.calib_samples, codes=opts.codes)
    info = {
        "made_by": "scripts/make_demo_assets.py",
        "kind": kind,
        "how": HOW[kind].format(codes=opts.codes, samples=opts.samples, labeller=files.get("labeller")),
        "strength": f"the smallest strength at which the evaluation classifier {files.get('judge')} sees the "
                    f"target on {opts.goal:.0%} of {calibrated_on} that lacked it "
                    f"(grid {', '.join(f'{s:g}' for s in opts.calib_grid)}, linear interpolation; "
                    f"test pairs never used), else {default_strength(kind):g}"
                    + ("" if cap is None else f"; at most {cap:g}") + "; "
                    "per direction in info['strength'] and info['strength_rule']",
        "model": files.get("model"), "model_sha256": files.get("model_sha256"),
        "judge": files.get("judge"), "labeller": files.get("labeller") if kind not in CODE_KINDS else None,
        "dataset": _dataset_info(data.root), "options": asdict(opts),
        "sources": [Path(r["file"]).name for r in sources],
    }
    out.mkdir(parents=True, exist_ok=True)
    for d in dirs:  # fp16 storage: half the bytes, 1e-3 relative precision (users cast to their codes' dtype)
        d.vector = d.vector.half()
    bm.save_directions(out / "directions.safetensors", dirs, notes, info)
    n_pairs = write_samples(data, sources, out / "samples")
    for d in dirs:
        log(f"  {d.kind} {d.attribute}={d.target}: strength {d.info['strength']:.2f} ({d.info['strength_rule']})")
    for n in notes:
        log(f"  note: {n}")
    log(f"wrote {out / 'directions.safetensors'} ({len(dirs)} directions) and {out / 'samples'} "
        f"({len(sources)} held-out avatars, {n_pairs} pairs)")
    return info


def _dataset_info(root: Path) -> dict:
    """The dataset's settings from its info.json (count, seed, size, package versions), where it has one."""
    try:
        info = json.loads((root / "info.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: info[k] for k in ("count", "seed", "size", "packages", "format") if k in info}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="avatar dataset folder (e4e data avatars DIR --size 128)")
    ap.add_argument("--out", type=Path, default=ASSETS, help="where directions.safetensors and samples/ go")
    ap.add_argument("--checkpoint", help="inverter (default: the embedded model)")
    ap.add_argument("--classifier", type=Path, default=JUDGE, help="evaluation classifier (calibrates strengths)")
    ap.add_argument("--labeller", type=Path, default=LABELLER, help="similarity net (ifg_samples / component)")
    ap.add_argument("--kind", default="codes_wplus", choices=bm.KINDS, help="how directions are fitted")
    ap.add_argument("--sources", type=int, default=6, help="held-out avatars to ship (default 6)")
    ap.add_argument("--codes", type=int, default=2000, help="training avatars encoded (ifg_codes, codes_wplus)")
    ap.add_argument("--samples", type=int, default=10000, help="W samples (ifg_samples labels, W std scale)")
    ap.add_argument("--calib-on", default="codes", choices=bm.CALIB_ON,
                    help="calibrate strengths on the inversions of training avatars (codes, default: what the "
                         "demo edits) or on generator samples (issue #18's protocol)")
    ap.add_argument("--calib-samples", type=int, default=64, help="images calibrating each strength")
    ap.add_argument("--calib-grid", default="0.5,1,1.5,2,3,4,6",
                    help="strengths tried (W standard deviations; class gaps for codes_wplus)")
    ap.add_argument("--full-curves", action="store_true", help="every grid strength, not only up to 90%%")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        import torch

        from e4e.api import checkpoint_path, load
        from e4e.checkpoints.attributes import load_attribute_net
        from e4e.latents import checkpoint_sha256
        if a.threads:
            torch.set_num_threads(a.threads)
        if a.sources < 1:
            raise E4EError("--sources must be at least 1")
        try:
            grid = tuple(sorted(float(s) for s in a.calib_grid.split(",")))
        except ValueError:
            raise E4EError(f"--calib-grid: expected comma-separated numbers, got {a.calib_grid!r}") from None
        for path in (a.classifier, *([a.labeller] if a.kind not in CODE_KINDS else [])):
            if not path.is_file():
                raise E4EError(f"{path}: no such attribute network file")
        model = checkpoint_path(a.checkpoint)
        inv = load(model, device=a.device)
        judge = load_attribute_net(a.classifier).to(a.device).eval()
        labeller = load_attribute_net(a.labeller).to(a.device).eval() if a.kind not in CODE_KINDS else None
        opts = bm.DirectionOptions(samples=a.samples, codes=a.codes, calib_samples=a.calib_samples, calib_grid=grid,
                                   batch_size=a.batch_size, seed=a.seed, kinds=(a.kind,),
                                   stop_at_goal=not a.full_curves, calib_on=a.calib_on)
        files = {"model": model.name, "model_sha256": checkpoint_sha256(model), "judge": a.classifier.name,
                 "labeller": a.labeller.name}
        torch.manual_seed(a.seed)
        build(a.data, a.out, inv, judge, labeller, opts, a.sources, files, progress=True)
    except E4EError as e:
        print(f"make_demo_assets: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
