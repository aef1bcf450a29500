"""The one inversion pipeline behind `e4e invert`, `e4e.invert` and `Inverter.invert`.

In:  image files, folders (recursive) and globs, or PIL images, or a (B, 3, H, W) tensor in [-1, 1].
Out: per image a name, a (3, S, S) tensor in [-1, 1] at the encoder's input size S, and a one-line note
     when the image was converted (grayscale, alpha, 16-bit...), looked out of the model's domain, or
     had several frames; then W+ codes per batch.

One naming rule (`collect_inputs`): a path relative to the folder given, or the stem of a file given by
itself, without extension; clashes get the extension, then ~N. PIL images and tensors are named "0",
"1", ... One conversion (`load_item` / `pil_to_tensor`): `e4e.imageio` to 8-bit RGB, then `fit` (crop,
pad, stretch) to the encoder's square. Multi-frame files (animated GIF/WebP/PNG, multi-page TIFF) give
their first frame with a note saying so, or with frames="all" one item per frame named <name>/<000000>
(see `e4e.video` for putting frames back together).
"""
import json
import os
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image

from e4e.errors import E4EError
from e4e.latents import META_KEY, checkpoint_identity, generator_shape


class Frame(NamedTuple):
    """Frame `index` of a multi-frame image file."""
    file: Path
    index: int

    @property
    def suffix(self) -> str:
        return self.file.suffix


def frame_count(path) -> int:
    """Frames in an image file (1 for still images and anything unreadable: load_image reports those)."""
    try:
        with Image.open(path) as im:
            return int(getattr(im, "n_frames", 1) or 1)
    except Exception:
        return 1


def collect_inputs(inputs, exclude: Path | None = None, frames: str = "first") -> list[tuple]:
    """Expand files, folders and globs into (path, name) pairs (see the module docstring for names).
    frames="all": a multi-frame file becomes one (Frame(path, i), "<name>/<i:06d>") pair per frame."""
    from e4e.imageio import iter_image_paths
    from e4e.outputs import safe_name
    if frames not in ("first", "all"):
        raise E4EError(f"frames must be 'first' or 'all', got {frames!r}")
    seen, pairs = set(), []
    skip = os.path.abspath(exclude) + os.sep if exclude else None
    for item in inputs:
        folder = Path(item) if Path(item).is_dir() else None
        for p in iter_image_paths(item):
            key = os.path.normcase(os.path.abspath(p))
            if key in seen or (skip and key.startswith(os.path.normcase(skip))):
                continue  # our own outputs (-o inside an input folder) are never inputs
            seen.add(key)
            name = (p.relative_to(folder).with_suffix("") if folder else Path(p.stem)).as_posix()
            pairs.append((p, safe_name(name)))
    clashes = Counter(n for _, n in pairs)
    out, used = [], set()
    for p, n in pairs:
        base = n + p.suffix.lower() if clashes[n] > 1 else n
        n, k = base, 2
        while n in used or n == META_KEY:
            n, k = f"{base}~{k}", k + 1
        used.add(n)
        count = frame_count(p) if frames == "all" else 1
        out.extend([(p, n)] if count == 1 else [(Frame(p, i), f"{n}/{i:06d}") for i in range(count)])
    return out


def conversion_note(path) -> str | None:
    """Why an image that loaded fine was not plain 8-bit RGB, or had frames left out (None if neither)."""
    if isinstance(path, Frame):
        return None
    try:
        with Image.open(path) as im:
            mode, alpha = im.mode, im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
            frames = int(getattr(im, "n_frames", 1) or 1)
    except Exception:
        return None
    notes = []
    if mode != "RGB":
        what = {"L": "grayscale", "1": "1-bit", "P": "palette", "CMYK": "CMYK", "I": "16/32-bit", "I;16": "16-bit",
                "F": "float"}.get(mode, mode)
        what = what if what == mode else f"{what} ({mode})"
        notes.append(f"converted {what} to 8-bit RGB" + (", alpha composited on white" if alpha else ""))
    if frames > 1:
        notes.append(f"{frames} frames: inverted frame 0 only (--frames all inverts every frame)")
    return f"{path}: " + "; ".join(notes) if notes else None


