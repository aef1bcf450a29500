"""Linear latent directions (InterFaceGAN style): latent + strength * direction.

A direction is kept in one of two canonical shapes, the ones the official e4e files use:
- (1, D): one vector added to every style (age.pt, smile.pt, and anything `fit_direction` returns);
- (1, n_styles, D): one vector per style (pose.pt is (1, 18, 512)).
"""
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from e4e.errors import E4EError


def as_direction(t, where: str = "direction") -> torch.Tensor:
    """[D] or [1, D] -> (1, D); [n, D] (n > 1) or [1, n, D] -> (1, n, D); float32 on the CPU."""
    t = torch.as_tensor(np.ascontiguousarray(t) if isinstance(t, np.ndarray) else t).detach().float().cpu()
    if t.ndim == 1:
        t = t.unsqueeze(0)
    elif t.ndim == 2 and t.shape[0] > 1:
        t = t.unsqueeze(0)
    elif t.ndim == 3 and t.shape[0] != 1:
        raise E4EError(f"{where}: shape {tuple(t.shape)}; a per-style direction must be [1, n_styles, D]")
    elif t.ndim not in (2, 3):
        raise E4EError(f"{where}: shape {tuple(t.shape)}; expected [D], [1, D], [n_styles, D] or [1, n_styles, D]")
    if not torch.isfinite(t).all():
        raise E4EError(f"{where}: contains NaN or infinite values")
    return t


def load_direction(path) -> torch.Tensor:
    """A direction from .pt (a tensor, read with weights_only=True) or .npy, in canonical shape."""
    path = Path(path)
    if not path.is_file():
        raise E4EError(f"{path}: no such direction file")
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise E4EError(f"{path}: not a plain numeric .npy array ({e})") from None
        return as_direction(arr, str(path))
    from e4e.checkpoints.io import torch_load
    obj = torch_load(path)
    if isinstance(obj, dict) and len(obj) == 1:  # tolerate {"direction": tensor}
        obj = next(iter(obj.values()))
    if not torch.is_tensor(obj):
        raise E4EError(f"{path}: holds a {type(obj).__name__}, expected one direction tensor")
    return as_direction(obj, str(path))


def save_direction(path, direction: torch.Tensor) -> None:
    """Writes the official layout: a float32 tensor (.pt) or array (.npy) of canonical shape."""
    from e4e.outputs import atomic_write
    path = Path(path)
    d = as_direction(direction)
    if path.suffix == ".npy":
        atomic_write(path, lambda f: np.save(f, d.numpy()))
    else:
        atomic_write(path, lambda f: torch.save(d.contiguous(), f))


def check_direction(direction, n_styles: int | None, dim: int, where: str = "direction", hint: str = "") -> None:
    """Raise E4EError unless `direction` (any shape as_direction takes) fits latents with n_styles styles
    (None: plain W) of width dim. hint: appended to the message (what to do about it)."""
    d = as_direction(direction, where)
    hint = f": {hint}" if hint else ""
    if d.shape[-1] != dim:
        raise E4EError(f"{where} is {d.shape[-1]}-d but the latents are {dim}-d (wrong generator?){hint}")
    if d.ndim == 3:
        if n_styles is None:
            raise E4EError(f"{where} has one vector per style ({d.shape[1]}); it needs W+ latents, not W{hint}")
        if d.shape[1] != n_styles:
            raise E4EError(f"{where} has {d.shape[1]} styles but the latents have {n_styles} "
                           f"(made for a different generator resolution){hint}")


def _style_mask(styles, n: int, like: torch.Tensor) -> torch.Tensor:
    idx = sorted(set(int(s) for s in styles))
    if not idx or idx[0] < 0 or idx[-1] >= n:
        raise E4EError(f"style indices {idx} out of range for {n} styles (0..{n - 1})")
    mask = torch.zeros(n, 1, dtype=like.dtype, device=like.device)
    mask[idx] = 1
    return mask


def apply_direction(latents: torch.Tensor, direction: torch.Tensor, strength=1.0,
                    styles: Iterable[int] | None = None) -> torch.Tensor:
    """latents + strength * direction.

    latents: W (B, D) or W+ (B, n, D). strength: a number or one per sample (B,).
    styles: only these style indices are edited (W+ only; SeFa / layer-restricted edits).
    """
    if latents.ndim not in (2, 3):
        raise E4EError(f"latents must be W (B, D) or W+ (B, n_styles, D), got shape {tuple(latents.shape)}")
    direction = as_direction(direction)
    n = latents.shape[1] if latents.ndim == 3 else None
    check_direction(direction, n, latents.shape[-1])
    d = direction.to(latents)
    if latents.ndim == 2:
        d = d.reshape(1, -1)
    s = torch.as_tensor(strength, dtype=latents.dtype, device=latents.device)
    if s.ndim == 1:
        if s.shape[0] != latents.shape[0]:
            raise E4EError(f"{s.shape[0]} strengths for {latents.shape[0]} latents")
        s = s.reshape(-1, *([1] * (latents.ndim - 1)))
    elif s.ndim > 1:
        raise E4EError("strength must be a number or one number per latent")
    if not torch.isfinite(s).all():
        raise E4EError(f"strength must be finite, got {strength}")
    step = s * (d if latents.ndim == 2 else d.expand(1, n, -1))
    if styles is not None:
        if latents.ndim == 2:
            raise E4EError("restricting an edit to some styles needs W+ latents (B, n_styles, D)")
        step = step * _style_mask(styles, n, latents)
    return latents + step


def sweep_direction(latents: torch.Tensor, direction: torch.Tensor, strengths: Sequence[float],
                    styles: Iterable[int] | None = None) -> torch.Tensor:
    """One edit per strength: (B, ...) -> (B, S, ...), row b holding latent b at every strength in order."""
    strengths = list(strengths)
    if not strengths:
        raise E4EError("a sweep needs at least one strength")
    styles = None if styles is None else list(styles)
    return torch.stack([apply_direction(latents, direction, s, styles) for s in strengths], dim=1)


def strength_range(start: float, stop: float, steps: int) -> list[float]:
    """Evenly spaced strengths, both ends included (the official notebook sweeps about -5..5)."""
    if steps < 1:
        raise E4EError("steps must be at least 1")
    return [float(x) for x in torch.linspace(start, stop, steps, dtype=torch.float64)]
