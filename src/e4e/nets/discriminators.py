"""Discriminators: e4e's latent-code critic and StyleGAN2's image discriminator.

Keys follow the official code so checkpoints load with strict=True: `LatentCodesDiscriminator` as in
e4e's models/discriminator.py (its `discriminator_state_dict`), `Discriminator` as rosinality's
stylegan2-pytorch (the `d` entry of its checkpoints).
"""
import math
from dataclasses import dataclass

import torch
from torch import nn

from e4e.nets.layers import EqualConv2d, EqualLinear
from e4e.nets.stylegan2 import BASE_CHANNELS, Blur, FusedLeakyReLU, GeneratorConfig


class LatentCodesDiscriminator(nn.Module):
    """MLP critic on single W codes (B, style_dim) -> (B, 1) logits; keys mlp.0/2/4/6 for n_mlp=4.

    e4e trains it adversarially against the encoder's codes (real = mapping(z)) so that they stay
    inside W; it uses ordinary nn.Linear, not the equalised-lr layers of StyleGAN.
    """

    def __init__(self, style_dim: int = 512, n_mlp: int = 4):
        super().__init__()
        self.style_dim = style_dim
        layers = []
        for _ in range(n_mlp - 1):
            layers += [nn.Linear(style_dim, style_dim), nn.LeakyReLU(0.2)]
        layers.append(nn.Linear(style_dim, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, w):
        return self.mlp(w)


@dataclass
class DiscriminatorConfig:
    """rosinality's Discriminator settings; widths follow the generator's table (see from_generator)."""
    size: int = 1024
    channel_multiplier: int = 2
    channel_max: int = 512
    stddev_group: int = 4

    def __post_init__(self):
        if self.size < 4 or self.size & (self.size - 1) or self.size > 1024:
            raise ValueError(f"discriminator size must be a power of two in 4..1024, got {self.size}")

    @classmethod
    def from_generator(cls, cfg: GeneratorConfig, **kw) -> "DiscriminatorConfig":
        return cls(size=cfg.size, channel_multiplier=cfg.channel_multiplier, channel_max=cfg.channel_max, **kw)

    def channels(self, res: int) -> int:
        return min(BASE_CHANNELS[res] * (self.channel_multiplier if res >= 64 else 1), self.channel_max)


class ConvLayer(nn.Sequential):
    """[Blur ->] EqualConv2d [-> FusedLeakyReLU], rosinality's index layout (0, 1[, 2]).

    Downsampling blurs first and then convolves with stride 2, which low-passes before decimating.
    With an activation the bias lives in the FusedLeakyReLU, not the conv.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, downsample: bool = False,
                 blur_kernel=(1, 3, 3, 1), bias: bool = True, activate: bool = True):
        layers = []
        if downsample:
            p = (len(blur_kernel) - 2) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding,
                                  bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_ch))
        super().__init__(*layers)
        self.downsample = downsample

    def forward(self, x):
        # impl="fold" (set on the Blur, as on every op module): the blur folded into the strided conv
        if not (self.downsample and self[0].impl == "fold"):
            return super().forward(x)
        from e4e.ops.fir_conv import fir_then_conv2d
        blur, conv = self[0], self[1]
        x = fir_then_conv2d(x, conv.weight * conv.scale, blur.kernel, blur.pad, stride=conv.stride, bias=conv.bias)
        return self[2](x) if len(self) > 2 else x


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        self.conv1 = ConvLayer(in_ch, in_ch, 3, blur_kernel=blur_kernel)
        self.conv2 = ConvLayer(in_ch, out_ch, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_ch, out_ch, 1, downsample=True, blur_kernel=blur_kernel, bias=False, activate=False)

    def forward(self, x):
        # 1/sqrt(2) keeps the sum of two unit-variance branches at unit variance
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


class Discriminator(nn.Module):
    """StyleGAN2's residual image discriminator: images (B, 3, size, size) -> logits (B, 1)."""

    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        self.cfg = cfg
        self.stddev_group = cfg.stddev_group
        self.stddev_feat = 1
        blur = (1, 3, 3, 1)
        in_ch = cfg.channels(cfg.size)
        convs = [ConvLayer(3, in_ch, 1)]
        for i in range(int(math.log2(cfg.size)), 2, -1):
            out_ch = cfg.channels(2 ** (i - 1))
            convs.append(ResBlock(in_ch, out_ch, blur))
            in_ch = out_ch
        self.convs = nn.Sequential(*convs)
        c4 = cfg.channels(4)
        self.final_conv = ConvLayer(in_ch + 1, c4, 3)
        self.final_linear = nn.Sequential(EqualLinear(c4 * 4 * 4, c4, activation="fused_lrelu"), EqualLinear(c4, 1))
        # NHWC activations (the layout cuDNN's tensor-core convs want, and the one that sends the depthwise
        # blur to cuDNN instead of ATen's slow kernel): the same function, set by the GAN trainer
        self.channels_last = False

    def minibatch_stddev(self, x):
        """Append the mean feature std across groups of `group` samples (sample b is in group b % (B/group))."""
        b, c, h, w = x.shape
        group = min(b, self.stddev_group)
        if b % group:
            raise ValueError(f"discriminator batch {b} must be a multiple of its stddev group {group}")
        f = self.stddev_feat
        std = x.view(group, -1, f, c // f, h, w)
        std = torch.sqrt(std.var(0, unbiased=False) + 1e-8)
        std = std.mean([2, 3, 4], keepdim=True).squeeze(2)
        return torch.cat([x, std.repeat(group, 1, h, w)], 1)

    def forward(self, x):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.final_conv(self.minibatch_stddev(self.convs(x)))
        return self.final_linear(out.reshape(out.shape[0], -1))  # (C, H, W) order in either layout
