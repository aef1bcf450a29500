"""e4e directions fit|sefa|ganspace: make edit directions.

  fit LATENTS LABELS.csv -o dir.pt   InterFaceGAN: a linear classifier on labelled latents, its unit normal
                                     (--method class_gap: the class-mean difference, per style on W+)
  sefa -o dir.pt --index K           the K-th SeFa direction, zero outside the factorised styles
  ganspace -o pca.pt                 GANSpace PCA of W, in the official file layout
"""
import csv
from pathlib import Path


from e4e.errors import E4EError

TRUE = {"1", "true", "yes", "y", "t"}
FALSE = {"0", "-1", "false", "no", "n", "f"}


def read_rows(path) -> tuple[list[str], list[dict]]:
    """CSV -> (column names, rows)."""
    path = Path(path)
    if not path.is_file():
        raise E4EError(f"{path}: no such labels file")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def pick_name_column(path, cols: list[str], rows: list[dict], names: list[str], name_column: str | None) -> str:
    """The given column, else the one whose values match the most latent names (ties: name, file, image,
    then CSV order), so a dataset's labels.csv works whether its names are file paths or stems."""
    if name_column is not None:
        if name_column not in cols:
            raise E4EError(f"{path}: no column {name_column!r} (--name-column); it has {', '.join(cols) or 'no header'}")
        return name_column
    if not cols:
        raise E4EError(f"{path}: no header row")
    order = [c for c in ("name", "file", "image") if c in cols] + [c for c in cols if c not in ("name", "file", "image")]
    hits = {c: len(match_labels(names, {r[c]: 0 for r in rows if r.get(c)})[0]) for c in order}
    return max(order, key=lambda c: (hits[c], -order.index(c)))


def read_labels(path, name_column: str | None, label_column: str, positive: str | None,
                names: list[str] | None = None, negative: str | None = None) -> tuple[dict[str, int], str]:
    """CSV -> ({name: 0/1}, the name column used). Labels are 0/1, -1/1, true/false, or (with positive)
    value == positive; with negative too, rows holding neither value are left out. Without name_column,
    the column matching most of `names` is used."""
    cols, rows = read_rows(path)
    if label_column not in cols:
        raise E4EError(f"{path}: no label column {label_column!r} (--label-column); it has "
                       f"{', '.join(cols) or 'no header'}")
    name_column = pick_name_column(path, cols, rows, names or [], name_column)
    labels = {}
    for row in rows:
        value = (row[label_column] or "").strip()
        if positive is not None:
            if negative is None or value in (positive, negative):
                labels[row[name_column]] = int(value == positive)
        elif value.lower() in TRUE | FALSE:
            labels[row[name_column]] = int(value.lower() in TRUE)
        elif value:
            raise E4EError(f"{path}: label {value!r} of {row[name_column]!r} is not binary "
                           "(0/1, -1/1, true/false); pass --positive VALUE to compare with a value")
    return labels, name_column


def match_labels(names: list[str], labels: dict[str, int]) -> tuple[list[int], list[int]]:
    """Indices into names and their labels, matching a CSV name to a latent name exactly, without its
    extension, or by file stem (so 'train/1f600.png' finds '1f600' and 'train/1f600')."""
    index = {}
    for i, n in enumerate(names):
        index.setdefault(n, i)
    for i, n in enumerate(names):
        index.setdefault(Path(n).name, i)
    idx, y = [], []
    for key, label in labels.items():
        p = Path(key)
        for cand in (key, p.with_suffix("").as_posix(), p.stem):
            if cand in index:
                idx.append(index[cand])
                y.append(label)
                break
    return idx, y


def run_fit(args) -> int:
    from e4e.outputs import writable_file
    writable_file(args.output)  # before the work
    from e4e.editing import fit_direction, save_direction
    from e4e.interchange import read_latents
    lat = read_latents(args.latents)
    if args.negative is not None and args.positive is None:
        raise E4EError("--negative goes with --positive")
    labels, column = read_labels(args.labels, args.name_column, args.label_column, args.positive, lat.names,
                                 args.negative)
    idx, y = match_labels(lat.names, labels)
    if len(idx) < 4:
        example = next(iter(labels), "")
        raise E4EError(f"only {len(idx)} of {len(labels)} labelled names (column {column!r}, e.g. {example!r}) "
                       f"match the {len(lat)} names in {args.latents} (e.g. {lat.names[0] if len(lat) else ''!r}): "
                       "pass --name-column, or invert the images the labels name")
    res = fit_direction(lat.codes[idx], y, method=args.method, style=args.style, val_fraction=args.val_fraction,
                        seed=args.seed)
    save_direction(args.output, res.direction)
    pos = sum(y)
    acc = (f"held-out accuracy {res.accuracy:.3f} on {res.n_val} (majority-class baseline {res.baseline:.3f})"
           if res.accuracy is not None else "no held-out split")
    print(f"{args.method} on {column!r} names: {acc}, train accuracy {res.train_accuracy:.3f} on {res.n_train} "
          f"({pos} positive, {len(y) - pos} negative; {len(labels) - len(idx)} labels unmatched); "
          f"wrote {args.output} {tuple(res.direction.shape)}")
    return 0


