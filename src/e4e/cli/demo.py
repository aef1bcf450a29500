"""e4e demo: the main job on the embedded default model, checked against the true result of each edit.

In: the embedded inverter (or --checkpoint); the held-out test avatars shipped in e4e/assets/samples
with their counterfactual pairs (the same avatar with exactly one attribute switched: the rendered truth
of an edit; any avatar dataset folder works too, --samples DIR); the directions shipped in
e4e/assets/directions.safetensors (fitted to this model and calibrated by scripts/make_demo_assets.py;
the file's info says how: by default the class-mean difference of the encoder's W+ codes of labelled
training avatars, each strength the one at which the evaluation classifier sees the target on 90% of
the inversions of other training avatars);
and the evaluation classifier, models/avatar/eval_convnet_B.safetensors in a source checkout (--classifier).
Out, under -o: demo.png, one row per avatar: input | e4e inversion | for smile, glasses, facial hair,
hat and hair colour the edited inversion beside the truth | SeFa direction 0 at -/+ its strength (no
label, no truth). A dark grey cell: no such pair (hair colour under a hat), or no direction for its
target. columns.txt (the column names, one per line, as in the grid's header) and edits.csv (one row
per edit). Printed: the reconstruction MSE and, for each edit, its MSE to the truth (beside the
unedited inversion's MSE to the truth) and whether the evaluation classifier sees the target value.
Why: an edit of a real image can be scored only by proxies; here the truth is rendered, so the demo shows
what the model gets right and wrong. Measured: `time e4e demo` 36-47 s wall (two runs) on this project's
2 CPU cores (shared with another job, load 2.5-3; 6 avatars, 47 generator images).
"""
import time
from pathlib import Path

from e4e.errors import E4EError

EMPTY = -0.5  # no pair: dark grey, unlike the avatars' own #808080 background
ATTRIBUTE_NAMES = {"smile": "smile", "glasses": "glasses", "facial_hair": "facial hair", "hat": "hat",
                   "hair_colour": "hair colour"}
DEFAULT_SEFA_STRENGTH = 3.0


def default_classifier() -> Path:
    """models/avatar/eval_convnet_B.safetensors of the source checkout this package runs from."""
    return Path(__file__).resolve().parents[3] / "models" / "avatar" / "eval_convnet_B.safetensors"


def load_judge(path):
    """(classifier or None, its name or the note saying why there is none)."""
    from e4e.checkpoints.attributes import load_attribute_net
    if path is not None:
        return load_attribute_net(path).eval(), Path(path).name
    path = default_classifier()
    if not path.is_file():
        return None, "no evaluation classifier (pass --classifier models/avatar/eval_convnet_B.safetensors)"
    return load_attribute_net(path).eval(), path.name


def pick_directions(dirs, info: dict, kind: str | None, generator):
    """-> ({(attribute, target): Direction} of one kind, the SeFa Direction). The kind: --kind, else the
    file's own, else the first label kind in it (an `e4e eval --pairs` file holds three)."""
    from e4e import benchmark as bm
    from e4e.editing import check_direction
    label_kinds = list(dict.fromkeys(d.kind for d in dirs if d.kind != "sefa"))
    kind = kind or info.get("kind") or (label_kinds[0] if label_kinds else None)
    if kind not in label_kinds:
        raise E4EError(f"the directions file has no {kind!r} directions (it has {', '.join(label_kinds) or 'none'})")
    for d in dirs:
        check_direction(d.vector, generator.n_latent, generator.style_dim,
                        f"directions {d.kind}/{d.attribute}{d.target}",
                        hint="make them for this model with scripts/make_demo_assets.py DATA")
    by_key = {(d.attribute, d.target): d for d in dirs if d.kind == kind}
    sefa = next((d for d in dirs if d.kind == "sefa"), None)
    if sefa is None:  # a file without one: the top SeFa direction of this generator, one W std long
        from e4e.evaluate import edit_directions, sample_w
        vec = edit_directions(generator, sample_w(generator, 10_000, 0), 1).directions[0]
        sefa = bm.Direction("sefa", "sefa0", "+", vec, {"strength": DEFAULT_SEFA_STRENGTH})
    return kind, by_key, sefa


def strength_of(d) -> float:
    s = d.info.get("strength", d.s90)
    return float(s) if s is not None else DEFAULT_SEFA_STRENGTH


