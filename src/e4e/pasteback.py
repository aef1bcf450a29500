"""Paste-back: an edited aligned face composited back into the photo it was cut from.

In:  the source photo, the aligned (edited) face image of any size, and the face quad `e4e.align` cut it
     with (4 corners in source pixels, order top-left, bottom-left, bottom-right, top-right; the quad
     is a square, so the alignment is a similarity transform).
Out: the photo with the face replaced, blended through a soft mask that fades to the photo over the
     outer `feather` share of the aligned square, so no seam shows.

Geometry (Pillow's continuous coordinates, pixel centres at +0.5): `align_face` samples the aligned
image at source point q0 + 0.5 + (X / S) * (q3 - q0) + (Y / S) * (q1 - q0) for aligned point (X, Y) of
an S x S image. `source_to_aligned` is the inverse of that map, as the 6 coefficients Pillow's AFFINE
transform takes, so one resampling warps the face (and the mask) back into the photo.

`e4e align` records every quad in DIR/alignment.json (`e4e.align.source_quad`: the square its output
really samples, including the half-pixel shift of its shrink step for large faces) ({name: {"source", "quad", "size"}}); `e4e edit
--paste-back DIR/alignment.json` reads it.
"""
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from e4e.errors import E4EError

ALIGNMENT_FILE = "alignment.json"


def source_to_aligned(quad, size: int) -> tuple[float, ...]:
    """Pillow AFFINE coefficients (a, b, c, d, e, f): source point (x, y) -> aligned point
    (a x + b y + c, d x + e y + f) of a size x size aligned image cut with `quad`."""
    q = np.asarray(quad, dtype=np.float64).reshape(4, 2)
    ex, ey = q[3] - q[0], q[1] - q[0]
    m = np.stack([ex / (ex @ ex), ey / (ey @ ey)]) * size  # rows: aligned X, Y per source offset
    t = q[0] + 0.5
    off = -m @ t
    return (m[0, 0], m[0, 1], off[0], m[1, 0], m[1, 1], off[1])


def soft_mask(size: int, feather: float = 0.1) -> Image.Image:
    """An L-mode size x size mask: 255 inside, falling linearly to 0 over the outer `feather` share of
    each side, then slightly blurred so the fall-off has no corner."""
    if not 0 <= feather < 0.5:
        raise E4EError(f"paste-back feather must be in [0, 0.5), got {feather}")
    if feather == 0:
        return Image.new("L", (size, size), 255)
    ramp = np.clip((np.minimum(np.arange(size), np.arange(size)[::-1]) + 0.5) / (feather * size), 0, 1)
    mask = np.minimum(ramp[:, None], ramp[None, :])
    im = Image.fromarray(np.uint8(np.rint(mask * 255)), "L")
    return im.filter(ImageFilter.GaussianBlur(max(0.5, feather * size / 8)))


def paste_back(source: Image.Image, aligned: Image.Image, quad, feather: float = 0.1) -> Image.Image:
    """Warp `aligned` back into `source` through the inverse alignment and blend with a soft mask."""
    source = source.convert("RGB")
    size = aligned.size[0]
    if aligned.size[1] != size:
        raise E4EError(f"paste-back: the aligned face must be square, got {aligned.size}")
    coeffs = source_to_aligned(quad, size)
    face = aligned.convert("RGB").transform(source.size, Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)
    mask = soft_mask(size, feather).transform(source.size, Image.Transform.AFFINE, coeffs,
                                              Image.Resampling.BILINEAR, fillcolor=0)
    return Image.composite(face, source, mask)


def save_alignment(out_dir, records: dict) -> Path:
    """{aligned name: {"source": path, "quad": 4x2, "size": px}} -> out_dir/alignment.json, atomically."""
    from e4e.outputs import atomic_write
    text = json.dumps(records, indent=1)
    return atomic_write(Path(out_dir) / ALIGNMENT_FILE, lambda f: f.write(text), mode="w")


def load_alignment(path) -> dict:
    """alignment.json (or the folder holding it) -> {name: {"source": Path, "quad": (4, 2) array}}."""
    path = Path(path)
    if path.is_dir():
        path = path / ALIGNMENT_FILE
    if not path.is_file():
        raise E4EError(f"{path}: no alignment record (made by `e4e align IMAGES -o DIR` as DIR/{ALIGNMENT_FILE})")
    try:
        raw = json.loads(path.read_text())
        out = {}
        for name, r in raw.items():
            src = Path(r["source"])
            out[name] = {"source": src if src.is_absolute() else path.parent / src,
                         "quad": np.asarray(r["quad"], dtype=np.float64).reshape(4, 2)}
    except (ValueError, KeyError, TypeError) as e:
        raise E4EError(f"{path}: not an alignment record ({type(e).__name__}: {e})") from None
    return out
