"""ArcFace IR-SE50, the face-recognition net behind e4e's identity loss.

`Backbone` keeps the official module layout (TreB1eN's InsightFace_Pytorch as vendored by pSp/e4e), so
the published `model_ir_se50.pth` loads with strict=True. `IdentityNet` adds the ID loss's
preprocessing for 256x256 faces.
"""
from pathlib import Path

import torch
from torch import nn

from e4e.checkpoints.strict import mismatch
from e4e.errors import E4EError, first_line
from e4e.nets.encoders import OFFICIAL_WIDTHS, build_body, input_layer, stage_units


class Backbone(nn.Module):
    """IR / IR-SE ResNet -> BN, dropout, flatten, Linear(512*7*7 or 512*14*14, 512), BN1d -> L2-normalised."""

    def __init__(self, input_size: int = 112, num_layers: int = 50, drop_ratio: float = 0.6, mode: str = "ir_se",
                 affine: bool = True):
        super().__init__()
        if input_size not in (112, 224):
            raise E4EError(f"ArcFace input_size must be 112 or 224, got {input_size}")
        self.input_size = input_size
        self.input_layer = input_layer(OFFICIAL_WIDTHS[0])
        side = input_size // 16
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(drop_ratio),
            nn.Flatten(),
            nn.Linear(512 * side * side, 512),
            nn.BatchNorm1d(512, affine=affine),
        )
        self.body = build_body(stage_units(num_layers), OFFICIAL_WIDTHS, mode)

    def forward(self, x):
        x = self.output_layer(self.body(self.input_layer(x)))
        return x / torch.norm(x, 2, 1, keepdim=True)


CROP_256 = (35, 223, 32, 220)  # top, bottom, left, right of the face in a 256x256 FFHQ-aligned image


def crop_face(x):
    """The official ID-loss crop [35:223, 32:220] for 256x256 images; the same box scaled for other sides."""
    side = x.shape[-1]
    if x.shape[-2] != side:
        raise ValueError(f"identity crop expects square images, got {tuple(x.shape[-2:])}")
    top, bottom, left, right = (round(v * side / 256) for v in CROP_256)
    return x[:, :, top:bottom, left:right]


class IdentityNet(nn.Module):
    """The ID loss's feature extractor: crop the face region of a 256x256 image, pool to 112, embed.

    The crop [35:223, 32:220] is the official one for 256x256 inputs (FFHQ-aligned faces); other square
    sizes get the same box scaled. The backbone always runs in eval mode (frozen BN statistics, no
    dropout) as in the official loss, even when a parent module is put in train().
    """

    def __init__(self, backbone: Backbone | None = None):
        super().__init__()
        self.facenet = backbone if backbone is not None else Backbone()
        self.face_pool = nn.AdaptiveAvgPool2d((112, 112))
        self.facenet.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.facenet.eval()
        return self

    def forward(self, x):
        """x: (B, 3, 256, 256) in [-1, 1] -> (B, 512) unit-norm identity embeddings."""
        return self.facenet(self.face_pool(crop_face(x)))


def load_ir_se50(path, hint: str = "") -> IdentityNet:
    """Build an IdentityNet from the official `model_ir_se50.pth` (a plain backbone state dict).

    Parameters are frozen (requires_grad False); gradients still flow to the input images.
    `hint` is appended to error messages (e.g. "pass --id-weights PATH").
    """
    suffix = f"; {hint}" if hint else ""
    path = Path(path)
    if not path.is_file():
        raise E4EError(f"ArcFace IR-SE50 weights not found: {path} (the identity loss needs model_ir_se50.pth){suffix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise E4EError(f"cannot read ArcFace weights {path}: {first_line(exc)}{suffix}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise E4EError(f"{path} is not an ArcFace IR-SE50 state dict (expected model_ir_se50.pth){suffix}")
    backbone = Backbone(input_size=112, num_layers=50, drop_ratio=0.6, mode="ir_se")
    detail = mismatch(backbone.state_dict(), state)
    if detail:
        raise E4EError(f"{path} is not an ArcFace IR-SE50 state dict ({detail}; expected model_ir_se50.pth){suffix}")
    backbone.load_state_dict(state, strict=True)
    net = IdentityNet(backbone)
    net.requires_grad_(False)
    return net.eval()
