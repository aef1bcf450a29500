import math

import torch
import torch.nn.functional as F


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None = None, negative_slope: float = 0.2,
                     scale: float = math.sqrt(2)) -> torch.Tensor:
    """Bias (broadcast over dim 1) + leaky ReLU, times a gain.

    The sqrt(2) gain keeps activations at unit variance after the leaky ReLU (StyleGAN2's convention);
    rosinality's CUDA kernel computes exactly this.
    """
    if bias is not None:
        shape = [1, bias.shape[0]] + [1] * (x.ndim - 2)
        x = x + bias.view(shape).to(x.dtype)
    return F.leaky_relu(x, negative_slope) * scale
