"""Numerics-critical ops: plain PyTorch references, plus the forms the fast paths use.

Each op takes impl= (e4e.ops.impl): "ref" (the PyTorch reference: no compile step, the same code on
CPU and GPU), "taps" (the torch.compile form), "gradfix" (the reference with its convolutions through
e4e.ops.conv, for double backward) or "triton" (Triton kernels on CUDA, inference only,
e4e.ops.triton_kernels). tests/test_ops.py checks the reference in float64 against an independent,
obviously-correct formulation (explicit loops / per-sample convolutions) and every other form
against the reference (tests/test_ops_triton.py for the kernels).
"""

from e4e.ops.bias_act import add_noise, fused_leaky_relu
from e4e.ops.impl import IMPLS, triton_available
from e4e.ops.modconv import modconv_epilogue, modulated_conv2d
from e4e.ops.upfirdn2d import make_kernel, upfirdn2d

__all__ = ["IMPLS", "add_noise", "fused_leaky_relu", "make_kernel", "modconv_epilogue", "modulated_conv2d",
           "triton_available", "upfirdn2d"]
