"""Image input/output for the whole package.

Every image that enters e4e goes through `load_image`, which turns anything Pillow can decode into an
8-bit RGB image and turns everything else into a one-line `E4EError` naming the file and the reason:

- grayscale, palette, CMYK, 16-bit and float images are converted to 8-bit RGB (16-bit values are
  scaled by 255/65535, not truncated);
- alpha (RGBA, LA, palette or tRNS transparency) is composited on `background` (default white);
- EXIF orientation is applied, animated files give their first frame;
- images over `max_pixels` (default 64 Mi px, below Pillow's own decompression-bomb limit, which
  applies too) are REFUSED with an error rather than downscaled: decoding them at all is what costs the memory. JPEGs are an
  exception when `size` is given: they are decoded at a reduced scale first (Pillow's draft mode), and
  the limit applies to that reduced decode.

Tensors are float (N, 3, H, W) in [-1, 1], the StyleGAN convention.
"""
import glob
import math
import os
import warnings
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageColor, ImageOps, UnidentifiedImageError

from e4e.errors import E4EError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pnm")
MAX_PIXELS = 64 * 1024 * 1024
FITS = ("crop", "pad", "stretch")

Color = str | tuple[int, int, int]


def parse_color(color: Color) -> tuple[int, int, int]:
    """'white', '#80ff00' or an (r, g, b) tuple -> (r, g, b)."""
    if isinstance(color, str):
        try:
            return ImageColor.getrgb(color)[:3]
        except ValueError:
            raise E4EError(f"unknown colour {color!r} (use a name like 'white' or a hex code like '#808080')") from None
    r, g, b = (int(c) for c in color)
    return r, g, b


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _high_bit_depth_to_l(im: Image.Image) -> Image.Image:
    """Integer/float single-channel modes -> 'L'. Integer images are taken as 16-bit (what PNG and most
    TIFFs carry: Pillow reports 16-bit PNGs as 'I;16' or 'I'); float images in [0, 1] are scaled by 255,
    others are clipped to [0, 255]."""
    a = np.asarray(im)
    if im.mode == "F":
        a = a.astype(np.float64)
        a = np.nan_to_num(a)
        scale = 255.0 if a.size and a.max() <= 1.0 else 1.0
        a = a * scale
    else:
        a = a.astype(np.float64) * (255.0 / 65535.0)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def to_rgb(im: Image.Image, background: Color = "white") -> Image.Image:
    """Any Pillow image -> 8-bit RGB, with transparency composited on `background`."""
    if im.mode in ("I", "F") or im.mode.startswith("I;"):
        im = _high_bit_depth_to_l(im)
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    try:
        if not has_alpha:
            return im if im.mode == "RGB" else im.convert("RGB")
        rgba = im.convert("RGBA")
    except ValueError:  # e.g. LAB, HSV: Pillow has no direct conversion
        raise E4EError(f"unsupported colour mode {im.mode!r}") from None
    base = Image.new("RGBA", rgba.size, parse_color(background) + (255,))
    return Image.alpha_composite(base, rgba).convert("RGB")


def fit_square(im: Image.Image, size: int | tuple[int, int], fit: str = "crop",
               background: Color = "white", resample=Image.Resampling.LANCZOS) -> Image.Image:
    """Resize to `size` (int -> square). crop: centre-crop to the target aspect; pad: letterbox with
    `background`; stretch: ignore the aspect ratio."""
    if fit not in FITS:
        raise E4EError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")
    tw, th = (size, size) if isinstance(size, int) else size
    if tw < 1 or th < 1:
        raise E4EError(f"image size must be positive, got {size!r}")
    w, h = im.size
    if fit == "crop":
        return ImageOps.fit(im, (tw, th), method=resample)
    if fit == "pad":
        return ImageOps.pad(im, (tw, th), method=resample, color=parse_color(background))
    return im if (w, h) == (tw, th) else im.resize((tw, th), resample)


