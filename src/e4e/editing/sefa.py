"""SeFa, closed-form factorisation of latent semantics (Shen & Zhou 2021).

Every style vector w reaches the synthesis network only through the affine "modulation" layers
s = A w + b. Directions n that change s the most maximise |A n|^2, so they are the top eigenvectors
of A^T A, A stacking the (effective) modulation weights of the chosen layers.

Style indices follow rosinality's synthesis: conv1 reads style 0, convs[k] style k+1, to_rgb1 style 1,
to_rgbs[j] style 2j+3. Like the SeFa and official e4e code, to_rgb layers are left out by default and
each output row of A is scaled to unit norm first (normalize=True). The official e4e editings/sefa.py
returns the indices of the convs it used (layer - 1) and edits those styles, one style off from the
layers it factorised; here `styles` are the style indices of the factorised layers themselves.
"""
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from e4e.errors import E4EError


@dataclass
class SefaResult:
    directions: torch.Tensor  # (K, D), unit rows, by decreasing eigenvalue
    eigenvalues: torch.Tensor  # (K,)
    styles: list[int]  # style indices the factorised layers read: edit only these


def style_modulations(generator, include_to_rgb: bool = False) -> list[tuple[int, str, torch.nn.Module]]:
    """(style index, module name, modulation EqualLinear) for every styled layer, in synthesis order."""
    out = [(0, "conv1", generator.conv1.conv.modulation)]
    if include_to_rgb:
        out.append((1, "to_rgb1", generator.to_rgb1.conv.modulation))
    for k, conv in enumerate(generator.convs):
        out.append((k + 1, f"convs.{k}", conv.conv.modulation))
    if include_to_rgb:
        for j, rgb in enumerate(generator.to_rgbs):
            out.append((2 * j + 3, f"to_rgbs.{j}", rgb.conv.modulation))
    return sorted(out, key=lambda t: t[0])


@torch.no_grad()
def sefa_directions(generator, layers: Iterable[int] | None = None, include_to_rgb: bool = False,
                    normalize: bool = True, n_directions: int | None = None) -> SefaResult:
    """Top eigenvectors of A^T A over the modulation layers reading the given style indices.

    layers: style indices (e.g. [2, 3, 4, 5] as in the official demo); None = every styled layer.
    """
    mods = style_modulations(generator, include_to_rgb)
    n_latent = generator.n_latent
    if layers is not None:
        wanted = sorted(set(int(i) for i in layers))
        if not wanted or wanted[0] < 0 or wanted[-1] >= n_latent:
            raise E4EError(f"SeFa layers {wanted} out of range for {n_latent} styles (0..{n_latent - 1})")
        mods = [m for m in mods if m[0] in wanted]
        missing = sorted(set(wanted) - {m[0] for m in mods})
        if missing:
            hint = "" if include_to_rgb else " (only a to_rgb layer reads them: pass include_to_rgb)"
            raise E4EError(f"SeFa: no modulation layer reads style(s) {missing}{hint}")
    # equalised lr: the effective affine weight is weight * scale (scale already includes lr_mul)
    a = torch.cat([m.weight.detach().double().cpu() * m.scale for _, _, m in mods])  # (sum in_ch, D)
    if normalize:
        a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
    evals, evecs = torch.linalg.eigh(a.T @ a)  # ascending
    evals, evecs = evals.flip(0), evecs.flip(1).T
    pivot = evecs.abs().argmax(dim=1)
    evecs = evecs * torch.sign(evecs.gather(1, pivot[:, None]))
    k = evecs.shape[0] if n_directions is None else max(1, min(int(n_directions), evecs.shape[0]))
    return SefaResult(directions=evecs[:k].float().contiguous(), eigenvalues=evals[:k].float(),
                      styles=sorted({m[0] for m in mods}))
