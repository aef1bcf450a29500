"""GANSpace (Härkönen et al. 2020): PCA of W, and the official e4e edit along one component.

The PCA file layout is the official one (editings/ganspace_pca/*.pt):
    {"mean": (1, D), "comp": (K, 1, D) unit rows sorted by variance, "std": (K,) sqrt of explained variance}

The official edit (encoder4editing editings/ganspace.py, `get_delta`/`edit`) takes (pc, start, end, strength)
and SETS the coordinate of component pc to `strength`, in units of that component's std:
    coord = <latent[0] - mean, comp[pc]> / std[pc]        (style 0 of each latent only)
    delta = (strength - coord) * comp[pc] * std[pc]        added to styles start..end-1
so the same delta goes to every edited style, computed from style 0's coordinate.
"""
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from e4e.errors import E4EError

# (pc, start, end, strength) from the official inference demo; the face ones come from the GANSpace paper.
PRESETS = {
    "ffhq": {
        "eye_openness": (54, 7, 8, 20),
        "smile": (46, 4, 5, -20),
        "trimmed_beard": (58, 7, 9, 20),
        "white_hair": (57, 7, 10, -24),
        "lipstick": (34, 10, 11, 20),
    },
    "cars": {
        "viewpoint_1": (0, 0, 5, 2),
        "viewpoint_2": (0, 0, 5, -2),
        "cube": (16, 3, 6, 25),
        "color": (22, 9, 11, -8),
        "grass": (41, 9, 11, -18),
    },
}


# -- computing the PCA --------------------------------------------------------------------------------
def _pca_from_moments(total: torch.Tensor, outer: torch.Tensor, n: int, n_components: int) -> dict:
    mean = total / n
    cov = (outer - n * torch.outer(mean, mean)) / (n - 1)
    evals, evecs = torch.linalg.eigh((cov + cov.T) / 2)  # ascending
    evals, evecs = evals.flip(0)[:n_components], evecs.flip(1)[:, :n_components].T
    # eigenvectors have no intrinsic sign; fix one so results are reproducible across LAPACK builds
    pivot = evecs.abs().argmax(dim=1)
    evecs = evecs * torch.sign(evecs.gather(1, pivot[:, None]))
    return {"mean": mean[None].float(), "comp": evecs[:, None].float().contiguous(),
            "std": evals.clamp_min(0).sqrt().float()}


def pca_from_samples(w: torch.Tensor, n_components: int = 80, batch: int = 65536) -> dict:
    """PCA of samples w (N, D), computed in float64 on the CPU from streamed first and second moments."""
    if w.ndim != 2 or w.shape[0] < 2:
        raise E4EError(f"PCA needs samples (N >= 2, D), got shape {tuple(w.shape)}")
    d = w.shape[1]
    if not 1 <= n_components <= d:
        raise E4EError(f"n_components must be in 1..{d}, got {n_components}")
    total = torch.zeros(d, dtype=torch.float64)
    outer = torch.zeros(d, d, dtype=torch.float64)
    for chunk in w.split(batch):
        c = chunk.detach().cpu().double()
        total += c.sum(0)
        outer += c.T @ c
    return _pca_from_moments(total, outer, w.shape[0], n_components)