def read_input(path, size: int | None = None, fit: str = "crop") -> Image.Image:
    """A file (first frame) or a Frame -> 8-bit RGB, fitted to size. Bad input -> E4EError."""
    from e4e.imageio import fit_square, load_image, to_rgb
    if not isinstance(path, Frame):
        return load_image(path, size, fit=fit)
    load_image(path.file, None)  # the same checks (exists, pixel limit, decodable) as any input
    try:
        with Image.open(path.file) as im:
            im.seek(path.index)
            im.load()
            rgb = to_rgb(im.convert("RGBA") if im.mode == "P" else im)
    except (OSError, EOFError, ValueError) as e:
        raise E4EError(f"{path.file}: cannot decode frame {path.index} ({' '.join(str(e).split())})") from None
    return fit_square(rgb, size, fit) if size else rgb


def load_item(item, size: int, fit: str, domain: dict | None = None):
    """(path, name) -> (path, name, tensor (3,S,S) or None, message or None). Runs in worker threads."""
    from e4e.imageio import fit_square, to_tensor
    path, name = item
    try:
        # without a domain check, decode straight to the target size (JPEG draft mode saves memory)
        im = read_input(path, None if domain else size, fit)
    except E4EError as e:
        return path, name, None, str(e)
    notes = [n for n in (conversion_note(path), domain_note(path, im, domain)) if n]
    return path, name, to_tensor(fit_square(im, size, fit) if domain else im)[0], "; ".join(notes) or None


def prefetch(fn, items, workers: int, depth: int):
    """fn over items in order, `depth` calls ahead in a thread pool, so decoding overlaps compute
    (Pillow releases the GIL while decoding)."""
    pool = ThreadPoolExecutor(max(1, workers))
    it = iter(items)
    pending = deque(pool.submit(fn, x) for _, x in zip(range(max(1, depth)), it))
    try:
        while pending:
            result = pending.popleft().result()
            for x in it:
                pending.append(pool.submit(fn, x))
                break
            yield result
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


# -- the model's domain -------------------------------------------------------------------------------
# Small cartoon domains trained here: images are small and drawn on a flat background. A photo fed to
# them inverts to a meaningless emoji without any error, so it gets a warning.
FLAT_DOMAINS = {"emoji_encode": "emoji", "avatar_encode": "avatar", "avatars_encode": "avatar"}
# Share of the 1-px border ring (at the model's input size, colours quantised to 16 levels per channel)
# held by its 4 most common colours. Flat art is a few flat regions: every one of 1,000 avatars of a
# `e4e data avatars` build scores >= 0.90 (median 0.99; background, clothes and hair reach the border, so
# the ring's plain std, 0.12-0.24, could not tell them from photos), emoji on white ~1; photos score
# 0.2-0.74 (the official e4e face, car, church and horse samples, Gradio's sample photos).
FLAT_BORDER_SHARE = 0.85


def inverter_domain(inverter) -> dict | None:
    """{"name", "input_size"} for a model trained on a flat-background domain, from the checkpoint's tag
    (info.domain or info.dataset_type of our .safetensors); None when unknown or a photo domain."""
    path = getattr(inverter, "checkpoint_path", None)
    if path is None or Path(path).suffix != ".safetensors":
        return None
    try:
        from safetensors import safe_open
        with safe_open(str(path), "pt") as f:
            info = json.loads((f.metadata() or {}).get("info", "{}"))
    except Exception:
        return None
    tag = info.get("domain") or info.get("dataset_type")
    if tag not in FLAT_DOMAINS:
        return None
    return {"name": FLAT_DOMAINS[tag], "input_size": int(inverter.input_size)}


def flat_border_share(im: Image.Image, size: int) -> float:
    """Share of the border ring of `im` (cropped and resized to size x size, as the encoder sees it) in
    its 4 most common colours, quantised to 16 levels per channel: ~1 for flat art, low for photos."""
    import numpy as np

    from e4e.imageio import fit_square, to_rgb
    a = np.asarray(fit_square(to_rgb(im), size, "crop"), dtype=np.int32) // 16
    ring = np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])
    _, counts = np.unique(ring[:, 0] * 256 + ring[:, 1] * 16 + ring[:, 2], return_counts=True)
    return float(np.sort(counts)[::-1][:4].sum() / ring.shape[0])


