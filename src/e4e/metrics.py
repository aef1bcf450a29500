"""Evaluation metrics: pixel and structural similarity, FID/KID, distance of codes to W, and LEC.

Image metrics return one value per image (shape (N,)) so callers can average, trim or tabulate.
SSIM and MS-SSIM follow Wang et al. (2003/2004) with the common defaults (11-tap Gaussian window,
sigma 1.5, K1 0.01, K2 0.03, "valid" filtering, five scales weighted 0.0448 .. 0.1333); they agree with
pytorch-msssim within ~3e-6 on 256x256 images (its window taps are computed in float32, ours in float64;
with equal taps float64 results agree to ~1e-15; tests/test_metrics.py checks 1e-5). SSIM's luminance term
is not shift-invariant, so the value depends on the range: convert the project's [-1, 1] tensors with
`unit_range` and keep `data_range=1`, as is conventional.
"""

from __future__ import annotations

from typing import Callable, Iterable, Protocol, Sequence

import torch
import torch.nn.functional as F

from e4e.errors import E4EError

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def unit_range(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] (clamped), the range SSIM/MS-SSIM values are usually reported in."""
    return ((images + 1) / 2).clamp(0, 1)


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.dim() != 4:
        raise E4EError(f"image metrics need two (N, C, H, W) tensors of one shape, got {tuple(x.shape)} "
                       f"and {tuple(y.shape)}")


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image (over channels and pixels), in the units of the inputs."""
    _check_pair(x, y)
    return (x - y).pow(2).flatten(1).mean(1)


# ------------------------------------------------------------------------------------------------ SSIM


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float64, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian taps centred on the middle tap (the 2-D window is its outer product)."""
    if size % 2 != 1:
        raise E4EError(f"SSIM window size must be odd, got {size}")
    t = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def _ssim_terms(x, y, win, data_range: float, k1: float, k2: float):
    """Per-(image, channel) mean SSIM and mean contrast-structure term, both shape (N, C)."""
    n, c = x.shape[:2]
    # One grouped, separable, unpadded filtering pass for all five local moments.
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    taps = win.to(dtype=x.dtype, device=x.device)
    g = 5 * c
    stack = F.conv2d(stack, taps.view(1, 1, 1, -1).expand(g, 1, 1, -1), groups=g)
    stack = F.conv2d(stack, taps.view(1, 1, -1, 1).expand(g, 1, -1, 1), groups=g)
    mu_x, mu_y, e_xx, e_yy, e_xy = stack.split(c, dim=1)
    var_x, var_y, cov = e_xx - mu_x ** 2, e_yy - mu_y ** 2, e_xy - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    lum = (2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1)
    return (lum * cs).flatten(2).mean(-1), cs.flatten(2).mean(-1)


def _working_dtype(x: torch.Tensor) -> torch.dtype:
    # Local variances are differences of similar numbers: half precision is not enough.
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, win_size: int = 11, win_sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Mean SSIM per image (averaged over channels and valid window positions), shape (N,).

    Images must be at least `win_size` pixels on each side (no padding is used, as in Wang et al.).
    """
    _check_pair(x, y)
    if min(x.shape[-2:]) < win_size:
        raise E4EError(f"SSIM needs images of at least {win_size}x{win_size} pixels, got "
                       f"{x.shape[-2]}x{x.shape[-1]}")
    dt = _working_dtype(x)
    win = gaussian_window(win_size, win_sigma)
    s, _ = _ssim_terms(x.to(dt), y.to(dt), win, data_range, k1, k2)
    return s.mean(1)


def ms_ssim_scales(height: int, width: int, win_size: int = 11, max_scales: int = len(MS_SSIM_WEIGHTS)) -> int:
    """How many scales fit: scale k (0-based) has ceil(side / 2**k) pixels and needs >= win_size."""
    side, k = min(height, width), 0
    while k < max_scales and side >= win_size:
        k, side = k + 1, (side + 1) // 2
    return k


