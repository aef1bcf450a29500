"""The Python API, mirroring the command line:

    import e4e
    inv = e4e.load("e4e_ffhq_encode.pt")          # or e4e.load() for the embedded model
    lat = e4e.invert(["a.png", "faces/"], inv)     # -> Latents (names, W+ codes, checkpoint identity)
    e4e.save_latents("latents.npz", lat)
    edited = e4e.edit(lat, direction="age.pt", strength=3)
    images = inv.decode(edited.codes)              # (N, 3, H, W) in [-1, 1]

`inv.invert(images)` (PIL images, paths or a tensor) gives (reconstructions, codes) directly.
"""
from pathlib import Path

import torch
import torch.nn.functional as F

from e4e.errors import E4EError
from e4e.devices import resolve_device  # noqa: F401  (e4e.api.resolve_device: what the commands use)
from e4e.latents import Latents, check_compatible, load_latents, save_latents
from e4e.pipeline import inversion_meta  # noqa: F401  (e4e.api.inversion_meta: older imports)


def checkpoint_path(checkpoint=None) -> Path:
    """The given checkpoint, or the embedded default model when None."""
    if checkpoint is None:
        from e4e.assets import default_inverter_path
        return default_inverter_path()
    path = Path(checkpoint)
    if not path.is_file():
        raise E4EError(f"{path}: no such checkpoint file (--checkpoint)")
    return path


def load(checkpoint=None, device="cpu"):
    """An Inverter (eval mode) from an official e4e/pSp .pt or e4e .safetensors; None = embedded model.
    The file it came from is kept as `inv.checkpoint_path` so latents can record its identity."""
    from e4e.checkpoints import load_inverter
    path = checkpoint_path(checkpoint)
    inv = load_inverter(path, log=lambda *a: None).to(resolve_device(device)).eval()
    inv.checkpoint_path = path
    return inv


def resize_images(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """Downscale by area averaging (the official face_pool), upscale bilinearly; None keeps the size."""
    if not size or images.shape[-1] == size:
        return images
    if size < images.shape[-1]:
        return F.adaptive_avg_pool2d(images, (size, size))
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


@torch.no_grad()
def invert(images, inverter=None, batch_size: int = 8, fit: str = "crop", precision: str = "auto") -> Latents:
    """Image files / folders / globs, PIL images or a (B,3,H,W) tensor in [-1,1] -> Latents, through
    `e4e.pipeline` (the names and image conversion of `e4e invert`). What was converted is listed in
    `latents.meta["notes"]`. Bad files raise E4EError (the `e4e invert` command skips them instead).
    precision: e4e.fast's ("auto": TF32 on CUDA, fp32 on CPU; "fp32": the strict reference)."""
    from e4e.fast import precision_scope
    from e4e.pipeline import load_batch
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise E4EError(f"invert: batch_size must be a positive integer, got {batch_size!r}")
    inv = inverter if inverter is not None else load()
    dev = next(inv.parameters()).device
    names, x, notes = load_batch(images, inv.input_size, fit)
    if not names:
        raise E4EError("invert: no images given")
    with precision_scope(precision, dev):
        codes = [inv.encode(b.to(dev)).float().cpu() for b in x.split(batch_size)]
    meta = inversion_meta(inv, fit) | ({"notes": notes} if notes else {})
    return Latents(names, torch.cat(codes), meta)


def edit(latents, direction=None, strength: float = 1.0, styles=None, ganspace=None, ganspace_edit=None):
    """Edit W+ codes (a Latents or a (B, n_styles, D) tensor; returns the same kind).

    direction: a tensor or an InterFaceGAN .pt/.npy file, added as strength * direction (only to
    `styles` if given). ganspace: a PCA dict or file, with ganspace_edit = (pc, start, end, strength)
    or 'pc,start,end,strength' or a preset name (the official GANSpace edit)."""
    from e4e import editing
    codes = latents.codes if isinstance(latents, Latents) else torch.as_tensor(latents)
    if (direction is None) == (ganspace is None):
        raise E4EError("edit: give exactly one of direction= or ganspace=")
    if direction is not None:
        d = editing.load_direction(direction) if isinstance(direction, (str, Path)) else direction
        out = editing.apply_direction(codes, d, strength, styles)
    else:
        pca = editing.load_pca(ganspace) if isinstance(ganspace, (str, Path)) else ganspace
        if ganspace_edit is None:
            raise E4EError("edit: ganspace= needs ganspace_edit=(pc, start, end, strength)")
        spec = (editing.resolve_edit(ganspace_edit, n_styles=codes.shape[1]) if isinstance(ganspace_edit, str)
                else ganspace_edit)
        out = editing.ganspace_edit(codes, pca, spec)
    if isinstance(latents, Latents):
        return Latents(latents.names, out, dict(latents.meta))
    return out


__all__ = ["Latents", "check_compatible", "checkpoint_path", "edit", "invert", "load", "load_latents",
           "resize_images", "save_latents"]