def domain_note(path, im: Image.Image, domain: dict | None) -> str | None:
    """A one-line warning when `im` looks like a photo going into a flat-background model, else None."""
    if not domain:
        return None
    share = flat_border_share(im, domain["input_size"])
    big = max(im.size) > 8 * domain["input_size"]
    if share >= FLAT_BORDER_SHARE and not big:
        return None
    why = ", ".join(w for w, on in ((f"{im.size[0]}x{im.size[1]} px", big),
                                    (f"busy border (only {share:.0%} of it in 4 flat colours)",
                                     share < FLAT_BORDER_SHARE)) if on)
    return (f"warning: {getattr(path, 'file', path)} looks out of the model's domain ({why}; the model knows "
            f"{domain['name']} images on a flat background): the inversion will not resemble it")


# -- PIL images and batches ---------------------------------------------------------------------------
def pil_to_tensor(images, size: int, fit: str = "crop") -> torch.Tensor:
    """PIL images -> (B, 3, size, size) in [-1, 1], converted exactly as files are."""
    from e4e.imageio import fit_square, to_rgb, to_tensor
    return to_tensor([fit_square(to_rgb(im), size, fit) for im in images])


def load_batch(images, size: int, fit: str = "crop") -> tuple[list[str], torch.Tensor, list[str]]:
    """Paths / folders / globs, or PIL images, or a tensor -> (names, (B,3,H,W) in [-1,1], notes).
    Bad files raise E4EError (the `e4e invert` command skips them instead)."""
    if fit not in ("crop", "pad", "stretch"):
        raise E4EError(f"invert: fit must be crop, pad or stretch, got {fit!r}")
    if torch.is_tensor(images):
        x = images[None] if images.dim() == 3 else images
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[0] == 0 or not x.is_floating_point():
            raise E4EError(f"invert: a tensor must be a float batch (B, 3, H, W) in [-1, 1], got "
                           f"{images.dtype} {tuple(images.shape)}")
        if not torch.isfinite(x).all():
            raise E4EError("invert: the image tensor holds NaN or infinite values")
        return [str(i) for i in range(x.shape[0])], x, []
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    pil = [im for im in items if isinstance(im, Image.Image)]
    if pil and len(pil) != len(items):
        raise E4EError("invert: give either PIL images or paths, not a mix")
    if pil:
        return [str(i) for i in range(len(pil))], pil_to_tensor(pil, size, fit), []
    names, tensors, notes = [], [], []
    for path, name in collect_inputs(items):
        _, _, x, msg = load_item((path, name), size, fit)
        if x is None:
            raise E4EError(msg)
        names.append(name)
        tensors.append(x)
        notes += [msg] if msg else []
    if not tensors:
        raise E4EError("invert: no images given")
    return names, torch.stack(tensors), notes


# -- the model ----------------------------------------------------------------------------------------
def inversion_meta(inverter, fit: str = "crop", refine: dict | None = None) -> dict:
    """What the latents record about how they were made (checked by resume and by `e4e edit`)."""
    path = getattr(inverter, "checkpoint_path", None)
    meta = {"checkpoint": checkpoint_identity(path) if path else {},
            "generator": generator_shape(inverter.decoder), "input_size": int(inverter.input_size), "fit": fit}
    if refine:
        meta["refine"] = refine
    return meta


@torch.no_grad()
def invert_batch(inv, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch (B,3,H,W) in [-1,1] -> (reconstructions at generator resolution, W+ codes)."""
    codes = inv.encode(x)
    return inv.decode(codes, resize=False), codes


def batch_inverter(inv, precision: str = "auto", compile: bool | str = False, batch_size: int = 8):
    """A function batch -> (images, codes): the reference forward on CPU in fp32 (what e4e.fast would
    run there too), else e4e.fast's path."""
    from e4e.fast import prepare, resolve_precision
    dev = next(inv.parameters()).device
    if resolve_precision(precision, dev) == "fp32" and not compile and dev.type == "cpu":
        return lambda x: invert_batch(inv, x)
    return prepare(inv, precision, compile, batch_size=batch_size)
