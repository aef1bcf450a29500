"""Latents in the formats users hold, read and written by file extension.

In:  a path ending in
  .npz  ours (`e4e.latents`: name -> (n_styles, D) plus JSON metadata), or any npz of per-name arrays
  .pt   the official e4e inference output: a dict name -> W+ code ((n_styles, D) or (1, n_styles, D)),
        or one (N, n_styles, D) tensor (names "0", "1", ...). Read with torch.load(weights_only=True).
  .npy  one array: W+ (N, n_styles, D), or W (N, D) / (D,) as `e4e generate` writes (names "0", ...)
Out: a `Latents`. W codes stay (N, 1, D) with meta["space"] = "w" until `to_wplus` repeats them over a
generator's styles, since only the generator knows how many styles there are.

Writing goes the other way (`write_latents`): .npz keeps everything; .pt writes the official dict
(metadata is lost, as the official format has none); .npy writes the (N, n_styles, D) array in name order.
Anything else is a one-line E4EError naming the formats.
"""
from pathlib import Path

import numpy as np
import torch

from e4e.errors import E4EError
from e4e.latents import Latents, load_latents, save_latents

FORMATS = (".npz", ".pt", ".npy")


def _unsupported(path: Path) -> E4EError:
    return E4EError(f"{path}: latents must be .npz (e4e invert), .pt (official e4e: dict name -> W+) or .npy "
                    f"(W or W+ array), not {path.suffix or 'a file without extension'!r}")


def _from_array(path: Path, a: torch.Tensor, names=None) -> Latents:
    """(N, n, D) W+, (N, D) or (D,) W -> Latents; W kept as (N, 1, D) marked meta space=w."""
    a = torch.as_tensor(a).float()
    meta = {"source": {"file": path.name, "format": path.suffix[1:]}}
    if a.ndim == 1:
        a = a[None]
    if a.ndim == 2:
        a, meta["space"] = a[:, None], "w"
    if a.ndim != 3:
        raise E4EError(f"{path}: expected W+ codes (N, n_styles, D) or W codes (N, D), got shape {tuple(a.shape)}")
    names = names if names is not None else [str(i) for i in range(a.shape[0])]
    return Latents(names, a, meta)


def read_latents(path) -> Latents:
    """Any supported latents file -> Latents (see the module docstring)."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise _unsupported(path)
    if not path.is_file():
        raise E4EError(f"{path}: no such latents file")
    if path.suffix.lower() == ".npz":
        return load_latents(path)
    if path.suffix.lower() == ".npy":
        try:
            a = np.load(path, allow_pickle=False)
        except Exception as e:
            raise E4EError(f"{path}: not a numpy .npy array ({' '.join(str(e).split()) or type(e).__name__})") from None
        return _from_array(path, torch.from_numpy(np.asarray(a, dtype=np.float32)))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise E4EError(f"{path}: not a readable torch .pt file ({' '.join(str(e).split())[:200] or type(e).__name__})") from None
    if torch.is_tensor(obj):
        return _from_array(path, obj)
    if isinstance(obj, dict) and obj and all(torch.is_tensor(v) for v in obj.values()):
        codes = [v.float().reshape(-1, *v.shape[-2:]) if v.ndim >= 2 else v.float()[None] for v in obj.values()]
        if any(c.shape[0] != 1 for c in codes) or len({tuple(c.shape) for c in codes}) != 1:
            shapes = sorted({tuple(v.shape) for v in obj.values()})[:4]
            raise E4EError(f"{path}: expected one W+ code (n_styles, D) per name, got shapes {shapes}")
        return _from_array(path, torch.cat(codes), [str(k) for k in obj])
    raise E4EError(f"{path}: expected a dict of name -> W+ code or one (N, n_styles, D) tensor, "
                   f"got {type(obj).__name__}")


def to_wplus(latents: Latents, n_styles: int) -> Latents:
    """W codes (N, 1, D) repeated to (N, n_styles, D); W+ codes unchanged."""
    if latents.meta.get("space") != "w":
        return latents
    meta = {k: v for k, v in latents.meta.items() if k != "space"}
    return Latents(latents.names, latents.codes.expand(-1, n_styles, -1).clone(), meta)


def write_latents(path, latents: Latents) -> Path:
    """Latents -> .npz (ours, with metadata), .pt (official dict name -> (n_styles, D)) or .npy (array)."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise _unsupported(path)
    if ext == ".npz":
        return save_latents(path, latents)
    from e4e.outputs import atomic_torch_save, atomic_write
    if ext == ".pt":
        return atomic_torch_save({n: latents.codes[i].clone() for i, n in enumerate(latents.names)}, path)
    return atomic_write(path, lambda f: np.save(f, latents.codes.numpy().astype(np.float32)))
