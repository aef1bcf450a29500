"""e4e edit LATENTS -o DIR: decode edited W+ latents.

Edits (any mix; each makes one or more columns after the unedited "original"):
  --direction FILE  InterFaceGAN direction (.pt/.npy), at --strength S or at every strength of --sweep A:B:N
  --sefa K          the K-th (0-based) SeFa direction of the generator's --layers, at --strength / --sweep
  --ganspace PCA / --ganspace-fit N, with --edit pc,start,end,strength (repeatable, or a preset name)
Outputs: DIR/<edit>/<name>.png for every image and edit, DIR/grid.png (rows = images, columns = edits,
labelled), and with --sweep DIR/sweep/<direction>/<name>.gif (one frame per strength).
Latents: .npz from e4e invert (PTI-tuned generators recorded there are used), official latents.pt,
.npy W or W+; --export converts. --paste-back puts edited faces back into the photos e4e align cut them
from; --video (with --smooth) turns the frames of a clip back into one clip per edit.
"""
import argparse
import math
import re
from pathlib import Path

from e4e.cli import check_batch_and_size
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
            e = editing.resolve_edit(spec, n_styles=generator.n_latent)
            if not 0 <= e[0] < pca["std"].shape[0] or not 0 <= e[1] < e[2] <= generator.n_latent:
                raise E4EError(f"--edit {spec}: component {e[0]} of {pca['std'].shape[0]}, styles {e[1]}..{e[2] - 1} of "
                               f"{generator.n_latent}: out of range")  # checked before any image is written
            name = spec.partition("=")[0] if not spec[0].isdigit() else f"pc{e[0]}_{e[1]}-{e[2]}"
            columns.append((safe_label(f"{name}{fmt(e[3])}"), lambda c, e=e: editing.ganspace_edit(c, pca, e)))
    elif args.edit:
        raise E4EError("--edit needs --ganspace PCA_FILE or --ganspace-fit N")
    if len(columns) == 1 and not getattr(args, "allow_no_edit", False):
        raise E4EError("no edit given: use --direction, --sefa or --ganspace/--ganspace-fit (see e4e edit -h)")
    labels = [c[0] for c in columns]
    if len(set(labels)) != len(labels):
        raise E4EError(f"two edits have the same label ({', '.join(labels)}): give them distinct files/strengths")
    return columns, sweeps


def load_codes(args, g, ckpt):
    """The latents file in any supported format, as W+ codes for generator g, checked against it."""
    import torch

    from e4e.interchange import read_latents, to_wplus
    from e4e.latents import check_compatible
    lat = read_latents(args.latents)
    if not len(lat):
        raise E4EError(f"{args.latents}: holds no latents")
    bad = [n for n, c in zip(lat.names, lat.codes) if not torch.isfinite(c).all()]
    if bad:
        raise E4EError(f"{args.latents}: {len(bad)} latent(s) hold NaN or infinite values (first: {bad[0]}); "
                       "they would render as noise")
    lat = to_wplus(lat, g.n_latent)
    if "checkpoint" not in lat.meta and not args.force:
        # official .pt / .npy files record nothing: the shape check is all there is
        print(f"note: {args.latents} records no checkpoint; assuming it was made with {Path(ckpt).name}")
        check_compatible(lat, g, None, where=str(args.latents))
    else:
        check_compatible(lat, g, ckpt, force=args.force, where=str(args.latents))
    if args.smooth > 1:
        from e4e.video import sequences, smooth_codes
        codes = lat.codes.clone()
        for idx in sequences(lat.names).values():
            codes[idx] = smooth_codes(lat.codes[idx], args.smooth)
        lat.codes = codes
    return lat


