"""Attribute networks for the avatar domain: one small CNN, several classification heads.

In: images (B, 3, H, W) in [-1, 1], any size (resized inside to `cfg.size`, bilinear with antialiasing).
Out: `forward` -> {head name: logits (B, K)}; every head is a K-way softmax, binary heads included
(K = 2, class 1 = the attribute is present), so one loss and one `predict` serve all of them.
`predict` -> {head name: LongTensor (B,) of class indices} (binary: 0/1; categorical: index into
`cfg.vocab(name)`). `embed` -> (B, D) unit-norm pooled features: the similarity network's role in e4e's
L_sim = 1 - <C(x), C(G(E(x)))> (ArcFace for faces, MoCo elsewhere; here a net trained on the labels).

Two architectures, so that the evaluation classifier does not share the similarity network's mistakes:
- "resnet": a stem convolution, then four stages of pre-activation-free basic residual blocks
  (conv-BN-ReLU-conv-BN + shortcut), each halving the resolution, global average pooling.
- "convnet": VGG-style stacks of plain conv-BN-ReLU layers with max-pooling between them, no
  shortcuts, global average + max pooling concatenated, dropout before the heads.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from e4e.errors import E4EError

ARCHS = ("resnet", "convnet")
BINARY_VOCAB = ["0", "1"]


@dataclass
class AttributeNetConfig:
    arch: str = "resnet"
    size: int = 64  # input resolution the network runs at
    width: int = 32  # channels of the first stage; stages are width x (1, 2, 4, 8)
    blocks: int = 1  # residual blocks (resnet) or extra conv layers (convnet) per stage
    binary: list[str] = field(default_factory=list)  # head names, 2 classes each
    categorical: dict[str, list[str]] = field(default_factory=dict)  # head name -> vocabulary

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise E4EError(f"attribute net arch {self.arch!r} unknown (choose from {', '.join(ARCHS)})")
        if self.size < 16 or self.width < 1 or self.blocks < 1:
            raise E4EError(f"attribute net: size must be >= 16, width and blocks >= 1 (got {self.size}, "
                           f"{self.width}, {self.blocks})")
        names = self.heads()
        if not names:
            raise E4EError("attribute net: no heads (give binary and/or categorical attributes)")
        if len(set(names)) != len(names):
            raise E4EError(f"attribute net: a head name is repeated in {names}")
        for name, vocab in self.categorical.items():
            if len(vocab) < 2 or len(set(vocab)) != len(vocab):
                raise E4EError(f"attribute net: head {name!r} needs >= 2 distinct classes, got {vocab}")

    def heads(self) -> list[str]:
        return list(self.binary) + list(self.categorical)

    def vocab(self, name: str) -> list[str]:
        """Class names of a head, in logit order (binary heads: ['0', '1'])."""
        if name in self.binary:
            return list(BINARY_VOCAB)
        if name in self.categorical:
            return list(self.categorical[name])
        raise E4EError(f"attribute net has no head {name!r} (heads: {', '.join(self.heads())})")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AttributeNetConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise E4EError(f"attribute net config: unknown field(s) {', '.join(unknown)}")
        return cls(**d)


def _conv_bn(cin: int, cout: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(cin, cout, stride), _conv_bn(cout, cout, relu=False))
        self.short = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return F.relu(self.body(x) + self.short(x))


class ResNetTrunk(nn.Module):
    """Stem at full resolution, four stages at 1/2 .. 1/16, global average pool -> (B, 8 * width)."""

    def __init__(self, width: int, blocks: int):
        super().__init__()
        widths = [width * m for m in (1, 2, 4, 8)]
        layers = [_conv_bn(3, width)]
        cin = width
        for w in widths:
            for b in range(blocks):
                layers.append(BasicBlock(cin, w, 2 if b == 0 else 1))
                cin = w
        self.body = nn.Sequential(*layers)
        self.dim = cin

    def forward(self, x):
        return self.body(x).mean(dim=(2, 3))


class ConvNetTrunk(nn.Module):
    """VGG-style: per stage conv-BN-ReLU x (1 + blocks) then 2x2 max-pool; avg and max pooled -> (B, 16 * width)."""

    def __init__(self, width: int, blocks: int):
        super().__init__()
        layers, cin = [], 3
        for w in (width * m for m in (1, 2, 4, 8)):
            for _ in range(1 + blocks):
                layers.append(_conv_bn(cin, w))
                cin = w
            layers.append(nn.MaxPool2d(2))
        self.body = nn.Sequential(*layers)
        self.dim = 2 * cin

    def forward(self, x):
        f = self.body(x)
        return torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)


class AttributeNet(nn.Module):
    def __init__(self, cfg: AttributeNetConfig):
        super().__init__()
        self.cfg = cfg
        self.trunk = (ResNetTrunk if cfg.arch == "resnet" else ConvNetTrunk)(cfg.width, cfg.blocks)
        self.drop = nn.Dropout(0.2 if cfg.arch == "convnet" else 0.0)
        self.heads = nn.ModuleDict({name: nn.Linear(self.trunk.dim, len(cfg.vocab(name))) for name in cfg.heads()})

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise E4EError(f"attribute net needs (B, 3, H, W) images, got shape {tuple(x.shape)}")
        if x.shape[-2:] == (self.cfg.size, self.cfg.size):
            return x
        return F.interpolate(x, size=(self.cfg.size, self.cfg.size), mode="bilinear", align_corners=False,
                             antialias=True)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled trunk features (B, D), before normalisation."""
        return self.trunk(self.resize(x))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.drop(self.features(x))
        return {name: head(f) for name, head in self.heads.items()}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) unit-norm features: cosine similarity of two images = dot product of their embeddings."""
        return F.normalize(self.features(x).float(), dim=1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: logits.argmax(dim=1) for name, logits in self(x).items()}