def run(args) -> int:
    import torch

    from e4e import benchmark as bm
    from e4e import metrics
    from e4e.api import checkpoint_path, invert, load
    from e4e.assets import directions_path, samples_dir
    from e4e.imageio import load_image, save_grid, to_tensor
    from e4e.latents import checkpoint_sha256
    from e4e.outputs import writable_dir
    t0 = time.perf_counter()
    out = writable_dir(args.output)  # before the work
    if args.limit is not None and args.limit < 1:
        raise E4EError("--limit must be at least 1")
    torch.manual_seed(0)
    model = checkpoint_path(args.checkpoint)
    data = bm.read_pairs(args.samples or samples_dir())
    sources, pairs = bm.select_pairs(data, args.limit)
    dir_file = Path(args.directions) if args.directions else directions_path()
    dirs, _ = bm.load_directions(dir_file)
    info = bm.directions_info(dir_file)
    inv = load(model)
    g = inv.decoder
    kind, by_key, sefa = pick_directions(dirs, info, args.kind, g)
    notes = []
    if info.get("model_sha256") and info["model_sha256"] != checkpoint_sha256(model):
        notes.append(f"{dir_file.name} was fitted to another model ({info.get('model')}): its edits may mean "
                     "nothing here; regenerate with scripts/make_demo_assets.py DATA")
    judge, judge_name = load_judge(args.classifier)

    size = g.size
    root = data.root
    lat = invert([root / s for s in sources], inv, batch_size=8)
    inputs = to_tensor([load_image(root / s, size) for s in sources])
    pair_of = {}
    for p in pairs:
        pair_of.setdefault((p["source"], p["attribute"]), p)
    # every pair shown: (row, attribute, pair); every edit: (row, attribute, pair, direction, strength)
    shown = [(i, a, pair_of[(s, a)]) for i, s in enumerate(sources) for a in bm.EDIT_ATTRIBUTES if (s, a) in pair_of]
    edits, moved = [], []
    for i, a, p in shown:
        d = by_key.get((a, p["target"]))
        if d is None:
            notes.append(f"no {kind} direction for {a}={p['target']}: the edit of {sources[i]} is left empty")
            continue
        edits.append((i, a, p, d, strength_of(d)))
        moved.append(bm.edit_codes(lat.codes[i:i + 1], d.vector, strength_of(d)))  # every style (W+: each its own)
    s_sefa = strength_of(sefa)
    for sign in (-1, 1):
        moved.append(bm.edit_codes(lat.codes, sefa.vector, sign * s_sefa))
    with torch.no_grad():
        all_codes = torch.cat([lat.codes, *moved])
        images = torch.cat([inv.decode(c, resize=False) for c in all_codes.split(8)]).clamp(-1, 1)
    n = len(sources)
    recon, edited, sefa_minus, sefa_plus = images[:n], images[n:n + len(edits)], images[-2 * n:-n], images[-n:]
    truth_of = {(i, a): t for (i, a, _), t in zip(shown, to_tensor([load_image(root / p["file"], size)
                                                                    for _, _, p in shown]) if shown else [])}
    truths = torch.stack([truth_of[(i, a)] for i, a, *_ in edits]) if edits else None

    rows = []
    if edits:
        edit_mse = metrics.mse(edited, truths).tolist()
        base_mse = metrics.mse(recon[[e[0] for e in edits]], truths).tolist()
        read = {}
        if judge is not None:
            attrs = sorted({e[1] for e in edits})
            read = {"edit": bm.label_strings(judge, edited, attrs, 16),
                    "truth": bm.label_strings(judge, truths, attrs, 16)}
        for j, (i, a, p, d, s) in enumerate(edits):
            row = {"source": sources[i], "attribute": a, "target": p["target"], "kind": kind, "strength": round(s, 3),
                   "edit_mse": round(edit_mse[j], 5), "inversion_mse": round(base_mse[j], 5)}
            if read:
                row |= {"judge_edit": read["edit"][a][j], "success": int(read["edit"][a][j] == p["target"]),
                        "judge_truth": read["truth"][a][j]}
            rows.append(row)

    names = ["input", "inversion"]
    for a in bm.EDIT_ATTRIBUTES:
        names += [f"{ATTRIBUTE_NAMES[a]} edit", f"{ATTRIBUTE_NAMES[a]} truth"]
    names += [f"SeFa 0 -{s_sefa:g}", f"SeFa 0 +{s_sefa:g}"]
    empty = torch.full((3, size, size), EMPTY)
    where = {(e[0], e[1]): j for j, e in enumerate(edits)}
    cells = []
    for i in range(n):
        cells += [inputs[i], recon[i]]
        for a in bm.EDIT_ATTRIBUTES:
            j = where.get((i, a))
            cells += [empty if j is None else edited[j], truth_of.get((i, a), empty)]
        cells += [sefa_minus[i], sefa_plus[i]]
    save_grid(torch.stack(cells), out / "demo.png", nrow=len(names), labels=names)
    (out / "columns.txt").write_text("\n".join(names) + "\n")
    _write_csv(out / "edits.csv", rows)

    mse = float(metrics.mse(recon, inputs).mean())
    print(f"e4e demo: {n} held-out test avatars inverted with {model.name}: reconstruction MSE {mse:.4f} "
          "(images in [-1, 1])")
    how = info.get("how", f"{kind} directions from {dir_file.name}")
    print(f"edits: {how}; strength: {'calibrated per direction' if info.get('strength') else 'from the file'}; "
          f"judge: {judge_name}")
    for note in notes:
        print(f"note: {note}")
    _print_table(sources, rows, judge is not None)
    print("columns: " + " | ".join(names))
    print(f"wrote {out / 'demo.png'}, columns.txt and edits.csv in {time.perf_counter() - t0:.1f} s")
    return 0


