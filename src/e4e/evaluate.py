"""Comparing inversion methods on held-out images: distortion, editability, realism and speed (`e4e eval`).

Methods:
- "e4e" / "psp": one encoder pass (the e4e and pSp inverters given).
- "optimize": Adam on the W+ code, starting from the e4e code (e4e.refine.optimize).
- "optimize_w": the same optimisation started from the mean latent instead (plain W+ optimisation, no
  encoder), the classic baseline the encoder-based methods are compared with.
- "pti": pivotal tuning of a per-image copy of the generator around the e4e code (e4e.refine.pti).
Both refinements use the perceptual distance of `Scorers` (plus L2) as their loss.

Per method, averaged over images:
- distortion: MSE (images in [-1, 1]), the perceptual distance, MS-SSIM (as many scales as fit the image;
  3 at 64 px, see e4e.metrics.ms_ssim), and with an identity net the cosine similarity of identity embeddings.
- editability: LEC (e4e paper Sec. 5, e4e.metrics.lec): w'' = E(G(w + s d)) - s d, reported as ||w - w''||
  over the whole W+ code ("latent") and as the perceptual distance between G(w'') and G(w) ("image").
  E is the encoder that re-inverts: the pSp encoder for "psp", the e4e encoder for every other method
  (optimize and pti have no encoder of their own). G is the method's generator (the tuned copy for pti).
  Directions: the top SeFa directions and the top GANSpace components of W, each scaled to one standard
  deviation of the W samples along it and added to every style; s runs over `strengths`.
- distance to W: the mean offset norm ||w_i - w_0|| (e4e's Delta) and the Mahalanobis distance of every
  style code to a Gaussian fitted on mapping(z) samples (about sqrt(style_dim) for codes from W itself).
- realism: FID and KID of the (clamped) reconstructions and of the edited images against the real images
  evaluated, on the features of `Scorers.features`.
- seconds per image of the inversion itself (encoding, plus the refinement), not of the metrics.

LEC follows e4e.metrics.lec exactly (unclamped images into the encoder, no percentile trimming); the other
image metrics use images clamped to [-1, 1], as saved files would be.
"""
from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import torch
from torch import nn

from e4e import metrics
from e4e.checkpoints.io import seeded_mean_latent
from e4e.errors import E4EError
from e4e.refine import OPT_STEPS, PTI_STEPS, optimize, pti, render

METHODS = ("e4e", "psp", "optimize", "optimize_w", "pti")
REFINED = ("optimize", "optimize_w", "pti")
REINVERTER = {"e4e": "e4e", "psp": "psp", "optimize": "e4e", "optimize_w": "e4e", "pti": "e4e"}  # whose encoder re-inverts for LEC


@dataclass
class EvalOptions:
    methods: tuple[str, ...] = ("e4e",)
    optimize_steps: int = OPT_STEPS
    pti_steps: int = PTI_STEPS
    batch_size: int = 8
    strengths: tuple[float, ...] = (-2.0, 2.0)  # in W standard deviations along each direction
    n_directions: int = 3  # per family (SeFa, GANSpace)
    w_samples: int = 10_000
    refine_limit: int | None = None  # optimize / pti: only the first N images
    edit_limit: int | None = None  # editability and edited-image realism: only the first N images of a method
    seed: int = 0


@dataclass
class Scorers:
    """The learned metrics. `perceptual(x, y)` -> (B,) distances, differentiable in x (it is also the
    refinement loss); `features` an e4e.metrics.FeatureExtractor for FID/KID; `identity(images)` ->
    unit-norm (B, K) embeddings, or None."""

    perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    features: Callable[[torch.Tensor], torch.Tensor]
    perceptual_name: str = "perceptual"
    features_name: str = "features"
    identity: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass
class EditSet:
    names: list[str]
    directions: torch.Tensor  # (K, D): strength 1 moves one W standard deviation along the direction


