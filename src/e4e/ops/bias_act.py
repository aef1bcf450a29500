"""Pointwise ops after a convolution: bias + leaky ReLU + gain, and noise injection.

In: activations (B, C, ...) and small per-channel / per-pixel operands. Out: a tensor of x's shape,
dtype and memory layout. impl="triton" runs one Triton kernel per call on CUDA (e4e.ops.impl says
when it falls back to the reference); "ref" and "taps" run the PyTorch reference.
"""
import math

import torch
import torch.nn.functional as F

from e4e.ops.impl import check_impl, use_triton


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None = None, negative_slope: float = 0.2,
                     scale: float = math.sqrt(2), impl: str = "ref") -> torch.Tensor:
    """Bias (broadcast over dim 1) + leaky ReLU, times a gain.

    The sqrt(2) gain keeps activations at unit variance after the leaky ReLU (StyleGAN2's convention);
    rosinality's CUDA kernel computes exactly this.
    """
    check_impl(impl)
    if use_triton(impl, x, bias):
        from e4e.ops.triton_kernels import epilogue_triton
        return epilogue_triton(x, bias=bias, act=True, negative_slope=negative_slope, gain=scale)
    if bias is not None:
        shape = [1, bias.shape[0]] + [1] * (x.ndim - 2)
        x = x + bias.view(shape).to(x.dtype)
    return F.leaky_relu(x, negative_slope) * scale


def add_noise(x: torch.Tensor, noise: torch.Tensor, weight: torch.Tensor, impl: str = "ref") -> torch.Tensor:
    """x (B, C, H, W) + weight * noise, noise (B or 1, 1, H, W) shared by all channels, weight (1,).

    The result keeps x's dtype: an fp32 noise buffer would otherwise promote every later bf16
    activation to fp32."""
    check_impl(impl)
    if use_triton(impl, x, noise, weight):
        from e4e.ops.triton_kernels import epilogue_triton
        return epilogue_triton(x, noise=noise, noise_weight=weight, act=False, gain=1.0)
    return x + (weight * noise).to(x.dtype)