def _print_table(sources, rows, judged: bool) -> None:
    """One line per avatar: per attribute the edit's MSE to the truth, the unedited inversion's in brackets,
    and whether the judge sees the target; then the means and success counts."""
    from e4e.benchmark import EDIT_ATTRIBUTES
    width = 22
    print("MSE of the edit to the truth (of the unedited inversion to the truth)"
          + (", judge sees the target: yes/no" if judged else ""))
    print(f"{'avatar':<11}" + "".join(f"{ATTRIBUTE_NAMES[a]:<{width}}" for a in EDIT_ATTRIBUTES))
    cell = {(r["source"], r["attribute"]): r for r in rows}
    for s in sources:
        line = f"{Path(s).stem:<11}"
        for a in EDIT_ATTRIBUTES:
            r = cell.get((s, a))
            text = "-" if r is None else f"{r['edit_mse']:.4f} ({r['inversion_mse']:.4f})"
            if r is not None and judged:
                text += " yes" if r["success"] else " no"
            line += f"{text:<{width}}"
        print(line.rstrip())
    line = f"{'mean':<11}"
    for a in EDIT_ATTRIBUTES:
        rs = [r for r in rows if r["attribute"] == a]
        text = "-"
        if rs:
            text = (f"{sum(r['edit_mse'] for r in rs) / len(rs):.4f} "
                    f"({sum(r['inversion_mse'] for r in rs) / len(rs):.4f})")
            if judged:
                text += f" {sum(r['success'] for r in rs)}/{len(rs)}"
        line += f"{text:<{width}}"
    print(line.rstrip())


def _write_csv(path: Path, rows: list[dict]) -> None:
    import csv
    cols = ["source", "attribute", "target", "kind", "strength", "edit_mse", "inversion_mse", "judge_edit", "success",
            "judge_truth"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=[c for c in cols if not rows or c in rows[0]])
        w.writeheader()
        w.writerows(rows)


def register(sub):
    from e4e.cli import add_threads
    p = sub.add_parser("demo", help="invert and edit held-out avatars with the embedded model, beside the true "
                                    "edits; write a grid")
    p.add_argument("-o", "--output", default="out/demo")
    p.add_argument("--checkpoint", help="inverter to use instead of the embedded one")
    p.add_argument("--samples", metavar="DIR", help="an avatar dataset folder (labels.csv, pairs.csv) instead of "
                                                    "the shipped held-out avatars")
    p.add_argument("--directions", metavar="FILE", help="directions file (e4e.benchmark format, e.g. from "
                                                        "scripts/make_demo_assets.py) instead of the shipped one")
    p.add_argument("--kind", help="which directions of the file (default: the file's own kind)")
    p.add_argument("--classifier", metavar="PATH", help="evaluation classifier (default: "
                                                        "models/avatar/eval_convnet_B.safetensors of the checkout)")
    p.add_argument("--limit", type=int, help="only the first N avatars")
    add_threads(p)
    p.set_defaults(func=run)
