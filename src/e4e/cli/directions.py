"""e4e directions fit|sefa|ganspace: make edit directions.

  fit LATENTS LABELS.csv -o dir.pt   InterFaceGAN: a linear classifier on labelled latents, its unit normal
  sefa -o dir.pt --index K           the K-th SeFa direction, zero outside the factorised styles
  ganspace -o pca.pt                 GANSpace PCA of W, in the official file layout
"""
import csv
from pathlib import Path

import torch

from e4e.errors import E4EError

TRUE = {"1", "true", "yes", "y", "t"}
FALSE = {"0", "-1", "false", "no", "n", "f"}


def read_labels(path, name_column: str | None, label_column: str, positive: str | None) -> dict[str, int]:
    """CSV -> {name: 0/1}. Labels are 0/1, -1/1, true/false, or (with positive) value == positive."""
    path = Path(path)
    if not path.is_file():
        raise E4EError(f"{path}: no such labels file")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        name_column = name_column or next((c for c in ("name", "file", "image") if c in cols), None)
        if name_column not in cols or label_column not in cols:
            raise E4EError(f"{path}: needs a name column (name/file, or --name-column) and a {label_column!r} "
                           f"column (--label-column); it has {', '.join(cols) or 'no header'}")
        labels = {}
        for row in reader:
            value = (row[label_column] or "").strip()
            if positive is not None:
                labels[row[name_column]] = int(value == positive)
            elif value.lower() in TRUE | FALSE:
                labels[row[name_column]] = int(value.lower() in TRUE)
            elif value:
                raise E4EError(f"{path}: label {value!r} of {row[name_column]!r} is not binary "
                               "(0/1, -1/1, true/false); pass --positive VALUE to compare with a value")
    return labels


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
    from e4e.latents import load_latents
    lat = load_latents(args.latents)
    labels = read_labels(args.labels, args.name_column, args.label_column, args.positive)
    idx, y = match_labels(lat.names, labels)
    if len(idx) < 4:
        raise E4EError(f"only {len(idx)} of {len(labels)} labelled names are in {args.latents}: "
                       "names must match the image names (e.g. 'cat' or 'cat.png' for recon/cat.png)")
    res = fit_direction(lat.codes[idx], y, method=args.method, style=args.style, val_fraction=args.val_fraction,
                        seed=args.seed)
    save_direction(args.output, res.direction)
    pos = sum(y)
    acc = f"held-out accuracy {res.accuracy:.3f} on {res.n_val}" if res.accuracy is not None else "no held-out split"
    print(f"{args.method}: {acc}, train accuracy {res.train_accuracy:.3f} on {res.n_train} "
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
    p = sub.add_parser("directions", help="make edit directions: fit (InterFaceGAN), sefa, ganspace")
    kinds = p.add_subparsers(dest="kind", metavar="KIND")

    def none(args):
        raise E4EError("name one: e4e directions fit|sefa|ganspace (see -h)")

    p.set_defaults(func=none)
    f = kinds.add_parser("fit", help="fit a direction to labelled latents (InterFaceGAN)")
    f.add_argument("latents", metavar="LATENTS", help="latents.npz from e4e invert")
    f.add_argument("labels", metavar="LABELS.csv", help="CSV with a name column and a label column")
    f.add_argument("-o", "--output", required=True, metavar="FILE", help="direction file to write (.pt or .npy)")
    f.add_argument("--method", default="svm", choices=("svm", "logistic"), help="classifier loss (default svm)")
    f.add_argument("--name-column", help="CSV column naming the image (default: name, file or image)")
    f.add_argument("--label-column", default="label", help="CSV column with the label (default label)")
    f.add_argument("--positive", metavar="VALUE", help="label = (column value == VALUE), for non-binary columns")
    f.add_argument("--style", type=int, help="fit on this style of W+ only (default: the mean over styles)")
    f.add_argument("--val-fraction", type=float, default=0.3, help="held-out share for the accuracy (default 0.3)")
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(func=run_fit)

    s = kinds.add_parser("sefa", help="export a SeFa direction of a generator")
    s.add_argument("-o", "--output", required=True, metavar="FILE", help="direction file to write (.pt or .npy)")
    s.add_argument("--checkpoint", metavar="PATH", help="inverter or generator (default: the embedded model)")
    s.add_argument("--index", type=int, default=0, metavar="K", help="which direction (0 = strongest)")
    s.add_argument("--layers", metavar="A-B", help="style indices to factorise, e.g. 2-5 (default all)")
    s.set_defaults(func=run_sefa)

    g = kinds.add_parser("ganspace", help="export the GANSpace PCA of a generator's W space")
    g.add_argument("-o", "--output", required=True, metavar="FILE", help="PCA file to write (.pt, official layout)")
    g.add_argument("--checkpoint", metavar="PATH", help="inverter or generator (default: the embedded model)")
    g.add_argument("--samples", type=int, default=100_000, help="mapping samples (default 100000)")
    g.add_argument("--components", type=int, default=80, help="components kept (default 80)")
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=run_ganspace)