def _halve(x: torch.Tensor) -> torch.Tensor:
    # 2x2 averaging; an odd last row/column is replicated first so every pixel counts and no zero
    # enters the average (pytorch-msssim zero-pads instead, so the two differ at odd sizes only).
    ph, pw = x.shape[-2] % 2, x.shape[-1] % 2
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return F.avg_pool2d(x, 2)


def ms_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, weights: Sequence[float] = MS_SSIM_WEIGHTS,
            win_size: int = 11, win_sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Multi-scale SSIM per image, shape (N,) (Wang, Simoncelli & Bovik 2003).

    Per channel: prod_k cs_k^w_k over the coarser-than-last scales times ssim_last^w_last, each term
    clipped at 0 (a negative base under a fractional power is undefined); then averaged over channels.
    Scales are obtained by 2x2 average pooling. The standard five scales need a shorter side of at
    least 16 * (win_size - 1) + 1 = 161 pixels; smaller images (down to win_size) use only the scales
    that fit, with the leading weights renormalised to sum to 1 (so 1 still means identical);
    images smaller than the window raise E4EError.
    """
    _check_pair(x, y)
    n_scales = ms_ssim_scales(x.shape[-2], x.shape[-1], win_size, len(weights))
    if n_scales == 0:
        raise E4EError(f"MS-SSIM needs images of at least {win_size}x{win_size} pixels, got "
                       f"{x.shape[-2]}x{x.shape[-1]}")
    w = torch.tensor(weights[:n_scales], dtype=torch.float64)
    if n_scales < len(weights):
        w = w / w.sum()
    dt = _working_dtype(x)
    x, y = x.to(dt), y.to(dt)
    win = gaussian_window(win_size, win_sigma)
    out = 1.0
    for k in range(n_scales):
        s, cs = _ssim_terms(x, y, win, data_range, k1, k2)
        term = s if k == n_scales - 1 else cs
        out = out * term.clamp_min(0) ** w[k].item()
        if k < n_scales - 1:
            x, y = _halve(x), _halve(y)
    return out.mean(1)


# -------------------------------------------------------------------------------------------- FID / KID


class FeatureExtractor(Protocol):
    """Any offline feature network for FID/KID: images in [-1, 1] (N, 3, H, W) -> features (N, dims).

    `e4e.nets.inception.FIDInceptionV3` is one; a small classifier trained on the project's own labels
    can be another (FIDs from different extractors are not comparable with each other).
    """

    dims: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


@torch.no_grad()
def extract_features(extractor: FeatureExtractor, batches: Iterable[torch.Tensor],
                     device: torch.device | str | None = None) -> torch.Tensor:
    """Runs `extractor` over an iterable of image batches; returns all features as float64 on the CPU."""
    feats = []
    for images in batches:
        if device is not None:
            images = images.to(device)
        f = extractor(images)
        feats.append(f.reshape(f.shape[0], -1).double().cpu())
    if not feats:
        raise E4EError("no images to compute features on")
    return torch.cat(feats)


def _features(a, name: str) -> torch.Tensor:
    a = torch.as_tensor(a).double()
    if a.dim() != 2 or a.shape[0] < 2:
        raise E4EError(f"{name} must be (N, D) features with N >= 2, got shape {tuple(a.shape)}")
    return a


def feature_stats(features) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance (float64), the Gaussian FID is fitted with."""
    f = _features(features, "features")
    mu = f.mean(0)
    d = f - mu
    return mu, d.T @ d / (f.shape[0] - 1)


def _sqrt_psd(s: torch.Tensor) -> torch.Tensor:
    lam, v = torch.linalg.eigh((s + s.T) / 2)
    return (v * lam.clamp_min(0).sqrt()) @ v.T