def load_gen(checkpoint):
    from e4e.api import checkpoint_path
    from e4e.checkpoints import load_generator
    return load_generator(checkpoint_path(checkpoint))[0]


def run_sefa(args) -> int:
    from e4e.outputs import writable_file
    writable_file(args.output)  # before the work
    from e4e.cli.edit import parse_layers
    from e4e.editing import save_direction, sefa_directions
    g = load_gen(args.checkpoint)
    res = sefa_directions(g, parse_layers(args.layers))
    if not 0 <= args.index < res.directions.shape[0]:
        raise E4EError(f"--index {args.index}: out of range (0..{res.directions.shape[0] - 1})")
    # per-style layout: the direction on the styles SeFa factorised, zero elsewhere, so a plain
    # `latent + s * direction` edits exactly those styles
    import torch
    d = torch.zeros(1, g.n_latent, g.style_dim)
    d[0, res.styles] = res.directions[args.index]
    save_direction(args.output, d)
    top = ", ".join(f"{v:.3g}" for v in res.eigenvalues[:5].tolist())
    print(f"SeFa direction {args.index} of styles {res.styles[0]}..{res.styles[-1]} (top eigenvalues {top}); "
          f"wrote {args.output} {tuple(d.shape)}")
    return 0


def run_ganspace(args) -> int:
    from e4e.outputs import writable_file
    writable_file(args.output)  # before the work
    from e4e.editing import ganspace_pca, save_pca
    g = load_gen(args.checkpoint)
    k = min(args.components, g.style_dim)
    pca = ganspace_pca(g, k, args.samples, args.seed)
    save_pca(args.output, pca)
    share = pca["std"].pow(2)
    print(f"GANSpace PCA of {args.samples} W samples: {k} components, the first 10 carry "
          f"{float(share[:10].sum() / share.sum()):.0%} of their variance; wrote {args.output}")
    return 0


def register(sub):
    from e4e.editing.fit import METHODS
    from e4e.cli import add_threads
    p = sub.add_parser("directions", help="make edit directions: fit (InterFaceGAN), sefa, ganspace")
    kinds = p.add_subparsers(dest="kind", metavar="KIND")

    def none(args):
        raise E4EError("name one: e4e directions fit|sefa|ganspace (see -h)")

    p.set_defaults(func=none)
    f = kinds.add_parser("fit", help="fit a direction to labelled latents (InterFaceGAN)")
    f.add_argument("latents", metavar="LATENTS", help="latents from e4e invert (.npz), an official latents.pt or .npy")
    f.add_argument("labels", metavar="LABELS.csv", help="CSV with a name column and a label column")
    f.add_argument("-o", "--output", required=True, metavar="FILE", help="direction file to write (.pt or .npy)")
    f.add_argument("--method", default="svm", choices=METHODS,
                   help="svm / logistic: a classifier's unit normal (InterFaceGAN; default svm); class_gap: the "
                        "class-mean difference, style by style on W+ latents (strength 1 = one class gap)")
    f.add_argument("--name-column", help="CSV column naming the image (default: the column whose values match the latents' names, "
                   "e.g. a dataset labels.csv's 'file')")
    f.add_argument("--label-column", default="label", help="CSV column with the label (default label)")
    f.add_argument("--positive", metavar="VALUE", help="label = (column value == VALUE), for non-binary columns")
    f.add_argument("--negative", metavar="VALUE", help="with --positive: label 0 = (column value == VALUE); "
                   "rows with neither value are left out")
    f.add_argument("--style", type=int, help="fit on this style of W+ only (default: the mean over styles)")
    f.add_argument("--val-fraction", type=float, default=0.3, help="held-out share for the accuracy (default 0.3)")
    f.add_argument("--seed", type=int, default=0)
    add_threads(f)
    f.set_defaults(func=run_fit)

    s = kinds.add_parser("sefa", help="export a SeFa direction of a generator")
    s.add_argument("-o", "--output", required=True, metavar="FILE", help="direction file to write (.pt or .npy)")
    s.add_argument("--checkpoint", metavar="PATH", help="inverter or generator (default: the embedded model)")
    s.add_argument("--index", type=int, default=0, metavar="K", help="which direction (0 = strongest)")
    s.add_argument("--layers", metavar="A-B", help="style indices to factorise, e.g. 2-5 (default all)")
    add_threads(s)
    s.set_defaults(func=run_sefa)

    g = kinds.add_parser("ganspace", help="export the GANSpace PCA of a generator's W space")
    g.add_argument("-o", "--output", required=True, metavar="FILE", help="PCA file to write (.pt, official layout)")
    g.add_argument("--checkpoint", metavar="PATH", help="inverter or generator (default: the embedded model)")
    g.add_argument("--samples", type=int, default=100_000, help="mapping samples (default 100000)")
    g.add_argument("--components", type=int, default=80, help="components kept (default 80)")
    g.add_argument("--seed", type=int, default=0)
    add_threads(g)
    g.set_defaults(func=run_ganspace)