def load_image(path: str | os.PathLike, size: int | tuple[int, int] | None = None, *, fit: str = "crop",
               background: Color = "white", max_pixels: int | None = MAX_PIXELS) -> Image.Image:
    """Read any image file as 8-bit RGB, optionally resized (see `fit_square`). Bad input -> E4EError."""
    path = Path(path)
    if not path.exists():
        raise E4EError(f"{path}: no such file")
    if path.is_dir():
        raise E4EError(f"{path}: is a folder, not an image file")
    try:
        if path.stat().st_size == 0:
            raise E4EError(f"{path}: empty file (0 bytes)")
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; we want a clean error either way.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if size is not None and im.format == "JPEG":
                    im.draft(im.mode, (size, size) if isinstance(size, int) else size)
                w, h = im.size
                if max_pixels is not None and w * h > max_pixels:
                    raise E4EError(f"{path}: image too large: {w}x{h} = {w * h / 1e6:.0f} Mpx, over the "
                                   f"{max_pixels / 1e6:.0f} Mpx limit; downscale it first")
                im.seek(0)
                im.load()
                try:
                    im = ImageOps.exif_transpose(im)
                except Exception:  # a broken EXIF block should not reject good pixels
                    pass
                try:
                    im = to_rgb(im, background)
                except E4EError as e:
                    raise E4EError(f"{path}: {e}") from None
    except E4EError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        limit = (Image.MAX_IMAGE_PIXELS or 0) / 1e6
        raise E4EError(f"{path}: image too large: over Pillow's decompression-bomb limit "
                       f"(~{limit:.0f} Mpx); downscale it first") from None
    except UnidentifiedImageError:
        raise E4EError(f"{path}: not an image file (or an unsupported format)") from None
    except PermissionError:
        raise E4EError(f"{path}: permission denied") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as e:
        # Pillow reports truncated/corrupt data with a zoo of exception types.
        raise E4EError(f"{path}: cannot decode image, file is corrupt or truncated ({_one_line(e)})") from None
    if size is not None:
        im = fit_square(im, size, fit, background)
    return im


