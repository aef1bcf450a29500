"""e4e training losses, following the official coach (github omertov/encoder4editing, training/coach.py).

Reconstruction: LPIPS (v0.1), identity similarity (ArcFace for faces, MoCo-v2 otherwise, our attribute
network for avatars) and L2 (plain
`F.mse_loss`, not wrapped here). Editability: the delta-norm regulariser on the W+ offsets and the latent
discriminator's non-saturating losses with lazy R1, fed from a pool of past codes.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import autograd, nn

from e4e.errors import E4EError
from e4e.nets.perceptual import (
    freeze,
    load_moco_resnet50,
    load_torchvision_features,
    load_weights_file,
    lpips_backbone,
)

# LPIPS's ScalingLayer: maps [-1, 1] images to ImageNet-normalised ones.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_EPS = 1e-10  # added to the channel norm before dividing (lpips' normalize_tensor)
_TORCHVISION_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}


class _FrozenLoss(nn.Module):
    """A loss built on pretrained nets: they stay in eval mode (fixed BatchNorm statistics, no dropout)
    even when a trainer calls .train() on everything."""

    def train(self, mode: bool = True):
        return super().train(False)


class LPIPS(_FrozenLoss):
    """LPIPS v0.1 as a loss: mean over the batch of the per-image distance.

    backbone_weights: torchvision's alexnet/vgg16 state dict (only `features.*` is used).
    lin_weights: the lpips package's `alex.pth` / `vgg.pth` (keys `lin<k>.model.1.weight`).
    """

    def __init__(self, net: str = "alex", backbone_weights=None, lin_weights=None):
        super().__init__()
        self.backbone = lpips_backbone(net)
        load_torchvision_features(
            self.backbone, backbone_weights, what=f"LPIPS ({net})",
            how=f"pass the torchvision {_TORCHVISION_FILES[net]} as --lpips-backbone PATH "
                f"(backbone_weights=PATH)")
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in self.backbone.channels)
        self._load_lins(net, lin_weights)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        freeze(self)

    def _load_lins(self, net: str, path) -> None:
        sd = load_weights_file(path, f"LPIPS ({net})",
                               f"pass the lpips package's {net}.pth as --lpips-weights PATH (lin_weights=PATH)")
        for k, lin in enumerate(self.lins):
            key = f"lin{k}.model.1.weight"
            w = sd.get(key) if isinstance(sd, dict) else None
            if w is None or tuple(w.shape) != tuple(lin.weight.shape):
                raise E4EError(f"{path} is not an LPIPS {net}.pth: {key} missing or of the wrong shape")
            lin.weight.data.copy_(w)

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS, shape (B,); images in [-1, 1]."""
        fx = self.backbone((x - self.shift) / self.scale)
        fy = self.backbone((y - self.shift) / self.scale)
        total = 0
        for a, b, lin in zip(fx, fy, self.lins):
            d = (_unit_channels(a) - _unit_channels(b)) ** 2
            total = total + lin(d).mean(dim=(1, 2, 3))
        return total

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.distance(x, y).mean()


def _unit_channels(f: torch.Tensor) -> torch.Tensor:
    return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + LPIPS_EPS)


class Similarity(NamedTuple):
    """What the official IDLoss / MocoLoss return: the loss, the mean similarity improvement
    <f(y_hat), f(y)> - <f(y), f(x)> (logged as `id_improve`; a detached 0-dim tensor, so a training step
    need not wait for the GPU), and the per-sample similarities (B, 3): target, input, views."""

    loss: torch.Tensor
    improvement: torch.Tensor
    per_sample: torch.Tensor

    @property
    def logs(self) -> list[dict]:
        """Per-sample similarities as the official id_logs dicts (reads them back to the host)."""
        return [{"diff_target": float(t), "diff_input": float(i), "diff_views": float(v)}
                for t, i, v in self.per_sample.tolist()]