class Unit(NamedTuple):
    """Some images inverted by one method: their codes and the generator that renders them."""
    start: int  # index of the first image in the evaluated set
    codes: torch.Tensor
    generator: nn.Module
    seconds: float


# -------------------------------------------------------------------------------------- W and directions


@torch.no_grad()
def sample_w(generator: nn.Module, n: int, seed: int = 0, batch: int = 4096) -> torch.Tensor:
    """n seeded W samples mapping(z), z ~ N(0, I), float64 on the CPU."""
    device = next(generator.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    out = []
    for k in range(0, n, batch):
        z = torch.randn(min(batch, n - k), generator.style_dim, generator=gen)
        out.append(generator.mapping(z.to(device)).double().cpu())
    return torch.cat(out)


def edit_directions(generator: nn.Module, w_samples: torch.Tensor, n_directions: int = 3) -> EditSet:
    """The top `n_directions` SeFa directions (every conv layer) and GANSpace components of W, each scaled
    to one standard deviation of `w_samples` along it, so strengths mean the same for both families."""
    from e4e.editing import ganspace_pca, sefa_directions
    if n_directions < 1:
        raise E4EError("evaluation needs at least one edit direction per family")
    d = generator.style_dim
    k = min(n_directions, d)
    sefa = sefa_directions(generator, n_directions=k).directions.double()
    _, cov = metrics.feature_stats(w_samples)
    sefa_std = torch.einsum("kd,de,ke->k", sefa, cov, sefa).clamp_min(0).sqrt()
    pca = ganspace_pca(w_samples, n_components=k)
    dirs = torch.cat([sefa * sefa_std[:, None], pca["comp"][:, 0].double() * pca["std"][:, None].double()])
    names = [f"sefa{i}" for i in range(k)] + [f"ganspace{i}" for i in range(k)]
    return EditSet(names, dirs.float())


def same_generator(a: nn.Module, b: nn.Module) -> bool:
    if a is b:
        return True
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------ inversion


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def invert_units(method: str, images: torch.Tensor, inverters: dict, scorers: Scorers, opts: EvalOptions,
                 progress: bool = False) -> Iterator[Unit]:
    """Inverts `images` (N, 3, H, W) in [-1, 1] batch by batch (image by image for pti)."""
    inv = inverters["psp" if method == "psp" else "e4e"]
    device = next(inv.parameters()).device
    bs = max(1, opts.batch_size)
    for start in range(0, images.shape[0], bs):
        x = images[start:start + bs].to(device)
        _sync(device)
        t0 = time.perf_counter()
        if method == "pti":
            for i in range(x.shape[0]):
                t1 = time.perf_counter()
                with torch.no_grad():
                    pivot = inv.encode(x[i:i + 1])
                res = pti(inv.decoder, x[i:i + 1], pivot, steps=opts.pti_steps, lpips_fn=scorers.perceptual,
                          seed=opts.seed, progress=progress)
                _sync(device)
                yield Unit(start + i, pivot, res.generator, time.perf_counter() - t1)
            continue
        with torch.no_grad():
            codes = inv.encode(x)
            if method == "optimize_w":
                start_w = inv.latent_avg if inv.latent_avg is not None else seeded_mean_latent(inv.decoder)
                codes = start_w.to(codes).reshape(1, -1, codes.shape[-1]).expand_as(codes).clone()
        if method in ("optimize", "optimize_w"):
            codes = optimize(inv.decoder, x, codes, steps=opts.optimize_steps, lpips_fn=scorers.perceptual,
                             progress=progress).codes
        elif method not in ("e4e", "psp"):
            raise E4EError(f"unknown method {method!r}: choose from {', '.join(METHODS)}")
        _sync(device)
        yield Unit(start, codes, inv.decoder, time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------- scoring


def _chunked(fn, tensors: tuple, chunk: int) -> torch.Tensor:
    n = tensors[0].shape[0]
    return torch.cat([fn(*(t[k:k + chunk] for t in tensors)) for k in range(0, n, chunk)])


@dataclass
class _Totals:
    """Per-image values and features collected over a method's units."""
    values: dict = field(default_factory=dict)
    codes: list = field(default_factory=list)
    recon_features: list = field(default_factory=list)
    edit_features: list = field(default_factory=list)
    seconds: float = 0.0
    images: int = 0
    edit_images: int = 0

    def add(self, key: str, v: torch.Tensor) -> None:
        self.values.setdefault(key, []).append(v.detach().double().cpu().reshape(-1))

    def mean(self, key: str) -> float | None:
        return float(torch.cat(self.values[key]).mean()) if key in self.values else None


@torch.no_grad()
def score_unit(unit: Unit, targets: torch.Tensor, reencode: Callable, edits: EditSet | None, scorers: Scorers,
               opts: EvalOptions, totals: _Totals) -> torch.Tensor:
    """Adds one unit's distortion (and, with `edits`, LEC and edited-image features) to `totals`.
    -> the clamped reconstruction (B, 3, H, W), for callers that score it further."""
    g, w = unit.generator, unit.codes
    size = tuple(targets.shape[-2:])
    chunk = max(1, opts.batch_size)
    raw = render(g, w, size)
    recon = raw.clamp(-1, 1)
    totals.add("mse", metrics.mse(recon, targets))
    totals.add("perceptual", scorers.perceptual(recon, targets))
    totals.add("ms_ssim", metrics.ms_ssim(metrics.unit_range(recon), metrics.unit_range(targets)))
    if scorers.identity is not None:
        totals.add("id_similarity", (scorers.identity(recon) * scorers.identity(targets)).sum(dim=1))
    totals.codes.append(w.double().cpu())
    totals.recon_features.append(scorers.features(recon).double().cpu())
    totals.images += w.shape[0]
    if edits is None:
        return recon
    b, n, d = w.shape
    steps = torch.stack([s * v for v in edits.directions.to(w) for s in opts.strengths])  # (E, D)
    e = steps.shape[0]
    delta = steps[:, None, None, :].expand(e, b, n, d).reshape(e * b, n, d)
    w_rep = w.unsqueeze(0).expand(e, b, n, d).reshape(e * b, n, d)
    edited = _chunked(lambda c: render(g, c, size), (w_rep + delta,), chunk)
    totals.edit_features.append(_chunked(lambda y: scorers.features(y.clamp(-1, 1)), (edited,), chunk).double().cpu())
    w2 = _chunked(reencode, (edited,), chunk) - delta
    totals.add("lec_latent", (w2 - w_rep).double().flatten(1).norm(dim=1).reshape(e, b).mean(0))
    round_trip = _chunked(lambda c: render(g, c, size), (w2,), chunk)
    raw_rep = raw.unsqueeze(0).expand(e, *raw.shape).reshape(e * b, *raw.shape[1:])
    lec_img = _chunked(lambda p, q: torch.as_tensor(scorers.perceptual(p, q)).reshape(-1), (round_trip, raw_rep), chunk)
    totals.add("lec_image", lec_img.reshape(e, b).mean(0))
    totals.edit_images += b
    return recon


def _kid(a: torch.Tensor, b: torch.Tensor, seed: int) -> float:
    return metrics.kid_from_features(a, b, subsets=100, subset_size=1000, seed=seed)


def summarise(method: str, totals: _Totals, real_features: torch.Tensor, w_samples: torch.Tensor,
              seed: int) -> dict:
    codes = torch.cat(totals.codes)
    row = {"method": method, "images": totals.images, "edit_images": totals.edit_images,
           "seconds_per_image": totals.seconds / max(1, totals.images)}
    for key in ("mse", "perceptual", "ms_ssim", "id_similarity", "lec_latent", "lec_image"):
        row[key] = totals.mean(key)
    row["delta_norm"] = metrics.delta_norms(codes)["mean"]
    row["mahalanobis_w"] = metrics.mahalanobis_to_w(codes, w_samples)["mean"]
    recon = torch.cat(totals.recon_features)
    row["fid"], row["kid"] = _fid_kid(recon, real_features, seed)
    if totals.edit_features:
        row["fid_edit"], row["kid_edit"] = _fid_kid(torch.cat(totals.edit_features), real_features, seed)
    return row


def _fid_kid(feats: torch.Tensor, real: torch.Tensor, seed: int) -> tuple[float | None, float | None]:
    if feats.shape[0] < 2 or real.shape[0] < 2:
        return None, None  # a covariance needs two samples
    return metrics.fid_from_features(feats, real), _kid(feats, real, seed)


# ------------------------------------------------------------------------------------------ evaluation


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, leave=False)


@torch.no_grad()
def image_features(extractor, images: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    return metrics.extract_features(extractor, images.split(max(1, batch_size)), device=device)


def evaluate(images: torch.Tensor, inverters: dict, scorers: Scorers, opts: EvalOptions,
             progress: bool = False, real_features: torch.Tensor | None = None) -> list[dict]:
    """One result row per method in opts.methods (see the module docstring for the columns).

    images: (N, 3, H, W) in [-1, 1], the real images (also the FID/KID reference set); inverters:
    {"e4e": Inverter, "psp": Inverter (only needed for the psp method)}, on the device to use;
    real_features: the images' features if already computed.
    """
    for m in opts.methods:
        if m not in METHODS:
            raise E4EError(f"unknown method {m!r}: choose from {', '.join(METHODS)}")
        if REINVERTER[m] not in inverters:
            raise E4EError(f"method {m} needs the {'pSp' if m == 'psp' else 'e4e'} inverter"
                           + (": pass --psp PATH" if m == "psp" else ""))
    if images.dim() != 4 or images.shape[0] < 1:
        raise E4EError(f"evaluation needs images (N, 3, H, W), got shape {tuple(images.shape)}")
    device = next(inverters["e4e" if "e4e" in inverters else "psp"].parameters()).device
    real = real_features if real_features is not None else image_features(scorers.features, images,
                                                                               opts.batch_size, device)
    cache: list[tuple[nn.Module, torch.Tensor, EditSet]] = []  # per distinct generator: W samples, directions

    def w_and_edits(g):
        for known, w, e in cache:
            if same_generator(known, g):
                return w, e
        w = sample_w(g, opts.w_samples, opts.seed)
        cache.append((g, w, edit_directions(g, w, opts.n_directions)))
        return cache[-1][1:]

    rows = []
    for method in opts.methods:
        subset = images
        if method in REFINED and opts.refine_limit is not None:
            subset = images[:opts.refine_limit]
        inv = inverters["psp" if method == "psp" else "e4e"]
        reencode = inverters[REINVERTER[method]].encode
        w_samples, edits = w_and_edits(inv.decoder)
        n_edit = subset.shape[0] if opts.edit_limit is None else min(opts.edit_limit, subset.shape[0])
        totals = _Totals()
        bar = _progress(subset.shape[0], method, progress)
        for unit in invert_units(method, subset, inverters, scorers, opts, progress=False):
            b = unit.codes.shape[0]
            totals.seconds += unit.seconds
            targets = subset[unit.start:unit.start + b].to(device)
            k = max(0, min(b, n_edit - unit.start))
            if k == b:
                score_unit(unit, targets, reencode, edits, scorers, opts, totals)
            elif k == 0:
                score_unit(unit, targets, reencode, None, scorers, opts, totals)
            else:  # the edit limit falls inside this unit
                score_unit(unit._replace(codes=unit.codes[:k]), targets[:k], reencode, edits, scorers, opts, totals)
                score_unit(unit._replace(start=unit.start + k, codes=unit.codes[k:]), targets[k:], reencode, None,
                           scorers, opts, totals)
            bar.update(b)
        bar.close()
        rows.append(summarise(method, totals, real, w_samples, opts.seed))
    return rows


@torch.no_grad()
def generator_samples(generator: nn.Module, n: int, size: tuple[int, int], seed: int = 0,
                      batch_size: int = 16) -> Iterator[torch.Tensor]:
    """n random images G(mapping(z)) (random noise, no truncation), pooled to `size`, clamped; seeded."""
    device = next(generator.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for k in range(0, n, batch_size):
            z = torch.randn(min(batch_size, n - k), generator.style_dim, generator=gen).to(device)
            images, _ = generator([z], randomize_noise=True)
            if tuple(images.shape[-2:]) != tuple(size):
                images = torch.nn.functional.adaptive_avg_pool2d(images, size)
            yield images.clamp(-1, 1)


def reference_row(name: str, features: torch.Tensor, real_features: torch.Tensor, seed: int = 0) -> dict:
    """A realism-only row: FID/KID of some image set (generator samples, other real images) vs the real."""
    fid, kid = _fid_kid(features, real_features, seed)
    return {"method": name, "images": features.shape[0], "fid": fid, "kid": kid}


# --------------------------------------------------------------------------------------------- output


def columns(scorers: Scorers | None = None, ms_ssim_scales: int | None = None) -> list[tuple[str, str, str]]:
    """(csv key, Markdown header, format) for every result column."""
    p = scorers.perceptual_name if scorers else "perceptual"
    f = scorers.features_name if scorers else "features"
    scales = f" ({ms_ssim_scales} scales)" if ms_ssim_scales else ""
    return [
        ("method", "method", "s"),
        ("images", "images", "d"),
        ("seconds_per_image", "s / image", ".3g"),
        ("mse", "MSE ↓", ".4f"),
        ("perceptual", f"{p} distance ↓", ".4f"),
        ("ms_ssim", f"MS-SSIM{scales} ↑", ".4f"),
        ("id_similarity", "ID similarity ↑", ".4f"),
        ("edit_images", "images edited", "d"),
        ("lec_latent", "LEC latent ↓", ".3f"),
        ("lec_image", "LEC image ↓", ".4f"),
        ("delta_norm", "mean ‖Δ‖ ↓", ".3f"),
        ("mahalanobis_w", "Mahalanobis to W ↓", ".2f"),
        ("fid", f"FID recon ({f}) ↓", ".2f"),
        ("kid", "KID recon ×10³ ↓", "kid"),
        ("fid_edit", f"FID edited ({f}) ↓", ".2f"),
        ("kid_edit", "KID edited ×10³ ↓", "kid"),
    ]


def _fmt(v, fmt: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–" if v is None else str(v)
    if fmt == "kid":
        return f"{1000 * v:.2f}"
    return format(v, fmt)


def write_csv(path, rows: list[dict], cols: list[tuple[str, str, str]]) -> Path:
    """Raw values (KID not scaled), one row per method or reference set; empty cells where not measured."""
    path = Path(path)
    keys = [k for k, _, _ in cols if any(r.get(k) is not None for r in rows)]
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(keys)
        for r in rows:
            out.writerow(["" if r.get(k) is None else (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k])
                          for k in keys])
    return path


def markdown_table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    cols = [c for c in cols if any(r.get(c[0]) is not None for r in rows)]
    lines = ["| " + " | ".join(h.replace("|", "\\|") for _, h, _ in cols) + " |",  # '|r|' must not split a cell
             "|" + "|".join(":---" if k == "method" else "---:" for k, _, _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k), f) for k, _, f in cols) + " |")
    return "\n".join(lines)


def write_markdown(path, title: str, header: list[str], rows: list[dict], cols, notes: list[str]) -> Path:
    path = Path(path)
    text = [f"# {title}", "", *header, "", markdown_table(rows, cols), "", *notes, ""]
    path.write_text("\n".join(text), encoding="utf-8")
    return path