def iter_image_paths(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Expand files, folders (recursive, sorted, image extensions only, hidden entries skipped) and glob
    patterns (sorted, image extensions only) into image paths, each once, in input order.
    A file named explicitly is yielded whatever its extension. Missing input -> E4EError."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    seen = set()

    def fresh(p: Path) -> bool:
        key = os.path.normcase(os.path.abspath(p))
        if key in seen:
            return False
        seen.add(key)
        return True

    def is_image(p: Path) -> bool:
        return p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith(".")

    for item in inputs:
        p = Path(item)
        if p.is_file():
            if fresh(p):
                yield p
        elif p.is_dir():
            found = []
            for root, dirs, files in os.walk(p, followlinks=False):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                found.extend(Path(root) / f for f in files)
            for f in sorted((f for f in found if is_image(f)), key=lambda f: f.relative_to(p).as_posix()):
                if fresh(f):
                    yield f
        elif glob.has_magic(str(item)):
            matches = sorted(Path(m) for m in glob.glob(str(item), recursive=True))
            images = [m for m in matches if is_image(m)]
            if not images:
                raise E4EError(f"{item}: no image files match this pattern")
            for f in images:
                if fresh(f):
                    yield f
        else:
            raise E4EError(f"{item}: no such file or folder")


def to_tensor(images: Image.Image | Sequence[Image.Image]) -> torch.Tensor:
    """PIL image(s) of one size -> float tensor (N, 3, H, W) in [-1, 1]."""
    if isinstance(images, Image.Image):
        images = [images]
    if not images:
        raise E4EError("to_tensor: no images given")
    sizes = {im.size for im in images}
    if len(sizes) > 1:
        raise E4EError(f"to_tensor: images differ in size {sorted(sizes)}; pass size= to load_image")
    arr = np.stack([np.asarray(im if im.mode == "RGB" else to_rgb(im), dtype=np.uint8) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _to_uint8(t: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> uint8 (N, H, W, 3)."""
    t = t.detach().float().cpu()
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    if t.shape[1] != 3:
        raise E4EError(f"expected images with 1 or 3 channels, got shape {tuple(t.shape)}")
    t = t.nan_to_num(0.0).clamp(-1, 1).add(1).mul(127.5).round()
    return t.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def to_pil(images: torch.Tensor) -> Image.Image | list[Image.Image]:
    """(3, H, W) -> one PIL image; (N, 3, H, W) -> list. Values in [-1, 1] (clamped)."""
    if images.dim() == 3:
        return Image.fromarray(_to_uint8(images[None])[0], "RGB")
    if images.dim() != 4:
        raise E4EError(f"to_pil: expected (3,H,W) or (N,3,H,W), got shape {tuple(images.shape)}")
    return [Image.fromarray(a, "RGB") for a in _to_uint8(images)]


def make_grid(images: torch.Tensor | Sequence[Image.Image], nrow: int = 8, padding: int = 2,
              pad_color: Color = "black") -> Image.Image:
    """Tile images row-major, `nrow` per row, into one RGB image."""
    if isinstance(images, torch.Tensor):
        arrs = list(_to_uint8(images if images.dim() == 4 else images[None]))
    else:
        arrs = [np.asarray(to_rgb(im), dtype=np.uint8) for im in images]
    if not arrs:
        raise E4EError("make_grid: no images given")
    h = max(a.shape[0] for a in arrs)
    w = max(a.shape[1] for a in arrs)
    ncol = max(1, min(nrow, len(arrs)))
    nrows = math.ceil(len(arrs) / ncol)
    grid = np.empty((nrows * (h + padding) + padding, ncol * (w + padding) + padding, 3), np.uint8)
    grid[:] = parse_color(pad_color)
    for i, a in enumerate(arrs):
        y = padding + (i // ncol) * (h + padding)
        x = padding + (i % ncol) * (w + padding)
        grid[y:y + a.shape[0], x:x + a.shape[1]] = a
    return Image.fromarray(grid, "RGB")


def label_columns(grid: Image.Image, labels: Sequence[str], ncol: int, padding: int = 2) -> Image.Image:
    """A header row above `grid` with labels[k] centred over column k (shortened to fit the column)."""
    from PIL import ImageDraw

    from e4e.plot import font
    col = (grid.size[0] - padding) // max(1, ncol)
    size = max(9, min(14, col // 6))
    f = font(size)
    head = Image.new("RGB", (grid.size[0], size + 8), "white")
    draw = ImageDraw.Draw(head)
    for k, text in enumerate(labels[:ncol]):
        text = str(text)
        while len(text) > 1 and draw.textlength(text, font=f) > col - 2:
            text = text[:-1]
        w = draw.textlength(text, font=f)
        draw.text((padding + k * col + (col - padding - w) / 2, 3), text, fill="black", font=f)
    out = Image.new("RGB", (grid.size[0], grid.size[1] + head.size[1]), "white")
    out.paste(head, (0, 0))
    out.paste(grid, (0, head.size[1]))
    return out


def save_grid(images: torch.Tensor | Sequence[Image.Image], path: str | os.PathLike, nrow: int = 8,
              padding: int = 2, pad_color: Color = "black", labels: Sequence[str] | None = None) -> Path:
    """Save a grid of images (tensor (N,3,H,W) in [-1,1] or PIL images) atomically; creates parent folders.
    labels: one per column, drawn in a header row."""
    from e4e.outputs import atomic_write
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise E4EError(f"{path}: unknown image format {path.suffix!r} (use .png or .jpg)")
    grid = make_grid(images, nrow, padding, pad_color)
    if labels:
        n = len(images) if not isinstance(images, torch.Tensor) or images.dim() == 4 else 1
        grid = label_columns(grid, labels, max(1, min(nrow, n)), padding)
    return atomic_write(path, lambda f: grid.save(f, format=fmt))
