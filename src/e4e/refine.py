"""Refining an encoder's inversion: latent optimisation from the e4e code, and pivotal tuning (PTI).

The encoder gives a good, editable starting code in one pass; both refinements trade time for lower
distortion:

- `optimize`: Adam on the W+ code itself (generator and noise fixed), L2 + a perceptual distance.
  Stays in the latent space, so edits keep working, but codes drift away from the well-behaved region
  the encoder targets as distortion falls (the paper's distortion-editability trade-off).
- `pti` (Roich et al. 2021, "Pivotal Tuning for Latent-based Editing of Real Images"): keep the code
  fixed as a pivot and fine-tune a copy of the generator around it instead. Defaults are the official
  PTI code's (configs/hyperparameters.py): Adam, lr 3e-4, 350 steps, L2 and LPIPS weights 1, and the
  optional locality regulariser with alpha 30, weights 0.1 / 0.1, one sample per step, truncation 0.5.
  The official code turns the regulariser on and stops once LPIPS <= 0.07; here both are opt-in
  (`locality=True`, `lpips_stop=0.07`) because the perceptual distance is pluggable and 0.07 only means
  something on LPIPS's scale.

Images are (B, 3, H, W) in [-1, 1]. The generator renders at its own resolution and the result is
pooled to the target's size before the losses (as e4e's face_pool does for 1024 -> 256), so targets can
be the 256 px images the encoder sees. Noise is the generator's fixed buffers (randomize_noise=False).
`lpips_fn` is any callable (x, y) -> distance (a scalar or per-image values, averaged): e4e.losses.LPIPS,
e4e.losses.EfficientNetPerceptual, or your own.
"""
from __future__ import annotations

import copy
import time
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from e4e.errors import E4EError

Perceptual = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

PTI_STEPS, PTI_LR = 350, 3e-4
PTI_LPIPS_STOP = 0.07  # official early stop (on AlexNet LPIPS); pass lpips_stop= to use it
OPT_STEPS, OPT_LR = 200, 5e-3  # PTI's first-inversion learning rate


class OptimizeResult(NamedTuple):
    codes: torch.Tensor  # (B, n_latent, D), detached
    images: torch.Tensor  # (B, 3, H, W) at the target's size
    report: dict


class PTIResult(NamedTuple):
    generator: nn.Module  # the tuned copy, in eval mode, parameters frozen
    images: torch.Tensor
    report: dict


def generator_of(model: nn.Module) -> nn.Module:
    """An Inverter's decoder, or the generator itself."""
    return model.decoder if hasattr(model, "decoder") and hasattr(model, "encoder") else model


def render(generator: nn.Module, codes: torch.Tensor, size: tuple[int, int], noise=None) -> torch.Tensor:
    """W+ codes -> images at `size` (average-pooled when the generator's size is a multiple)."""
    images, _ = generator(codes, input_is_latent=True, randomize_noise=False, noise=noise)
    h, w = images.shape[-2:]
    if (h, w) == tuple(size):
        return images
    if h % size[0] == 0 and w % size[1] == 0:
        return F.adaptive_avg_pool2d(images, size)
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)


def _check(generator: nn.Module, target: torch.Tensor, codes: torch.Tensor, what: str):
    if target.dim() != 4 or target.shape[1] != 3:
        raise E4EError(f"target must be images (B, 3, H, W) in [-1, 1], got shape {tuple(target.shape)}")
    n, d = generator.n_latent, generator.style_dim
    if codes.dim() != 3 or codes.shape[1:] != (n, d) or codes.shape[0] != target.shape[0]:
        raise E4EError(f"{what} must be W+ codes ({target.shape[0]}, {n}, {d}) for this generator and "
                       f"{target.shape[0]} target image(s), got {tuple(codes.shape)}")


def _distortion(images, target, lpips_fn) -> dict:
    out = {"l2": float(F.mse_loss(images, target))}
    if lpips_fn is not None:
        out["perceptual"] = float(torch.as_tensor(lpips_fn(images, target)).mean())
    return out


def _reconstruction_loss(images, target, lpips_fn, l2_weight, lpips_weight):
    """-> (weighted loss, perceptual value or None)."""
    loss = l2_weight * F.mse_loss(images, target) if l2_weight else images.new_zeros(())
    p = None
    if lpips_fn is not None and lpips_weight:
        p = lpips_fn(images, target).mean()
        loss = loss + lpips_weight * p
    return loss, p