@torch.no_grad()
def ganspace_pca(source, n_components: int = 80, n_samples: int = 100_000, seed: int = 0,
                 batch: int = 10_000) -> dict:
    """GANSpace PCA of W. source: a Generator (W = mapping(z), z ~ N(0, I) seeded) or samples (N, D)."""
    if torch.is_tensor(source):
        return pca_from_samples(source, n_components)
    if not hasattr(source, "mapping"):
        raise E4EError(f"ganspace_pca needs a Generator or a (N, D) tensor, got {type(source).__name__}")
    if n_samples < 2:
        raise E4EError("ganspace_pca needs at least 2 samples")
    d = source.style_dim
    if not 1 <= n_components <= d:
        raise E4EError(f"n_components must be in 1..{d}, got {n_components}")
    device = next(source.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros(d, dtype=torch.float64)
    outer = torch.zeros(d, d, dtype=torch.float64)
    done = 0
    while done < n_samples:
        k = min(batch, n_samples - done)
        w = source.mapping(torch.randn(k, d, generator=gen).to(device)).double().cpu()
        total += w.sum(0)
        outer += w.T @ w
        done += k
    return _pca_from_moments(total, outer, n_samples, n_components)


# -- files ---------------------------------------------------------------------------------------------
def check_pca(pca, where: str = "GANSpace PCA") -> dict:
    """Validate the official layout and return it as float32 CPU tensors."""
    if not isinstance(pca, dict) or not {"mean", "comp", "std"} <= set(pca):
        keys = ", ".join(map(str, pca)) if isinstance(pca, dict) else type(pca).__name__
        raise E4EError(f"{where}: expected a dict with mean, comp, std (got {keys})")
    out = {k: torch.as_tensor(np.asarray(pca[k]) if isinstance(pca[k], np.ndarray) else pca[k]).float().cpu()
           for k in ("mean", "comp", "std")}
    mean, comp, std = out["mean"], out["comp"], out["std"]
    d = mean.shape[-1]
    if mean.numel() != d or comp.numel() % d or std.ndim != 1 or comp.numel() // d != std.shape[0]:
        raise E4EError(f"{where}: inconsistent shapes mean {tuple(mean.shape)}, comp {tuple(comp.shape)}, "
                       f"std {tuple(std.shape)} (expected [1, D], [K, 1, D], [K])")
    out["mean"], out["comp"] = mean.reshape(1, d), comp.reshape(-1, 1, d)
    if not all(torch.isfinite(v).all() for v in out.values()):
        raise E4EError(f"{where}: holds NaN or infinite values")
    if (std <= 0).any():
        raise E4EError(f"{where}: std must be positive")
    return out


def load_pca(path) -> dict:
    """Official .pt dict, or GANSpace's own .npz cache (lat_mean, lat_comp, lat_stdev)."""
    path = Path(path)
    if not path.is_file():
        raise E4EError(f"{path}: no such GANSpace PCA file")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                raw = {k: z[k] for k in z.files}
        except Exception as e:  # numpy raises ValueError, BadZipFile, EOFError, OSError... on bad bytes
            msg = " ".join(str(e).split()) or type(e).__name__
            raise E4EError(f"{path}: truncated or unreadable .npz ({msg})") from None
        if "lat_comp" in raw:
            raw = {"mean": raw.get("lat_mean"), "comp": raw["lat_comp"], "std": raw.get("lat_stdev")}
            if raw["mean"] is None or raw["std"] is None:
                raise E4EError(f"{path}: GANSpace .npz without lat_mean / lat_stdev")
        return check_pca(raw, str(path))
    from e4e.checkpoints.io import torch_load
    return check_pca(torch_load(path), str(path))


def save_pca(path, pca: dict) -> None:
    from e4e.outputs import atomic_torch_save
    pca = check_pca(pca)
    atomic_torch_save({k: v.contiguous() for k, v in pca.items()}, path)


# -- editing -------------------------------------------------------------------------------------------
def _check_latents(latents: torch.Tensor, pca: dict) -> None:
    if latents.ndim != 3:
        raise E4EError(f"GANSpace edits need W+ latents (B, n_styles, D), got shape {tuple(latents.shape)}")
    if latents.shape[-1] != pca["mean"].shape[-1]:
        raise E4EError(f"GANSpace PCA is {pca['mean'].shape[-1]}-d but the latents are {latents.shape[-1]}-d")


def ganspace_coordinates(latents: torch.Tensor, pca: dict, pc: int) -> torch.Tensor:
    """Coordinate of every style on component pc, in std units: (B, n, D) -> (B, n)."""
    _check_latents(latents, pca)
    if not 0 <= pc < pca["std"].shape[0]:
        raise E4EError(f"component {pc} out of range (the PCA has {pca['std'].shape[0]})")
    comp = pca["comp"][pc, 0].to(latents)
    return ((latents - pca["mean"].to(latents)) @ comp) / float(pca["std"][pc])


def ganspace_edit(latents: torch.Tensor, pca: dict, edits, per_style: bool = False) -> torch.Tensor:
    """Apply (pc, start, end, strength) edits to W+ latents (B, n, D), the official way.

    edits: one tuple, or a sequence of tuples applied one after another (the official demo instead
    makes one output per edit: call this once per edit for that).
    per_style=False is the official rule (the coordinate is read on style 0 only); per_style=True reads
    it on each edited style, so every edited style ends exactly at `strength`.
    """
    _check_latents(latents, pca)
    if len(edits) == 4 and not isinstance(edits[0], Sequence):
        edits = [edits]
    n = latents.shape[1]
    out = latents
    for edit in edits:
        if len(edit) != 4:
            raise E4EError(f"a GANSpace edit is (pc, start, end, strength), got {edit!r}")
        pc, start, end, strength = int(edit[0]), int(edit[1]), int(edit[2]), float(edit[3])
        if not math.isfinite(strength):
            raise E4EError(f"GANSpace edit strength must be a finite number, got {strength}")
        if not 0 <= start < end <= n:
            raise E4EError(f"GANSpace edit styles {start}..{end - 1} out of range for {n} styles")
        coord = ganspace_coordinates(out, pca, pc)  # (B, n)
        coord = coord[:, start:end] if per_style else coord[:, :1].expand(-1, end - start)
        std = float(pca["std"][pc])
        comp = pca["comp"][pc, 0].to(out)
        delta = torch.zeros_like(out)
        delta[:, start:end] = (strength - coord)[..., None] * comp * std
        out = out + delta
    return out


# The generator each preset group was found on (number of W+ styles): a preset's component and style
# indices mean nothing for another generator, so they are refused there.
PRESET_STYLES = {"ffhq": 18, "cars": 16}


def resolve_edit(spec: str, presets: dict | None = None, n_styles: int | None = None) -> tuple[int, int, int, float]:
    """'pc,start,end,strength' or a preset name (optionally 'name=strength') -> an edit tuple.
    n_styles: the target generator's; a built-in preset made for a generator with another number of
    styles is refused."""
    builtin = presets is None
    presets = presets if presets is not None else {k: v for p in PRESETS.values() for k, v in p.items()}
    name, _, value = spec.partition("=")
    if builtin and n_styles is not None and name in presets:
        group = next(g for g, p in PRESETS.items() if name in p)
        if PRESET_STYLES[group] != n_styles:
            raise E4EError(f"GANSpace preset {name!r} was found on the {group} generator ({PRESET_STYLES[group]} "
                           f"styles), not this one ({n_styles} styles): give pc,start,end,strength instead")
    try:
        if name in presets:
            pc, start, end, strength = presets[name]
            edit = pc, start, end, float(value) if value else float(strength)
        else:
            parts = spec.split(",")
            if len(parts) != 4:
                raise ValueError
            edit = int(parts[0]), int(parts[1]), int(parts[2]), float(parts[3])
        if not math.isfinite(edit[3]):
            raise E4EError(f"GANSpace edit {spec!r}: the strength must be a finite number")
        return edit
    except ValueError:
        raise E4EError(f"GANSpace edit {spec!r}: expected 'pc,start,end,strength' or one of "
                       f"{', '.join(sorted(presets))}") from None