def render_columns(g, codes, columns, size, generators=None) -> dict:
    """label -> PIL images of this batch; generators: one (PTI-tuned) generator per image, else g for all."""
    import torch

    from e4e.api import resize_images
    from e4e.imageio import to_pil
    pictures = {}
    for label, fn in columns:
        edited = fn(codes)
        if generators is None:
            images = g(edited, input_is_latent=True, randomize_noise=False)[0]
        else:
            images = torch.cat([gi(edited[k:k + 1], input_is_latent=True, randomize_noise=False)[0]
                                for k, gi in enumerate(generators)])
        pictures[label] = to_pil(resize_images(images.float(), size).cpu())
    return pictures


def run(args) -> int:
    import torch
    with torch.no_grad():
        return _run(args)


def _run(args) -> int:
    from tqdm import tqdm

    from e4e.api import checkpoint_path, resolve_device
    from e4e.checkpoints import load_generator
    from e4e.imageio import save_grid
    from e4e.outputs import safe_output_path, writable_dir
    from e4e.refine import load_tuned, tuned_generator_path
    check_batch_and_size(args.batch_size, args.size)
    if args.grid < 0 or args.frame_ms < 1:
        raise E4EError("--grid must be >= 0 and --frame-ms >= 1")
    if args.strength is not None and not math.isfinite(args.strength):
        raise E4EError(f"--strength must be a finite number, got {args.strength}")
    ckpt = checkpoint_path(args.checkpoint)
    g, _ = load_generator(ckpt)
    lat = load_codes(args, g, ckpt)  # names that would leave -o are refused here, before any output
    out = writable_dir(args.output)
    dev = resolve_device(args.device)
    g = g.to(dev).eval()
    args.allow_no_edit = bool(args.export)
    columns, sweeps = build_edits(args, g)
    tuned = tuned_generator_path(args.latents, lat.meta, lat.names[0]) is not None
    if tuned:  # all present before anything is rendered, or one line naming the first missing
        missing = [p for p in (tuned_generator_path(args.latents, lat.meta, n) for n in lat.names) if not p.is_file()]
        if missing:
            load_tuned(g, missing[0])
        print(f"{args.latents}: PTI-tuned generators recorded; each image renders with its own")
    if args.export:
        from e4e.interchange import write_latents
        print(f"exported {len(lat)} latents to {write_latents(args.export, lat)}"
              + ("; the PTI-tuned generators stay in their own files" if tuned else ""))
        if len(columns) == 1:
            return 0
    alignment = None
    if args.paste_back:
        from e4e.pasteback import load_alignment
        alignment = load_alignment(args.paste_back)
        if not any(n in alignment or Path(n).name in alignment for n in lat.names):
            raise E4EError(f"{args.paste_back}: records none of the latents' names (e.g. {lat.names[0]!r})")
    size = args.size or g.size

    grid_rows, frames, pasted = [], {}, 0
    bar = tqdm(total=len(lat), unit="img", desc="edit", disable=args.quiet)
    for i in range(0, len(lat), args.batch_size):
        names, codes = lat.names[i:i + args.batch_size], lat.codes[i:i + args.batch_size].to(dev)
        gens = [load_tuned(g, tuned_generator_path(args.latents, lat.meta, n)).to(dev) for n in names] \
            if tuned else None
        pictures = render_columns(g, codes, columns, size, gens)
        for label, _ in columns:
            for name, im in zip(names, pictures[label]):
                dst = safe_output_path(out, label, f"{name}.png")
                dst.parent.mkdir(parents=True, exist_ok=True)
                im.save(dst)
                if args.video:
                    frames.setdefault(label, {})[name] = dst
        for j, name in enumerate(names):
            for label, fr in sweeps.items():
                dst = safe_output_path(out, "sweep", label, f"{name}.gif")
                dst.parent.mkdir(parents=True, exist_ok=True)
                fr = [pictures[f][j] for f in fr]
                # Pillow merges consecutive identical frames (adding their durations): the timing stays right
                fr[0].save(dst, save_all=True, append_images=fr[1:], duration=args.frame_ms, loop=0)
            if len(grid_rows) < args.grid:
                grid_rows.append([pictures[label][j] for label, _ in columns])
            if alignment is not None:
                pasted += paste_one(alignment, name, j, pictures, columns, out, args.feather)
        bar.update(len(names))
    bar.close()
    if grid_rows:
        labels = [label for label, _ in columns]
        save_grid([im for row in grid_rows for im in row], out / "grid.png", nrow=len(columns), labels=labels)
    clips = write_clips(frames, lat.names, out, args) if args.video else []
    print(f"{len(lat)} images x {len(columns)} columns ({', '.join(c[0] for c in columns)}) -> {out}"
          + (f"; {len(sweeps) * len(lat)} sweep GIFs of {len(next(iter(sweeps.values())))} frames" if sweeps else "")
          + (f"; grid {out / 'grid.png'}" if grid_rows else "")
          + (f"; {pasted} pasted back into their photos in {out / 'pasted'}" if alignment is not None else "")
          + (f"; {len(clips)} clips in {out / 'video'}" if args.video else ""))
    return 0