def _steps(n: int, progress: bool, desc: str):
    if not progress:
        return range(n)
    from tqdm import tqdm
    return tqdm(range(n), desc=desc, unit="step", leave=False)


def optimize(model: nn.Module, target: torch.Tensor, init_codes: torch.Tensor, steps: int = OPT_STEPS,
             lr: float = OPT_LR, lpips_fn: Perceptual | None = None, l2_weight: float = 1.0,
             lpips_weight: float = 1.0, progress: bool = False) -> OptimizeResult:
    """Optimise W+ codes from `init_codes` (e.g. the encoder's) towards `target` with Adam on
    l2_weight * MSE + lpips_weight * lpips_fn. The model (Inverter or Generator) is left untouched:
    only the codes receive gradients."""
    g = generator_of(model)
    device = next(g.parameters()).device
    target, init_codes = target.to(device).float(), init_codes.to(device).float()
    _check(g, target, init_codes, "init_codes")
    size = tuple(target.shape[-2:])
    start = time.perf_counter()
    codes = init_codes.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([codes], lr=lr)
    with torch.no_grad():
        before = _distortion(render(g, codes, size), target, lpips_fn)
    for _ in _steps(steps, progress, "optimise"):
        loss, _ = _reconstruction_loss(render(g, codes, size), target, lpips_fn, l2_weight, lpips_weight)
        # autograd.grad rather than backward: no .grad lands on the (shared, frozen) generator
        (codes.grad,) = torch.autograd.grad(loss, [codes])
        opt.step()
    codes = codes.detach()
    with torch.no_grad():
        images = render(g, codes, size)
        after = _distortion(images, target, lpips_fn)
    report = {"distortion_before": before, "distortion_after": after, "steps": steps,
              "seconds": time.perf_counter() - start}
    return OptimizeResult(codes, images, report)