class _SimilarityLoss(_FrozenLoss):
    def features(self, img: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> Similarity:
        f_hat = self.features(y_hat)
        with torch.no_grad():  # targets and inputs carry no gradient (official: y_feats.detach())
            f_y = self.features(y)
            f_x = self.features(x)
        diff_target = (f_hat * f_y).sum(dim=1)
        diff_input = (f_hat.detach() * f_x).sum(dim=1)
        diff_views = (f_y * f_x).sum(dim=1)
        loss = (1 - diff_target).mean()
        improvement = (diff_target.detach() - diff_views).mean()
        return Similarity(loss, improvement, torch.stack([diff_target.detach(), diff_input, diff_views], 1))


class IDLoss(_SimilarityLoss):
    """Face identity loss: 1 - cosine similarity of ArcFace (IR-SE50) features.

    `net` maps (B, 3, 256, 256) images in [-1, 1] to L2-normalised (B, 512) features, cropping the face
    region itself (e4e.nets.identity.IdentityNet).
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = freeze(net)

    @classmethod
    def from_weights(cls, path, how: str = "pass --id-weights PATH") -> "IDLoss":
        from e4e.nets.identity import load_ir_se50

        return cls(load_ir_se50(path, hint=how))

    def features(self, img: torch.Tensor) -> torch.Tensor:
        return self.net(img)


MOCO_SIZE = 224


class MocoLoss(_SimilarityLoss):
    """Non-face similarity loss on MoCo-v2 ResNet-50 pooled features, as the official MocoLoss:
    the image is resized to 224x224 with F.interpolate's default (nearest) mode, fed without
    ImageNet normalisation or cropping, and the 2048-d pooled features are L2-normalised."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = freeze(net)

    @classmethod
    def from_weights(cls, path, how: str = "pass --moco-weights PATH") -> "MocoLoss":
        return cls(load_moco_resnet50(path, how))

    def features(self, img: torch.Tensor) -> torch.Tensor:
        img = F.interpolate(img, size=MOCO_SIZE)
        return F.normalize(self.net(img).flatten(1), dim=1)


class AttributeSimilarityLoss(_SimilarityLoss):
    """Similarity loss for the avatar domain: 1 - cosine of the unit-norm embeddings of an attribute
    network trained on the avatar labels (e4e.nets.attributes.AttributeNet.embed; the similarity
    network, trained on half A of the train split by `e4e train-classifier`). The network resizes its
    input itself; its pooled features are non-negative (after a ReLU), so the loss lies in [0, 1]."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = freeze(net)

    @classmethod
    def from_weights(cls, path, how: str = "pass --sim-weights PATH") -> "AttributeSimilarityLoss":
        from pathlib import Path

        from e4e.checkpoints.attributes import load_attribute_net

        if not path or not Path(path).is_file():
            raise E4EError(f"the avatar similarity network {path or ''} is missing: {how} "
                           "(a .safetensors from 'e4e train-classifier')")
        return cls(load_attribute_net(path))

    def features(self, img: torch.Tensor) -> torch.Tensor:
        return self.net.embed(img)


# ------------------------------------------------------------------------------------- delta regulariser


def delta_norms(codes: torch.Tensor, stage: int, norm: int = 2) -> torch.Tensor:
    """Batch-mean p-norm of each active offset delta_i = w_i - w_0, i = 1..stage; shape (n_active,).

    `codes` are the W+ codes fed to the generator, (B, n_styles, 512) (official: the decoder's returned
    latent, i.e. encoder codes + latent_avg; latent_avg is the same in every row so it cancels).
    """
    n_active = min(int(stage), codes.shape[1] - 1)
    if n_active <= 0:
        return codes.new_zeros(0)
    deltas = codes[:, 1:n_active + 1] - codes[:, :1]
    return torch.linalg.vector_norm(deltas, ord=norm, dim=2).mean(dim=0)


def delta_regularisation(codes: torch.Tensor, stage: int, norm: int = 2) -> torch.Tensor:
    """sum_{i=1..stage} mean_batch ||w_i - w_0||_p (official `total_delta_loss`, before
    `delta_norm_lambda`). The official coach adds it only while progressive training is on and the
    stage is not Inference; the caller decides that."""
    return delta_norms(codes, stage, norm).sum()


# ------------------------------------------------------------------------------ latent discriminator


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss: softplus(-D(real)).mean() + softplus(D(fake)).mean()."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Encoder's adversarial loss softplus(-D(fake)).mean().

    The official coach averages this over the discriminated styles; since every style has the same
    batch size, that equals this loss on D(codes[:, dims].reshape(-1, 512)).
    """
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real_w: torch.Tensor, gamma: float = 10.0,
               every: int = 1) -> torch.Tensor:
    """Lazy R1: gamma/2 * every * E_batch ||dD(real_w)/d real_w||^2.

    The official coach runs it as an extra discriminator step when step % d_reg_every == 0, scaled by
    r1/2 and by d_reg_every (pass every=d_reg_every). `real_w` must require grad.
    """
    (grad,) = autograd.grad(real_logits.sum(), real_w, create_graph=True)
    penalty = grad.pow(2).reshape(grad.shape[0], -1).sum(dim=1).mean()
    return gamma / 2 * penalty * every


