"""Numerics-critical ops in plain PyTorch: no compile step, the same code on CPU and GPU.

Each op here is the production implementation; tests/test_ops.py checks it in float64 against an
independent, obviously-correct formulation (explicit loops / per-sample convolutions).
"""

from e4e.ops.bias_act import fused_leaky_relu
from e4e.ops.modconv import modulated_conv2d
from e4e.ops.upfirdn2d import make_kernel, upfirdn2d

__all__ = ["fused_leaky_relu", "make_kernel", "modulated_conv2d", "upfirdn2d"]
