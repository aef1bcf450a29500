"""StyleGAN2 generator in rosinality's state-dict layout, in plain PyTorch.

A `g_ema` state dict from rosinality's stylegan2-pytorch (the format the official e4e uses) loads
with strict=True. Blur/upsample kernels are persistent buffers: the loaded values are used, not
recomputed, so checkpoints with non-standard kernels reproduce exactly.

How it computes is one explicit choice, `Generator.configure(grouped=, impl=, channels_last=)`: the
modulated-conv form and the implementation of its ops (e4e.ops.impl: "ref", "taps" for torch.compile,
"triton"). The defaults are the reference; e4e.fast picks the fast settings for inference.
"""
import math
import random
from dataclasses import dataclass

import torch
from torch import nn

from e4e.nets.layers import EqualLinear, PixelNorm
from e4e.ops import add_noise, fused_leaky_relu, make_kernel, modconv_epilogue, modulated_conv2d, upfirdn2d
from e4e.ops.impl import check_impl

BASE_CHANNELS = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}


@dataclass
class GeneratorConfig:
    size: int = 1024
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    channel_max: int = 512  # cap on every layer's width; < 512 gives the small models used in tests
    lr_mlp: float = 0.01

    def __post_init__(self):
        if self.size < 4 or self.size & (self.size - 1) or self.size > 1024:
            raise ValueError(f"generator size must be a power of two in 4..1024, got {self.size}")

    def channels(self, res: int) -> int:
        c = BASE_CHANNELS[res] * (self.channel_multiplier if res >= 64 else 1)
        return min(c, self.channel_max)

    @property
    def log_size(self) -> int:
        return int(math.log2(self.size))

    @property
    def n_latent(self) -> int:
        return self.log_size * 2 - 2

    @property
    def num_layers(self) -> int:
        return (self.log_size - 2) * 2 + 1


class Blur(nn.Module):
    def __init__(self, kernel=(1, 3, 3, 1), pad=(0, 0), upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", make_kernel(kernel) * upsample_factor ** 2)
        self.pad = pad
        self.impl = "ref"

    def forward(self, x):
        return upfirdn2d(x, self.kernel, pad=self.pad, impl=self.impl)


class Upsample(nn.Module):
    def __init__(self, kernel=(1, 3, 3, 1), factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel) * factor ** 2)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)
        self.impl = "ref"

    def forward(self, x):
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad, impl=self.impl)


class ModulatedConv2d(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int, demodulate: bool = True,
                 upsample: bool = False, blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        self.in_ch, self.out_ch, self.kernel_size = in_ch, out_ch, kernel_size
        self.demodulate, self.upsample = demodulate, upsample
        if upsample:
            factor = 2
            p = len(blur_kernel) - factor - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.scale = 1 / math.sqrt(in_ch * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1)
        # Grouped conv is the reference; the shared-weight form is faster on GPU. impl: the blur's.
        self.grouped = True
        self.impl = "ref"

    def forward(self, x, style, defer_demod: bool = False):
        """defer_demod (shared form): -> (output, demodulation coefficients) for modconv_epilogue."""
        s = self.modulation(style)
        return modulated_conv2d(
            x, self.weight[0] * self.scale, s, demodulate=self.demodulate, padding=self.padding,
            up=self.upsample, blur_kernel=self.blur.kernel if self.upsample else None,
            blur_pad=self.blur.pad if self.upsample else (0, 0), grouped=self.grouped, impl=self.impl,
            defer_demod=defer_demod)

    def extra_repr(self):
        return (f"{self.in_ch}, {self.out_ch}, {self.kernel_size}, upsample={self.upsample}, "
                f"demodulate={self.demodulate}")


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.impl = "ref"

    @staticmethod
    def draw(x):
        b, _, h, w = x.shape
        return x.new_empty(b, 1, h, w).normal_()

    def forward(self, x, noise=None):
        return add_noise(x, self.draw(x) if noise is None else noise, self.weight, impl=self.impl)


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int):
        return self.input.repeat(batch, 1, 1, 1)


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.impl = "ref"

    def forward(self, x):
        return fused_leaky_relu(x, self.bias, impl=self.impl)


class StyledConv(nn.Module):
    def __init__(self, in_ch, out_ch, kernel_size, style_dim, upsample=False, blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, kernel_size, style_dim, upsample=upsample, blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch)

    def forward(self, x, style, noise=None):
        if self.conv.grouped:  # the reference chain: demodulated conv, noise, bias + leaky ReLU
            return self.activate(self.noise(self.conv(x, style), noise=noise))
        # shared form: demodulation, noise, bias, leaky ReLU and gain in one epilogue (one kernel with triton)
        out, dcoef = self.conv(x, style, defer_demod=True)
        return modconv_epilogue(out, dcoef, self.activate.bias, NoiseInjection.draw(out) if noise is None else noise,
                                self.noise.weight, impl=self.activate.impl)


