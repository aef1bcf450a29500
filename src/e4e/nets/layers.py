"""Equalised-learning-rate building blocks shared by the generator, encoders and discriminators.

Parameter names (weight, bias) match rosinality's so official state dicts load unchanged.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from e4e.ops import fused_leaky_relu
from e4e.ops.conv import conv2d


class PixelNorm(nn.Module):
    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer whose weights are stored at unit scale and scaled at run time (He constant / lr_mul).

    lr_mul < 1 (0.01 in the mapping network) slows that layer's effective learning rate: weights are
    stored divided by lr_mul, which is why official mapping weights have std ~100.
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: str | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.scale = (1 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x):
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation == "fused_lrelu":
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias)

    def extra_repr(self):
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, activation={self.activation}"


class EqualConv2d(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_ch * kernel_size ** 2)
        self.stride = stride
        self.padding = padding
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.impl = "ref"  # e4e.ops.impl: "gradfix" runs the conv through e4e.ops.conv (double backward)

    def forward(self, x):
        return conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding,
                      impl=self.impl)

    def extra_repr(self):
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, {k}, stride={self.stride}, padding={self.padding}"
