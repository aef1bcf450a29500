import math

import pytest
import torch

from e4e import metrics
from e4e.errors import E4EError
from e4e.metrics import (MS_SSIM_WEIGHTS, delta_norms, fid_from_features, fid_from_stats, kid_from_features,
                         lec, mahalanobis_to_w, ms_ssim, ms_ssim_scales, mse, ssim)
from e4e.nets import inception

# ------------------------------------------------------------------------------------------ MSE / SSIM


def test_mse_per_image_hand_computed():
    x = torch.zeros(2, 3, 4, 4)
    y = torch.zeros(2, 3, 4, 4)
    y[0] = 0.5  # every pixel off by 0.5 -> 0.25
    y[1, 0, 0, 0] = 4.0  # one value of 48 off by 4 -> 16 / 48
    assert torch.allclose(mse(x, y), torch.tensor([0.25, 16 / 48]))


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(E4EError, match="one shape"):
        mse(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))


def _constant_pair(a, b, size):
    return torch.full((1, 3, size, size), a, dtype=torch.float64), torch.full((1, 3, size, size), b,
                                                                              dtype=torch.float64)


def test_ssim_identical_and_constant_images():
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(ssim(x, x), torch.ones(2))
    # Flat images: no variance, so the contrast-structure term is C2/C2 = 1 and SSIM is the luminance term.
    a, b = _constant_pair(0.2, 0.6, 16)
    c1 = 0.01 ** 2
    expected = (2 * 0.2 * 0.6 + c1) / (0.2 ** 2 + 0.6 ** 2 + c1)
    assert ssim(a, b).item() == pytest.approx(expected, rel=1e-12)
    # data_range scales the stabilising constants.
    c1 = (0.01 * 255) ** 2
    expected = (2 * 0.2 * 0.6 + c1) / (0.2 ** 2 + 0.6 ** 2 + c1)
    assert ssim(a, b, data_range=255).item() == pytest.approx(expected, rel=1e-12)


def test_ms_ssim_identical_symmetric_and_constant():
    x, y = torch.rand(2, 3, 176, 176), torch.rand(2, 3, 176, 176)
    assert torch.allclose(ms_ssim(x, x), torch.ones(2))
    assert torch.allclose(ms_ssim(x, y), ms_ssim(y, x))
    assert (ms_ssim(x, y) < 0.5).all()
    # Flat images: every cs is 1, so MS-SSIM = luminance ** (last weight).
    a, b = _constant_pair(0.2, 0.6, 176)
    lum = (2 * 0.2 * 0.6 + 1e-4) / (0.2 ** 2 + 0.6 ** 2 + 1e-4)
    assert ms_ssim(a, b).item() == pytest.approx(lum ** MS_SSIM_WEIGHTS[-1], rel=1e-12)