class WPool:
    """Pool of past latent codes for the discriminator (official LatentCodesPool; CycleGAN's image pool).

    query(ws): each sample w (a (512,) code, or a (n, 512) stack from which one row is drawn uniformly)
    is, while the pool holds fewer than `size` codes, stored and returned; once full, with probability
    1/2 it replaces a uniformly drawn stored code, which is returned instead, else it is returned
    as is. size 0 returns `ws` unchanged. Randomness comes from the pool's own generator, whose state
    is in state_dict() so a resumed run draws the same sequence.
    """

    def __init__(self, size: int = 50, seed: int = 0):
        self.size = int(size)
        self.ws: list[torch.Tensor] = []
        self.rng = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.ws)

    def _randint(self, n: int) -> int:
        return int(torch.randint(n, (1,), generator=self.rng))

    def query(self, ws: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return ws
        if self.ws and self.ws[0].device != ws.device:  # loaded from a checkpoint (CPU): join the codes
            self.ws = [w.to(ws.device) for w in self.ws]
        out = []
        for w in ws:
            if w.ndim == 2:
                w = w[self._randint(w.shape[0])]
            w = w.detach()
            if len(self.ws) < self.size:
                self.ws.append(w.clone())
                out.append(w)
            elif float(torch.rand((), generator=self.rng)) > 0.5:
                i = self._randint(self.size)
                out.append(self.ws[i])
                self.ws[i] = w.clone()
            else:
                out.append(w)
        return torch.stack(out)

    def state_dict(self) -> dict:
        ws = torch.stack(self.ws).cpu() if self.ws else torch.zeros(0)
        return {"size": self.size, "ws": ws, "rng": self.rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.size = int(state["size"])
        self.ws = [w.clone() for w in state["ws"]] if state["ws"].numel() else []
        self.rng.set_state(state["rng"])


# -------------------------------------------------------------------- EfficientNet perceptual distance


class EfficientNetPerceptual(_FrozenLoss):
    """LPIPS-style perceptual distance on a frozen ImageNet EfficientNet-Lite0, for where LPIPS's own
    AlexNet/VGG weights cannot be had.

    d(x, y) = sum over taps l of the spatial mean of ||u_l(x) - u_l(y)||^2, where u_l are the channel-wise
    unit-normalised outputs of the last block at each resolution (1/2 .. 1/32 of the input: 16, 24, 40, 112
    and 320 channels; e4e.nets.efficientnet.STAGE_ENDS). Every tap and channel weighs the same: no
    calibrated linear layers (LPIPS's `lin` weights, fitted to human judgements) exist for this backbone,
    so this is LPIPS's uncalibrated baseline form and its values are not on LPIPS's scale (each tap adds at
    most 4).

    Images in [-1, 1] are resized bilinearly to `size` x `size` (224 by default; None keeps the native
    size) and normalised as the Lite models were trained, (pixel - 127) / 128. Why 224 for 64-256 px
    images: the filters and batch-norm statistics were fitted at 224 on objects filling the frame; at 64 px
    the deepest tap is 2x2 and dominated by padding, and a whole 64-px emoji would look like a small detail.
    Upsampling costs compute (about 12x a native 64-px pass) but keeps every tap meaningful.

    `weights`: the `efficientnet-lite0-57934424.pth` file (see
    e4e.nets.efficientnet.find_efficientnet_lite0_weights for the copy an installed package ships).
    """

    def __init__(self, weights, size: int | None = 224, taps=None, how: str = "pass --perceptual-weights PATH"):
        super().__init__()
        from e4e.nets.efficientnet import STAGE_ENDS, load_efficientnet_lite0

        self.net = load_efficientnet_lite0(weights, how)
        self.taps = tuple(sorted(STAGE_ENDS if taps is None else taps))
        if not self.taps or self.taps[0] < 0 or self.taps[-1] >= len(self.net._blocks):
            raise E4EError(f"EfficientNet perceptual taps must be block indices 0..{len(self.net._blocks) - 1}, "
                           f"got {taps}")
        self.size = size

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image distance, shape (B,); images in [-1, 1] of one shape."""
        from e4e.nets.efficientnet import lite_normalise, resize

        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise E4EError(f"perceptual distance needs two (B, 3, H, W) tensors of one shape, got "
                           f"{tuple(x.shape)} and {tuple(y.shape)}")
        both = lite_normalise(resize(torch.cat([x, y]), self.size))  # one pass for both halves
        total = 0
        for f in self.net.block_outputs(both, self.taps):
            fx, fy = _unit_channels(f).chunk(2)
            total = total + (fx - fy).pow(2).sum(dim=1).mean(dim=(1, 2))
        return total

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.distance(x, y).mean()
