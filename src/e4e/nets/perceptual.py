"""Frozen feature networks for the training losses: AlexNet / VGG16 (LPIPS) and MoCo-v2 ResNet-50.

Module and parameter names follow torchvision exactly (`features.<i>.weight`, `layer1.0.conv1.weight`, ...),
so the weight files users already have load unchanged: torchvision's `alexnet-owt-7be5be79.pth`,
`vgg16-397923af.pth` and MoCo's `moco_v2_800ep_pretrain.pth.tar`. Nothing here downloads anything.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from e4e.checkpoints.strict import load_state_dict_checked
from e4e.errors import E4EError

# Indices in torchvision's `features` after which LPIPS taps the activations (the ReLU outputs).
ALEX_TAPS = (1, 4, 7, 9, 11)  # relu1 .. relu5
VGG16_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
ALEX_CHANNELS = (64, 192, 384, 256, 256)
VGG16_CHANNELS = (64, 128, 256, 512, 512)


def alexnet_features() -> nn.Sequential:
    """torchvision `alexnet().features`, layer for layer (so indices and state-dict keys agree)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(3, 2),
    )


def vgg16_features() -> nn.Sequential:
    """torchvision `vgg16().features` (configuration "D", no batch norm)."""
    layers: list[nn.Module] = []
    c_in = 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU()]
            c_in = v
    return nn.Sequential(*layers)


class TappedFeatures(nn.Module):
    """Runs `features` and returns the activations after the given layer indices."""

    def __init__(self, features: nn.Sequential, taps: tuple[int, ...], channels: tuple[int, ...]):
        super().__init__()
        self.features = features  # attribute name gives torchvision's `features.<i>.*` keys
        self.taps = tuple(taps)
        self.channels = tuple(channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
                if len(out) == len(self.taps):
                    break  # later layers feed no tap
        return out


def lpips_backbone(net: str) -> TappedFeatures:
    if net == "alex":
        return TappedFeatures(alexnet_features(), ALEX_TAPS, ALEX_CHANNELS)
    if net == "vgg":
        return TappedFeatures(vgg16_features(), VGG16_TAPS, VGG16_CHANNELS)
    raise E4EError(f"unknown LPIPS network {net!r}: choose 'alex' or 'vgg'")


def load_weights_file(path, what: str, how: str):
    """torch.load a user-given weights file, turning a missing or unreadable file into one clear line."""
    if path is None or not Path(path).is_file():
        name = "a weights file" if path is None else f"{path} (not found)"
        raise E4EError(f"{what} needs {name}: {how}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad user file
        raise E4EError(f"cannot read {what} weights {path}: {e}") from None


def load_torchvision_features(module: TappedFeatures, path, what: str, how: str) -> TappedFeatures:
    """Load `features.*` from a torchvision classifier state dict (classifier keys ignored).

    A bare features state dict (`0.weight`, ...) is accepted as well.
    """
    sd = load_weights_file(path, what, how)
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise E4EError(f"{path} is not a state dict ({what})")
    feats = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
    if not feats:
        feats = {k: v for k, v in sd.items() if k.split(".")[0].isdigit()}
    _load_strict(module.features, feats, path, what)
    return module


def _load_strict(module: nn.Module, sd: dict, path, what: str) -> None:
    load_state_dict_checked(module, sd, f"{path} does not match the {what} layout")


# ---------------------------------------------------------------------------------------------- ResNet-50


class Bottleneck(nn.Module):
    """torchvision's ResNet "v1.5" bottleneck: the stride sits on the 3x3 convolution."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int = 1):
        super().__init__()
        c_out = width * self.expansion
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(out + skip)


class ResNet50Features(nn.Module):
    """torchvision resnet50 up to the global average pool: returns (B, 2048) pooled features.

    The classifier `fc` is left out on purpose: the official MocoLoss drops MoCo's MLP head and uses the
    pooled features.
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        c_in = 64
        for i, (width, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), 1):
            layer = [Bottleneck(c_in, width, stride)]
            c_in = width * Bottleneck.expansion
            layer += [Bottleneck(c_in, width) for _ in range(blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))


MOCO_PREFIX = "module.encoder_q."


def load_moco_resnet50(path, how: str = "pass --moco-weights PATH") -> ResNet50Features:
    """A frozen, eval-mode ResNet-50 from MoCo-v2's checkpoint (`moco_v2_800ep_pretrain.pth.tar`).

    Takes `state_dict` keys `module.encoder_q.*` (the query encoder), as the official MocoLoss does, and
    drops `fc.*` (MoCo-v2's MLP head). A plain torchvision-layout resnet50 state dict is accepted too.
    """
    what = "the MoCo loss (MoCo-v2 ResNet-50)"
    ckpt = load_weights_file(path, what, how)
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise E4EError(f"{path} is not a MoCo checkpoint or state dict ({what})")
    if any(k.startswith(MOCO_PREFIX) for k in sd):
        sd = {k[len(MOCO_PREFIX):]: v for k, v in sd.items() if k.startswith(MOCO_PREFIX)}
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    model = ResNet50Features()
    _load_strict(model, sd, path, what)
    return freeze(model)


def freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
