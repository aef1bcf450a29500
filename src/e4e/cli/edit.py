"""e4e edit LATENTS -o DIR: decode edited W+ latents.

Edits (any mix; each makes one or more columns after the unedited "original"):
  --direction FILE  InterFaceGAN direction (.pt/.npy), at --strength S or at every strength of --sweep A:B:N
  --sefa K          the K-th (0-based) SeFa direction of the generator's --layers, at --strength / --sweep
  --ganspace PCA / --ganspace-fit N, with --edit pc,start,end,strength (repeatable, or a preset name)
Outputs: DIR/<edit>/<name>.png for every image and edit, DIR/grid.png (rows = images, columns = edits),
and with --sweep DIR/sweep/<direction>/<name>.gif (one frame per strength).
"""
import argparse
import math
import re
from pathlib import Path

import torch
from tqdm import tqdm

from e4e.errors import E4EError


def parse_sweep(text: str) -> list[float]:
    from e4e.editing import strength_range
    try:
        a, b, n = text.split(":")
        a, b, n = float(a), float(b), int(n)
    except ValueError:
        raise E4EError(f"--sweep: expected START:STOP:STEPS like -3:3:7, got {text!r}") from None
    if n < 2:
        raise E4EError("--sweep: needs at least 2 steps")
    if not (math.isfinite(a) and math.isfinite(b)):
        raise E4EError(f"--sweep: START and STOP must be finite numbers, got {text!r}")
    return strength_range(a, b, n)


def parse_layers(text: str | None) -> list[int] | None:
    """'2-5' or '2,3,7' or '2-5,8' -> style indices; None -> None (every layer)."""
    if text is None:
        return None
    out = []
    try:
        for part in text.split(","):
            a, _, b = part.strip().partition("-")
            out.extend(range(int(a), int(b) + 1) if b else [int(a)])
    except ValueError:
        raise E4EError(f"--layers: expected style indices like 2-5 or 0,1,4, got {text!r}") from None
    return out


def safe_label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", text).strip("_.") or "edit"


def fmt(s: float) -> str:
    return f"{s:+g}"


def build_edits(args, generator) -> tuple[list[tuple[str, callable]], dict[str, list[str]]]:
    """-> columns [(label, codes -> codes)], and per swept direction the labels of its frames in order."""
    from e4e import editing
    linear = []  # (label, direction, styles)
    for path in args.direction or []:
        linear.append((safe_label(Path(path).stem), editing.load_direction(path), None))
    if args.sefa is not None:
        res = editing.sefa_directions(generator, parse_layers(args.layers))
        if not 0 <= args.sefa < res.directions.shape[0]:
            raise E4EError(f"--sefa {args.sefa}: out of range (0..{res.directions.shape[0] - 1})")
        linear.append((f"sefa{args.sefa}", res.directions[args.sefa][None], res.styles))
    elif args.layers is not None:
        raise E4EError("--layers goes with --sefa")
    if linear and args.strength is None and args.sweep is None:
        raise E4EError("--direction / --sefa need --strength S or --sweep A:B:N")
    if not linear and (args.strength is not None or args.sweep is not None):
        raise E4EError("--strength / --sweep need --direction FILE or --sefa K")
    strengths = parse_sweep(args.sweep) if args.sweep else [args.strength]

    columns, sweeps = [("original", lambda c: c)], {}
    for label, d, styles in linear:
        editing.check_direction(d, generator.n_latent, generator.style_dim, label)
        labels = []
        for s in strengths:
            labels.append(f"{label}{fmt(s)}")
            columns.append((labels[-1], lambda c, d=d, s=s, st=styles: editing.apply_direction(c, d, s, st)))
        if args.sweep:
            sweeps[label] = labels

    if args.ganspace and args.ganspace_fit:
        raise E4EError("give --ganspace PCA_FILE or --ganspace-fit N, not both")
    if args.ganspace or args.ganspace_fit:
        if not args.edit:
            raise E4EError("GANSpace needs at least one --edit pc,start,end,strength (or a preset name)")
        if args.ganspace:
            pca = editing.load_pca(args.ganspace)
        else:
            if args.ganspace_fit < 2:
                raise E4EError("--ganspace-fit needs at least 2 samples")
            pca = editing.ganspace_pca(generator, min(80, generator.style_dim), args.ganspace_fit, args.seed)
        if pca["mean"].shape[-1] != generator.style_dim:
            raise E4EError(f"{args.ganspace}: a {pca['mean'].shape[-1]}-d PCA for a {generator.style_dim}-d generator")
        for spec in args.edit:
            e = editing.resolve_edit(spec)
            if not 0 <= e[0] < pca["std"].shape[0] or not 0 <= e[1] < e[2] <= generator.n_latent:
                raise E4EError(f"--edit {spec}: component {e[0]} of {pca['std'].shape[0]}, styles {e[1]}..{e[2] - 1} of "
                               f"{generator.n_latent}: out of range")  # checked before any image is written
            name = spec.partition("=")[0] if not spec[0].isdigit() else f"pc{e[0]}_{e[1]}-{e[2]}"
            columns.append((safe_label(f"{name}{fmt(e[3])}"), lambda c, e=e: editing.ganspace_edit(c, pca, e)))
    elif args.edit:
        raise E4EError("--edit needs --ganspace PCA_FILE or --ganspace-fit N")
    if len(columns) == 1:
        raise E4EError("no edit given: use --direction, --sefa or --ganspace/--ganspace-fit (see e4e edit -h)")
    labels = [c[0] for c in columns]
    if len(set(labels)) != len(labels):
        raise E4EError(f"two edits have the same label ({', '.join(labels)}): give them distinct files/strengths")
    return columns, sweeps