def paste_one(alignment, name, j, pictures, columns, out: Path, feather: float) -> int:
    """Every column of image j of the batch pasted into its source photo -> out/pasted/<label>/<name>.png."""
    from tqdm import tqdm

    from e4e.imageio import load_image
    from e4e.outputs import safe_output_path
    from e4e.pasteback import paste_back
    rec = alignment.get(name) or alignment.get(Path(name).name)
    if rec is None:
        tqdm.write(f"skipped paste-back of {name}: not in the alignment record")
        return 0
    try:
        photo = load_image(rec["source"])
    except E4EError as e:
        tqdm.write(f"skipped paste-back of {name}: {e}")
        return 0
    for label, _ in columns:
        dst = safe_output_path(out, "pasted", label, f"{name}.png")
        dst.parent.mkdir(parents=True, exist_ok=True)
        paste_back(photo, pictures[label][j], rec["quad"], feather).save(dst)
    return 1


def write_clips(frames: dict, names: list[str], out: Path, args) -> list[Path]:
    """One clip per edit column and frame sequence -> out/video/<label>/<sequence>.<gif|mp4>."""
    from tqdm import tqdm

    from e4e.video import sequences, write_clips as clips_of
    if not any(len(v) > 1 for v in sequences(names).values()):
        tqdm.write("--video: no sequence of 2 or more frames among the names (invert a clip with --frames all)")
        return []
    return [c for label in frames for c in clips_of(names, frames[label].__getitem__, out / "video" / label,
                                                     args.video, args.fps, progress=not args.quiet)]


def register(sub):
    from e4e.cli import add_threads
    p = sub.add_parser("edit", help="edit inverted latents: InterFaceGAN / SeFa directions, GANSpace",
                       description=__doc__.split("\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("latents", metavar="LATENTS", help="latents: .npz from e4e invert, an official e4e latents.pt "
                   "(dict name -> W+), or .npy (W+ (N, n_styles, D), or W (N, D) as e4e generate writes)")
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
    p.add_argument("--export", metavar="FILE", help="write the latents (after --smooth) as FILE by extension: .pt "
                   "(official dict name -> W+), .npy or .npz; with no edit given, only export")
    p.add_argument("--paste-back", metavar="ALIGNMENT", help="also composite every edited face into its source "
                   "photo (DIR/pasted/<edit>/<name>.png), using the alignment.json e4e align wrote")
    p.add_argument("--feather", type=float, default=0.1, help="paste-back: soft-mask border, share of the face "
                   "square (default 0.1)")
    p.add_argument("--video", choices=("gif", "mp4"), help="frames of a clip (e4e invert --frames all, or a folder "
                   "of frames): write one clip per edit, DIR/video/<edit>/<clip>.gif (mp4 needs ffmpeg on PATH)")
    p.add_argument("--fps", type=float, default=12.0, help="--video frame rate (default 12)")
    p.add_argument("--smooth", type=int, default=1, metavar="K", help="average each frame's codes with its "
                   "neighbours over K frames (centred) before editing, against flicker (default 1: off)")
    add_threads(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