def _structured(n, size, phase):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    imgs = []
    for i in range(n):
        r = 0.5 + 0.4 * torch.sin(18 * xx + phase + i) * torch.cos(11 * yy - phase)
        g = (xx + yy) / 2
        b = ((xx * 8).floor() + (yy * 8).floor()) % 2 * 0.8 + 0.1  # checkerboard: hard edges
        imgs.append(torch.stack([r, g, b]))
    return torch.stack(imgs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ssim_and_ms_ssim_match_pytorch_msssim(dtype):
    ref = pytest.importorskip("pytorch_msssim")
    x = torch.rand(1, 3, 256, 256)
    pairs = {
        "noisy": (x, (x + 0.15 * torch.randn_like(x)).clamp(0, 1)),
        "independent": (x, torch.rand_like(x)),
        "structured": (_structured(1, 256, 0.0), _structured(1, 256, 0.4)),
    }
    for name, (a, b) in pairs.items():
        a, b = a.to(dtype), b.to(dtype)
        ours, theirs = ms_ssim(a, b), ref.ms_ssim(a, b, data_range=1.0, size_average=False)
        assert (ours - theirs).abs().max() < 1e-5, name
        ours, theirs = ssim(a, b), ref.ssim(a, b, data_range=1.0, size_average=False)
        assert (ours - theirs).abs().max() < 1e-5, name
    a, b = pairs["noisy"]
    a, b = a.to(dtype) * 255, b.to(dtype) * 255
    ours, theirs = ms_ssim(a, b, data_range=255), ref.ms_ssim(a, b, data_range=255, size_average=False)
    assert (ours - theirs).abs().max() < 1e-5


def test_ms_ssim_small_images_use_fewer_scales():
    assert ms_ssim_scales(256, 256) == 5
    assert ms_ssim_scales(161, 300) == 5  # 161 -> 81 -> 41 -> 21 -> 11
    assert ms_ssim_scales(160, 160) == 4  # the fifth scale would be 10 < 11 pixels
    assert ms_ssim_scales(64, 64) == 3
    assert ms_ssim_scales(11, 11) == 1
    x, y = torch.rand(2, 3, 64, 64, dtype=torch.float64), torch.rand(2, 3, 64, 64, dtype=torch.float64)
    assert torch.allclose(ms_ssim(x, x), torch.ones(2, dtype=torch.float64))
    # Three scales with the first three weights renormalised to sum to 1.
    w = torch.tensor(MS_SSIM_WEIGHTS[:3], dtype=torch.float64)
    w = w / w.sum()
    win = metrics.gaussian_window()
    expected, a, b = 1.0, x, y
    for k in range(3):
        s, cs = metrics._ssim_terms(a, b, win, 1.0, 0.01, 0.03)
        expected = expected * (s if k == 2 else cs).clamp_min(0) ** w[k]
        a, b = torch.nn.functional.avg_pool2d(a, 2), torch.nn.functional.avg_pool2d(b, 2)
    assert torch.allclose(ms_ssim(x, y), expected.mean(1))
    with pytest.raises(E4EError, match="at least 11x11"):
        ms_ssim(torch.rand(1, 3, 10, 40), torch.rand(1, 3, 10, 40))
    with pytest.raises(E4EError, match="at least 11x11"):
        ssim(torch.rand(1, 3, 10, 40), torch.rand(1, 3, 10, 40))


def test_ms_ssim_odd_sizes():
    x = torch.rand(2, 3, 175, 181)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    v = ms_ssim(x, y)
    assert torch.allclose(ms_ssim(x, x), torch.ones(2))
    assert ((v > 0) & (v < 1)).all()
    assert torch.allclose(v, ms_ssim(y, x))


# ------------------------------------------------------------------------------------------- FID / KID


def test_fid_closed_form_for_diagonal_covariances():
    d = 6
    mu1, mu2 = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
    v1, v2 = torch.rand(d, dtype=torch.float64) + 0.1, torch.rand(d, dtype=torch.float64) + 0.1
    expected = float((mu1 - mu2).pow(2).sum() + (v1.sqrt() - v2.sqrt()).pow(2).sum())
    assert fid_from_stats(mu1, torch.diag(v1), mu2, torch.diag(v2)) == pytest.approx(expected, rel=1e-10)
    # A common rotation of both Gaussians leaves the distance unchanged (non-diagonal case).
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    got = fid_from_stats(q @ mu1, q @ torch.diag(v1) @ q.T, q @ mu2, q @ torch.diag(v2) @ q.T)
    assert got == pytest.approx(expected, rel=1e-8)


def test_fid_from_features():
    a = torch.randn(400, 5, dtype=torch.float64)
    assert abs(fid_from_features(a, a)) < 1e-9
    b = a * 2 + 1  # mean moves by mu + 1, covariance becomes 4 S: FID = ||mu + 1||^2 + tr(S + 4S - 2 * 2S)
    expected = float((a.mean(0) + 1).pow(2).sum() + torch.cov(a.T).trace())
    assert fid_from_features(a, b) == pytest.approx(expected, rel=1e-8)
    with pytest.raises(E4EError):
        fid_from_features(a, torch.randn(10, 4))


def _kid_loop(x, y):
    m, d = len(x), x.shape[1]

    def k(u, v):
        return (sum(float(u[i]) * float(v[i]) for i in range(d)) / d + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_direct_loop():
    x = torch.randn(5, 3, dtype=torch.float64)
    y = torch.randn(5, 3, dtype=torch.float64) + 0.5
    # One subset of all samples: only the order changes, which the estimator ignores.
    assert kid_from_features(x, y, subsets=1, subset_size=5) == pytest.approx(_kid_loop(x, y), rel=1e-10)
    assert kid_from_features(x, y, subsets=3, subset_size=100) == pytest.approx(_kid_loop(x, y), rel=1e-10)


def test_kid_separates_distributions():
    a, b = torch.randn(300, 8), torch.randn(300, 8)
    same = kid_from_features(a, b, subsets=10, subset_size=100)
    shifted = kid_from_features(a, b + 0.5, subsets=10, subset_size=100)
    assert abs(same) < 0.05 < shifted
    assert kid_from_features(a, b, subsets=4, subset_size=50, seed=3) == kid_from_features(
        a, b, subsets=4, subset_size=50, seed=3)


def test_extract_features_concatenates_batches():
    class Mean:
        dims = 3

        def __call__(self, images):
            return images.mean(dim=(2, 3))

    batches = [torch.rand(2, 3, 8, 8), torch.rand(3, 3, 8, 8)]
    f = metrics.extract_features(Mean(), batches)
    assert f.shape == (5, 3) and f.dtype == torch.float64
    assert torch.allclose(f[2:], batches[1].mean(dim=(2, 3)).double())


# ------------------------------------------------------------------------------------------ Inception


def _randomised_inception():
    net = inception.FIDInceptionV3()
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):  # He init keeps the signal alive through ~90 layers
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def test_inception_layout():
    sd = inception.FIDInceptionV3().state_dict()
    assert sd["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert sd["Mixed_5b.branch_pool.conv.weight"].shape == (32, 192, 1, 1)
    assert sd["Mixed_6e.branch7x7dbl_5.conv.weight"].shape == (192, 192, 1, 7)
    assert sd["Mixed_7a.branch7x7x3_4.conv.weight"].shape == (192, 192, 3, 3)
    assert sd["Mixed_7c.branch3x3dbl_3b.bn.running_var"].shape == (384,)
    assert sd["fc.weight"].shape == (1008, 2048)
    assert not any(k.startswith("AuxLogits") for k in sd)
    assert not any(k.endswith(".bias") and ".conv." in k for k in sd)


def test_tf_avg_pool_ignores_padding():
    x = torch.ones(1, 2, 5, 5)
    assert torch.equal(inception._tf_avg_pool(x), x)


def test_inception_loads_from_state_dict_file(tmp_path):
    net = _randomised_inception()
    sd = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / inception.WEIGHTS_NAME
    torch.save(sd, path)
    loaded = inception.load_fid_inception(path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    own = loaded.state_dict()
    assert all(torch.equal(own[k], v) for k, v in sd.items())
    images = torch.stack([torch.rand(3, 64, 64), _structured(1, 64, 0.0)[0]]) * 2 - 1
    with torch.no_grad():
        feats = loaded(images)
    assert feats.shape == (2, inception.FEATURE_DIMS) and torch.isfinite(feats).all()
    assert feats.std() > 0 and not torch.allclose(feats[0], feats[1])
    assert (feats >= 0).all()  # pooled ReLU outputs
    # The resize is pytorch-fid's: [0, 1] images resized, then mapped to [-1, 1].
    unit = (images + 1) / 2
    resized = torch.nn.functional.interpolate(unit, size=(299, 299), mode="bilinear", align_corners=False)
    with torch.no_grad():
        assert torch.allclose(loaded(2 * resized - 1), feats, rtol=1e-4, atol=1e-5)


def test_inception_weights_errors(tmp_path):
    with pytest.raises(E4EError, match=r"^FID needs pt_inception-2015-12-05-6726825d.pth: pass --inception PATH"):
        inception.load_fid_inception(None)
    with pytest.raises(E4EError, match="--inception PATH"):
        inception.load_fid_inception(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(1008, 2048)}, bad)
    with pytest.raises(E4EError, match="does not match"):
        inception.load_fid_inception(bad)


# ------------------------------------------------------------------------------------- distance to W


def test_delta_norms():
    w = torch.randn(4, 1, 8).repeat(1, 5, 1)
    assert delta_norms(w)["mean"] == pytest.approx(0.0)
    w[:, 2] += torch.tensor([3.0, 4.0, 0, 0, 0, 0, 0, 0])  # style 2 is 5 away from style 0
    out = delta_norms(w)
    assert torch.allclose(out["per_style"], torch.tensor([0.0, 5.0, 0.0, 0.0], dtype=torch.float64))
    assert out["mean"] == pytest.approx(5.0 / 4)


def test_mahalanobis_on_synthetic_gaussians():
    d = 16
    a = torch.randn(d, d, dtype=torch.float64) / math.sqrt(d)
    mu = torch.randn(d, dtype=torch.float64)

    def sample(n):
        return torch.randn(n, d, dtype=torch.float64) @ a.T + mu

    w = sample(20000)
    inside = mahalanobis_to_w(sample(400).view(100, 4, d), w)
    assert inside["mean"] == pytest.approx(math.sqrt(d), rel=0.05)
    assert inside["per_style"].shape == (4,) and inside["per_image"].shape == (100,)
    shift = a @ torch.full((d,), 1.0, dtype=torch.float64)  # one standard deviation along every axis
    outside = mahalanobis_to_w((sample(400) + shift).view(100, 4, d), w)
    assert outside["mean"] > 1.3 * inside["mean"]
    # A degenerate W (rank 1) still gives finite distances thanks to the regulariser.
    flat = torch.randn(500, 1, dtype=torch.float64) * torch.ones(1, d, dtype=torch.float64)
    assert math.isfinite(mahalanobis_to_w(torch.randn(3, 2, d), flat)["mean"])


# ------------------------------------------------------------------------------------------------ LEC


class _LinearToy:
    """G: W+ (n_styles x D) -> images (3 x 4 x 4) linear and invertible; E its exact inverse plus eps * P."""

    def __init__(self, n_styles=6, d=8):
        self.shape, n = (n_styles, d), n_styles * d
        assert n == 48
        self.g = torch.randn(n, n, dtype=torch.float64) / math.sqrt(n) + torch.eye(n, dtype=torch.float64)
        self.g_inv = torch.linalg.inv(self.g)
        self.p = torch.randn(n, n, dtype=torch.float64) / math.sqrt(n)
        self.eps = 0.0

    def generator(self, w):
        return (w.flatten(1) @ self.g.T).view(-1, 3, 4, 4)

    def encoder(self, x):
        v = x.flatten(1)
        return (v @ self.g_inv.T + self.eps * v @ self.p.T).view(-1, *self.shape)


def test_lec_is_zero_for_an_exact_inverter_and_grows_with_error():
    toy = _LinearToy()
    images = toy.generator(torch.randn(5, 6, 8, dtype=torch.float64))
    directions = [torch.randn(8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64)]
    strengths = [-3.0, 3.0]

    def lpips(a, b):
        return (a - b).abs().mean(dim=(1, 2, 3))

    exact = lec(toy.encoder, toy.generator, images, directions, strengths, lpips_fn=lpips)
    assert set(exact) == {"latent", "latent_per_style", "mse", "lpips"}
    assert all(v < 1e-10 for v in exact.values())
    previous = exact
    for eps in (1e-3, 1e-2, 1e-1):
        toy.eps = eps
        out = lec(toy.encoder, toy.generator, images, directions, strengths, lpips_fn=lpips)
        for k in out:
            assert out[k] > previous[k], (eps, k)
        previous = out
    assert "lpips" not in lec(toy.encoder, toy.generator, images, directions[0], [1.0])