def pti(generator: nn.Module, target: torch.Tensor, pivot_codes: torch.Tensor, steps: int = PTI_STEPS,
        lr: float = PTI_LR, lpips_fn: Perceptual | None = None, l2_weight: float = 1.0, lpips_weight: float = 1.0,
        lpips_stop: float | None = None, locality: bool = False, locality_alpha: float = 30.0,
        locality_l2_weight: float = 0.1, locality_lpips_weight: float = 0.1, locality_samples: int = 1,
        locality_truncation: float = 0.5, mean_latent: torch.Tensor | None = None, seed: int = 0,
        progress: bool = False) -> PTIResult:
    """Pivotal tuning: fine-tune a copy of `generator` (or of an Inverter's decoder) so that the fixed
    `pivot_codes` reproduce `target`. The given generator is not modified.

    lpips_stop: stop once the perceptual distance is at or below it (checked before each step, as the
    official loop does). locality: PTI's regulariser, which keeps the tuned generator equal to the
    original at codes `locality_alpha` away from the pivot, towards random truncated W samples
    (drawn from a generator seeded with `seed`; `mean_latent` is the truncation centre, default
    generator.mean_latent())."""
    original = generator_of(generator)
    device = next(original.parameters()).device
    target, pivot = target.to(device).float(), pivot_codes.to(device).float().detach()
    _check(original, target, pivot, "pivot_codes")
    if lpips_stop is not None and lpips_fn is None:
        raise E4EError("lpips_stop needs lpips_fn (the perceptual distance it thresholds)")
    size = tuple(target.shape[-2:])
    start = time.perf_counter()
    g = copy.deepcopy(original).eval().requires_grad_(True)
    params = [p for p in g.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    rng = torch.Generator().manual_seed(seed)
    if locality and mean_latent is None:
        mean_latent = original.mean_latent(seed=seed)
    with torch.no_grad():
        before = _distortion(render(original, pivot, size), target, lpips_fn)
    done = 0
    for _ in _steps(steps, progress, "pti"):
        loss, p = _reconstruction_loss(render(g, pivot, size), target, lpips_fn, l2_weight, lpips_weight)
        if lpips_stop is not None and p is not None and float(p.detach()) <= lpips_stop:
            break
        if locality:
            loss = loss + _locality_loss(original, g, pivot, size, rng, mean_latent, lpips_fn, locality_alpha,
                                         locality_l2_weight, locality_lpips_weight, locality_samples,
                                         locality_truncation)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done += 1
    g.requires_grad_(False)
    for q in params:
        q.grad = None
    with torch.no_grad():
        images = render(g, pivot, size)
        after = _distortion(images, target, lpips_fn)
    report = {"distortion_before": before, "distortion_after": after, "steps": done,
              "seconds": time.perf_counter() - start}
    return PTIResult(g, images, report)


def _locality_loss(original, tuned, pivot, size, rng, mean_latent, lpips_fn, alpha, l2_weight, lpips_weight,
                   samples, truncation):
    """PTI's 'space regulariser': for each random W sample w (mapped from z, truncated towards the mean),
    take the code alpha along the direction from the pivot to w, w_r = pivot + alpha * (w - pivot) /
    ||w - pivot||, and penalise the tuned generator's change there. Rendered with zero noise, as the
    official code does (noise_mode='none')."""
    total = 0.0
    zero_noise = [torch.zeros_like(n) for n in original.get_noise()]
    for _ in range(samples):
        z = torch.randn(pivot.shape[0], original.style_dim, generator=rng).to(pivot.device)
        with torch.no_grad():
            w = original.mapping(z)
            w = mean_latent.to(w) + truncation * (w - mean_latent.to(w))
            direction = w.unsqueeze(1) - pivot
            norm = direction.flatten(1).norm(dim=1).clamp(min=1e-8).view(-1, 1, 1)
            w_r = pivot + alpha * direction / norm
            old = render(original, w_r, size, noise=zero_noise)
        new = render(tuned, w_r, size, noise=zero_noise)
        loss = l2_weight * F.mse_loss(new, old) if l2_weight else new.new_zeros(())
        if lpips_fn is not None and lpips_weight:
            loss = loss + lpips_weight * lpips_fn(old, new).mean()
        total = total + loss
    return total / samples


# -- keeping PTI's tuned generators -------------------------------------------------------------------
# `e4e invert --refine pti` writes one tuned generator per image beside the latents, as
# <latents folder>/<TUNED_DIR>/<image name>.safetensors (every parameter and buffer of the tuned copy, in
# full precision, so the edit's "original" is bit-for-bit the refined reconstruction), and records
# {"method": "pti", "generators": TUNED_DIR, ...} as the latents' meta["refine"]; `e4e edit` then renders
# each image with its own generator. Size: one generator per image (about 120 MB for a 1024 px FFHQ one).
TUNED_DIR = "pti"


def save_tuned(path, generator: nn.Module) -> "Path":
    """The tuned generator's state (parameters and buffers) -> safetensors, written atomically."""
    from pathlib import Path

    from safetensors.torch import save_file

    from e4e.outputs import atomic_write
    state = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    return atomic_write(Path(path), lambda tmp: save_file(state, str(tmp), metadata={"format": "e4e.pti.v1"}),
                        mode="path")


def load_tuned(generator: nn.Module, path) -> nn.Module:
    """A copy of `generator` (eval, frozen) with the tuned state from `path`; one-line errors for a missing
    file or one tuned from a generator of another shape."""
    from pathlib import Path

    from safetensors.torch import load_file
    path = Path(path)
    if not path.is_file():
        raise E4EError(f"{path}: the PTI-tuned generator recorded in the latents is missing (keep the "
                       f"'{TUNED_DIR}/' folder beside the latents file, or invert again)")
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types on foreign bytes
        raise E4EError(f"{path}: unreadable tuned generator ({' '.join(str(e).split())})") from None
    own = generator.state_dict()
    if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
        raise E4EError(f"{path}: tuned from a generator of another architecture than the checkpoint's")
    g = copy.deepcopy(generator)
    g.load_state_dict(state)
    return g.eval().requires_grad_(False)


def tuned_generator_path(latents_path, meta: dict, name: str):
    """Where the tuned generator of image `name` lives for a latents file, or None when PTI did not run."""
    from pathlib import Path

    from e4e.outputs import safe_output_path
    refine = meta.get("refine") or {}
    if refine.get("method") != "pti":
        return None
    # the folder comes from the file's metadata: like the names, it must stay beside the latents
    folder = str(refine.get("generators", TUNED_DIR))
    return safe_output_path(Path(latents_path).parent, folder, f"{name}.safetensors")