@torch.no_grad()
def run(args) -> int:
    from PIL import Image

    from e4e.api import checkpoint_path, resize_images, resolve_device
    from e4e.checkpoints import load_generator
    from e4e.imageio import save_grid, to_pil
    from e4e.latents import check_compatible, load_latents
    from e4e.outputs import safe_output_path, writable_dir
    if args.batch_size < 1:
        raise E4EError("--batch-size must be at least 1")
    if args.size is not None and args.size < 1:
        raise E4EError(f"--size must be a positive number of pixels, got {args.size}")
    if args.grid < 0 or args.frame_ms < 1:
        raise E4EError("--grid must be >= 0 and --frame-ms >= 1")
    if args.strength is not None and not math.isfinite(args.strength):
        raise E4EError(f"--strength must be a finite number, got {args.strength}")
    lat = load_latents(args.latents)
    if not len(lat):
        raise E4EError(f"{args.latents}: holds no latents")
    bad = [n for n, c in zip(lat.names, lat.codes) if not torch.isfinite(c).all()]
    if bad:
        raise E4EError(f"{args.latents}: {len(bad)} latent(s) hold NaN or infinite values (first: {bad[0]}); "
                       "they would render as noise")
    out = writable_dir(args.output)
    ckpt = checkpoint_path(args.checkpoint)
    g, _ = load_generator(ckpt)
    check_compatible(lat, g, ckpt, force=args.force, where=str(args.latents))
    dev = resolve_device(args.device)
    g = g.to(dev).eval()
    columns, sweeps = build_edits(args, g)
    size = args.size or g.size

    grid_rows = []
    bar = tqdm(total=len(lat), unit="img", desc="edit", disable=args.quiet)
    for i in range(0, len(lat), args.batch_size):
        names, codes = lat.names[i:i + args.batch_size], lat.codes[i:i + args.batch_size].to(dev)
        pictures = {}  # label -> PIL images of this batch
        for label, fn in columns:
            images, _ = g(fn(codes), input_is_latent=True, randomize_noise=False)
            pictures[label] = to_pil(resize_images(images.float(), size).cpu())
            for name, im in zip(names, pictures[label]):
                dst = safe_output_path(out, label, f"{name}.png")
                dst.parent.mkdir(parents=True, exist_ok=True)
                im.save(dst)
        for j, name in enumerate(names):
            for label, frames in sweeps.items():
                dst = safe_output_path(out, "sweep", label, f"{name}.gif")
                dst.parent.mkdir(parents=True, exist_ok=True)
                frames = [pictures[f][j] for f in frames]
                # Pillow merges consecutive identical frames (adding their durations): the timing stays right
                frames[0].save(dst, save_all=True, append_images=frames[1:], duration=args.frame_ms, loop=0)
            if len(grid_rows) < args.grid:
                grid_rows.append([pictures[label][j] for label, _ in columns])
        bar.update(len(names))
    bar.close()
    if grid_rows:
        save_grid([im for row in grid_rows for im in row], out / "grid.png", nrow=len(columns))
    print(f"{len(lat)} images x {len(columns)} columns ({', '.join(c[0] for c in columns)}) -> {out}"
          + (f"; {len(sweeps) * len(lat)} sweep GIFs of {len(next(iter(sweeps.values())))} frames" if sweeps else "")
          + (f"; grid {out / 'grid.png'}" if grid_rows else ""))
    return 0


def register(sub):
    p = sub.add_parser("edit", help="edit inverted latents: InterFaceGAN / SeFa directions, GANSpace",
                       description=__doc__.split("\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("latents", metavar="LATENTS", help="latents.npz written by e4e invert")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("--checkpoint", metavar="PATH", help="the inverter (or generator) the latents were made with "
                   "(default: the embedded model)")
    p.add_argument("--force", action="store_true",
                   help="accept latents recorded with another checkpoint file of the same generator shape")
    p.add_argument("--direction", action="append", metavar="FILE", help="InterFaceGAN direction .pt/.npy (repeatable)")
    p.add_argument("--sefa", type=int, metavar="K", help="use the K-th SeFa direction (0 = strongest)")
    p.add_argument("--layers", metavar="A-B", help="style indices SeFa factorises and edits, e.g. 2-5 (default all)")
    p.add_argument("--strength", type=float, metavar="S", help="strength of --direction / --sefa")
    p.add_argument("--sweep", metavar="A:B:N", help="N strengths from A to B: one column each and a GIF per image "
                   "(write --sweep=-3:3:7 when A is negative)")
    p.add_argument("--ganspace", metavar="PCA_FILE", help="GANSpace PCA (official .pt or GANSpace .npz)")
    p.add_argument("--ganspace-fit", type=int, metavar="N", help="compute the GANSpace PCA from N mapping samples")
    p.add_argument("--edit", action="append", metavar="PC,START,END,STRENGTH",
                   help="GANSpace edit (official rule: sets component PC of styles START..END-1 to STRENGTH std), "
                        "or a preset name such as smile[=S]; repeatable")
    p.add_argument("--seed", type=int, default=0, help="seed of the --ganspace-fit samples (default 0)")
    p.add_argument("--size", type=int, metavar="PX", help="output image size (default: the generator's)")
    p.add_argument("--grid", type=int, default=16, metavar="N", help="grid.png rows: the first N images (0: none)")
    p.add_argument("--frame-ms", type=int, default=120, help="sweep GIF frame duration in ms (default 120)")
    p.add_argument("--device", help="cpu, cuda ... (default: cuda if available)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