class ToRGB(nn.Module):
    def __init__(self, in_ch, style_dim, upsample=True, blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x, style, skip=None):
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class Generator(nn.Module):
    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        self.size, self.style_dim = cfg.size, cfg.style_dim
        self.log_size, self.n_latent, self.num_layers = cfg.log_size, cfg.n_latent, cfg.num_layers
        blur = (1, 3, 3, 1)
        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(cfg.style_dim, cfg.style_dim, lr_mul=cfg.lr_mlp, activation="fused_lrelu")
            for _ in range(cfg.n_mlp)])
        c4 = cfg.channels(4)
        self.input = ConstantInput(c4)
        self.conv1 = StyledConv(c4, c4, 3, cfg.style_dim, blur_kernel=blur)
        self.to_rgb1 = ToRGB(c4, cfg.style_dim, upsample=False)
        self.convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        self.noises = nn.Module()
        for i in range(self.num_layers):
            res = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, res, res))
        in_ch = c4
        for i in range(3, self.log_size + 1):
            out_ch = cfg.channels(2 ** i)
            self.convs.append(StyledConv(in_ch, out_ch, 3, cfg.style_dim, upsample=True, blur_kernel=blur))
            self.convs.append(StyledConv(out_ch, out_ch, 3, cfg.style_dim, blur_kernel=blur))
            self.to_rgbs.append(ToRGB(out_ch, cfg.style_dim))
            in_ch = out_ch
        self.channels_last = False

    def configure(self, grouped: bool | None = None, impl: str | None = None,
                  channels_last: bool | None = None) -> "Generator":
        """How the generator computes (None leaves a setting as it is); every form is the same function,
        tests check each against the reference (grouped=True, impl="ref", channels_last=False).

        grouped: grouped modulated convs (one weight per sample: the reference) or the shared-weight form
        (faster on GPU; the demodulation then runs in the fused epilogue with noise, bias and activation).
        impl: the ops' implementation, e4e.ops.impl: "ref", "taps" (FIR as fusable taps: for
        torch.compile) or "triton" (Triton kernels on CUDA, inference only; the reference elsewhere).
        channels_last: NHWC synthesis. The modulated weights are 5-D, so `.to(memory_format=...)` on the
        module does nothing; the layout is set on the activations and every op after the constant input
        keeps it (cuDNN's tensor-core kernels want NHWC).
        """
        for m in self.modules():
            if grouped is not None and isinstance(m, ModulatedConv2d):
                m.grouped = bool(grouped)
            if impl is not None and isinstance(m, (Blur, Upsample, ModulatedConv2d, NoiseInjection, FusedLeakyReLU)):
                m.impl = check_impl(impl)
        if channels_last is not None:
            self.channels_last = bool(channels_last)
        return self

    def use_grouped_conv(self, flag: bool) -> "Generator":
        """configure(grouped=flag), kept for callers of the earlier API (the trainers)."""
        return self.configure(grouped=flag)

    def use_channels_last(self, flag: bool) -> "Generator":
        """configure(channels_last=flag), kept for callers of the earlier API."""
        return self.configure(channels_last=flag)

    # -- latent spaces ---------------------------------------------------------------------------
    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """Z (B, style_dim) -> W (B, style_dim)."""
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, seed: int | None = 0, batch: int = 4096) -> torch.Tensor:
        """Mean of mapping(z) over n seeded z: the truncation centre when a checkpoint has none."""
        device = self.input.input.device
        gen = torch.Generator(device="cpu")
        if seed is not None:
            gen.manual_seed(seed)
        total = torch.zeros(self.style_dim, dtype=torch.float64, device=device)
        done = 0
        while done < n:
            k = min(batch, n - done)
            z = torch.randn(k, self.style_dim, generator=gen).to(device)
            total += self.mapping(z).double().sum(0)
            done += k
        return (total / n).float().unsqueeze(0)

    def get_noise(self) -> list[torch.Tensor]:
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    # -- synthesis -------------------------------------------------------------------------------
    def synthesis(self, latent: torch.Tensor, noise: list | None = None, randomize_noise: bool = False):
        """W+ (B, n_latent, style_dim) -> image (B, 3, size, size). noise: per-layer tensors or None."""
        if noise is None:
            noise = [None] * self.num_layers if randomize_noise else self.get_noise()
        out = self.input(latent.shape[0])
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        out = self.conv1(out, latent[:, 0], noise=noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for conv_a, conv_b, n1, n2, to_rgb in zip(self.convs[::2], self.convs[1::2], noise[1::2], noise[2::2],
                                                   self.to_rgbs):
            out = conv_a(out, latent[:, i], noise=n1)
            out = conv_b(out, latent[:, i + 1], noise=n2)
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        return skip

    def forward(self, styles, input_is_latent: bool = False, truncation: float = 1.0, truncation_latent=None,
                noise=None, randomize_noise: bool = True, inject_index: int | None = None,
                return_latents: bool = False):
        """rosinality's signature. styles: a tensor or a list of 1 or 2 tensors (two = style mixing),
        each Z/W (B, D) or W+ (B, n_latent, D). Returns (image, W+ latent or None)."""
        if torch.is_tensor(styles):
            styles = [styles]
        if not input_is_latent:
            styles = [self.mapping(s) for s in styles]
        if truncation < 1:
            if truncation_latent is None:
                raise ValueError("truncation < 1 needs truncation_latent (e.g. generator.mean_latent())")
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]
        if len(styles) < 2:
            s = styles[0]
            latent = s if s.ndim == 3 else s.unsqueeze(1).repeat(1, self.n_latent, 1)
        else:
            if inject_index is None:
                inject_index = random.randint(1, self.n_latent - 1)
            a, b = styles[0], styles[1]
            a = a[:, :inject_index] if a.ndim == 3 else a.unsqueeze(1).repeat(1, inject_index, 1)
            b = b[:, inject_index:] if b.ndim == 3 else b.unsqueeze(1).repeat(1, self.n_latent - inject_index, 1)
            latent = torch.cat([a, b], 1)
        image = self.synthesis(latent, noise=noise, randomize_noise=randomize_noise)
        return image, (latent if return_latents else None)