def fid_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2) between two Gaussians.

    tr((S1 S2)^1/2) is computed as the sum of square roots of the eigenvalues of the symmetric PSD
    matrix S1^1/2 S2 S1^1/2 (same spectrum as S1 S2), in float64; no scipy needed and no complex parts.
    """
    mu1, mu2 = torch.as_tensor(mu1).double(), torch.as_tensor(mu2).double()
    s1, s2 = torch.as_tensor(sigma1).double(), torch.as_tensor(sigma2).double()
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.numel(), mu1.numel()):
        raise E4EError(f"FID statistics do not match: means {tuple(mu1.shape)}, {tuple(mu2.shape)}, "
                       f"covariances {tuple(s1.shape)}, {tuple(s2.shape)}")
    r = _sqrt_psd(s1)
    m = r @ s2 @ r
    tr_covmean = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    return float((mu1 - mu2).pow(2).sum() + s1.trace() + s2.trace() - 2 * tr_covmean)


def fid_from_features(a, b) -> float:
    """FID between two feature sets (N, D) and (M, D)."""
    return fid_from_stats(*feature_stats(a), *feature_stats(b))


def _poly_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x @ y.T / x.shape[1] + 1) ** 3


def kid_from_features(a, b, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> float:
    """Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3.

    Averaged over `subsets` random subsets of `subset_size` (capped at the smaller set) drawn without
    replacement from each set; the within-set sums skip the diagonal, the cross sum keeps all pairs.
    Unbiased, so it can be slightly negative for matching distributions.
    """
    a, b = _features(a, "first features"), _features(b, "second features")
    if a.shape[1] != b.shape[1]:
        raise E4EError(f"KID feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    m = min(subset_size, a.shape[0], b.shape[0])
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(subsets):
        x = a[torch.randperm(a.shape[0], generator=gen)[:m]]
        y = b[torch.randperm(b.shape[0], generator=gen)[:m]]
        kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
        within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        total += float(within - 2 * kxy.sum() / (m * m))
    return total / subsets


# ------------------------------------------------------------------------------------- distance to W


def _codes(codes) -> torch.Tensor:
    c = torch.as_tensor(codes)
    if c.dim() != 3:
        raise E4EError(f"latent codes must be (N, n_styles, D), got shape {tuple(c.shape)}")
    return c.double()


def delta_norms(codes) -> dict:
    """How far each style code strays from the first one (e4e's offsets Delta_i = w_i - w_0).

    Returns {"mean": mean over images and styles i > 0 of ||w_i - w_0||, "per_style": (n_styles - 1,)
    tensor of the per-style means over images}. Zero for codes in W (all styles equal).
    """
    c = _codes(codes)
    d = (c[:, 1:] - c[:, :1]).norm(dim=-1)  # (N, n_styles - 1)
    return {"mean": float(d.mean()) if d.numel() else 0.0, "per_style": d.mean(0)}


def style_norms(codes, latent_avg=None) -> torch.Tensor:
    """-> (n_styles,) float64: the mean over images of ||w_i - latent_avg|| (of ||w_i|| without one), each
    style's size, on the codes' device."""
    c = _codes(codes)
    if latent_avg is not None:
        c = c - torch.as_tensor(latent_avg).to(c)
    return c.norm(dim=-1).mean(0)


def runaway_styles(norms, ratio: float = 100.0) -> list[int]:
    """Styles whose size (norms: (n_styles,) mean ||w_i - latent_avg|| over images) exceeds `ratio` times
    the median style's. A style that feeds only demodulated convolutions can grow without the image
    noticing; an unregularised pSp lets one run away (docs/model_card_avatar.md)."""
    norms = torch.as_tensor(norms, dtype=torch.float64)
    median = float(norms.median())
    return [i for i, n in enumerate(norms.tolist()) if n > ratio * median]


def fit_w_gaussian(w_samples, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and inverse Cholesky factor of the covariance of W samples (e.g. mapping(z) for random z).

    The covariance is regularised by eps * (mean eigenvalue) on the diagonal so a near-singular W
    (the mapping network's output often is) still gives finite distances.
    """
    w = _features(w_samples, "W samples")
    mu, cov = feature_stats(w)
    cov = cov + eps * cov.trace() / cov.shape[0] * torch.eye(cov.shape[0], dtype=cov.dtype)
    chol = torch.linalg.cholesky(cov)
    inv_chol = torch.linalg.solve_triangular(chol, torch.eye(cov.shape[0], dtype=cov.dtype), upper=False)
    return mu, inv_chol


def mahalanobis_to_w(codes, w_samples, eps: float = 1e-6) -> dict:
    """Mahalanobis distance of every style code to the Gaussian fitted on W samples.

    Returns {"mean": over images and styles, "per_style": (n_styles,) means over images,
    "per_image": (N,) means over styles}. For codes drawn from the fitted Gaussian the distance is
    about sqrt(D) (D = code size); codes off the W manifold score higher.
    """
    c = _codes(codes)
    mu, inv_chol = fit_w_gaussian(w_samples, eps)
    if c.shape[-1] != mu.numel():
        raise E4EError(f"codes have size {c.shape[-1]} but W samples have size {mu.numel()}")
    d = ((c - mu) @ inv_chol.T).norm(dim=-1)  # ||L^-1 (w - mu)|| = sqrt((w - mu)^T S^-1 (w - mu))
    return {"mean": float(d.mean()), "per_style": d.mean(0), "per_image": d.mean(1)}


# ------------------------------------------------------------------------------------------------ LEC


@torch.no_grad()
def lec(encoder_fn: Callable[[torch.Tensor], torch.Tensor], generator_fn: Callable[[torch.Tensor], torch.Tensor],
        images: torch.Tensor, directions: Sequence[torch.Tensor] | torch.Tensor, strengths: Sequence[float],
        lpips_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> dict:
    """Latent Editing Consistency (e4e paper, Sec. 5; official metrics/LEC.py).

    For each direction d and strength s: w = E(x), y = G(w + s d), w'' = E(y) - s d; the paper's LEC is
    ||w - w''||_2 over the whole (n_styles x D) code (the official script's norm over dims (1, 2)), here
    "latent". Also reported: "latent_per_style" (mean over styles of ||w_i - w''_i||), and the image-space
    distance between the reconstruction G(w) and the round trip G(w''): "mse" and, with `lpips_fn`,
    "lpips". All are averaged over images, directions and strengths (the official script additionally
    drops its batches outside the 1st-99th percentile; that trimming is left to the caller).

    `encoder_fn` maps images to codes (N, n_styles, D) in absolute W+ (add the average latent if the
    encoder predicts offsets) and must accept the generator's outputs (resize there, as the official
    code's face_pool does); `generator_fn` maps codes to images. A direction is (D,) or (n_styles, D);
    pass several as a list (a single tensor is always one direction).
    """
    if isinstance(directions, torch.Tensor) and directions.dim() in (1, 2):
        directions = [directions]
    if len(directions) == 0 or len(strengths) == 0:
        raise E4EError("LEC needs at least one edit direction and one strength")
    w = encoder_fn(images)
    recon = generator_fn(w)
    sums = {"latent": 0.0, "latent_per_style": 0.0, "mse": 0.0}
    if lpips_fn is not None:
        sums["lpips"] = 0.0
    for d in directions:
        d = d.to(w)
        for s in strengths:
            delta = s * d
            w2 = encoder_fn(generator_fn(w + delta)) - delta
            diff = (w2 - w).double()
            sums["latent"] += float(diff.flatten(1).norm(dim=1).mean())
            sums["latent_per_style"] += float(diff.norm(dim=-1).mean())
            round_trip = generator_fn(w2)
            sums["mse"] += float(mse(round_trip, recon).mean())
            if lpips_fn is not None:
                sums["lpips"] += float(torch.as_tensor(lpips_fn(round_trip, recon)).double().mean())
    n = len(directions) * len(strengths)
    return {k: v / n for k, v in sums.items()}
