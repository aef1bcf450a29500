"""StyleGAN2 modulated convolution and the epilogue that follows it in a StyledConv.

In: activations (B, I, H, W), the conv weight (O, I, k, k), per-sample styles (B, I). Out: (B, O, H', W').
Two forms of the same function: grouped (one modulated weight per sample, the reference) and shared
(one weight for the batch; the styles scale the activations and the demodulation scales the output).
The shared form can leave the demodulation to `modconv_epilogue`, which applies it together with the
noise, bias, leaky ReLU and gain: in one Triton kernel with impl="triton".
"""
import math

import torch

from e4e.ops.bias_act import add_noise, fused_leaky_relu
from e4e.ops.conv import conv2d, conv_transpose2d
from e4e.ops.impl import check_impl, use_triton
from e4e.ops.upfirdn2d import upfirdn2d


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool = True,
                     padding: int = 0, up: bool = False, blur_kernel: torch.Tensor | None = None,
                     blur_pad: tuple[int, int] = (0, 0), grouped: bool = True, eps: float = 1e-8,
                     impl: str = "ref", defer_demod: bool = False):
    """StyleGAN2 modulated convolution.

    x: (B, I, H, W); weight: (O, I, k, k), already multiplied by its equalised-lr scale; styles: (B, I).
    up=True is a stride-2 transposed convolution followed by the FIR blur (rosinality's order); impl is
    the implementation of the convolutions and the blur (e4e.ops.impl; "fold" makes the two one conv).
    grouped=True folds the batch into conv groups (one weight per sample: the reference form);
    grouped=False scales activations instead of weights, so one shared weight serves the whole batch
    (cheaper on GPU; the same function up to rounding).
    defer_demod (shared form with demodulate only): -> (output before demodulation, coefficients (B, O)
    in float32 or wider) for modconv_epilogue; the blur is per channel and linear, so scaling after it is the same.
    """
    b, i, h, w = x.shape
    o, _, kh, kw = weight.shape
    if defer_demod and (grouped or not demodulate):
        raise ValueError("defer_demod needs the shared-weight form (grouped=False) with demodulate=True")
    dcoef, blurred = None, False

    def up_conv(x, wgt, groups):  # stride-2 transposed conv [and the blur, folded into it: impl="fold"]
        # -> (output, whether the blur is done)
        if impl == "fold":
            from e4e.ops.fir_conv import conv_transpose2d_then_fir
            y = conv_transpose2d_then_fir(x, wgt, blur_kernel, blur_pad, stride=2, groups=groups)
            if y is not None:
                return y, True
        return conv_transpose2d(x, wgt, stride=2, groups=groups, impl=impl), False

    if grouped:
        wgt = weight[None] * styles[:, None, :, None, None]  # (B, O, I, k, k)
        if demodulate:
            wgt = wgt * torch.rsqrt(wgt.pow(2).sum(dim=[2, 3, 4]) + eps)[:, :, None, None, None]
        x = x.reshape(1, b * i, h, w)
        if up:
            out, blurred = up_conv(x, wgt.transpose(1, 2).reshape(b * i, o, kh, kw), b)
        else:
            out = conv2d(x, wgt.reshape(b * o, i, kh, kw), padding=padding, groups=b, impl=impl)
        out = out.reshape(b, o, out.shape[2], out.shape[3])
    else:
        x = x * styles[:, :, None, None].to(x.dtype)
        if up:
            out, blurred = up_conv(x, weight.transpose(0, 1), 1)
        else:
            out = conv2d(x, weight, padding=padding, impl=impl)
        if demodulate:
            # sum_i,k (w s_i)^2 = sum_i s_i^2 sum_k w^2: a (B, O, I) temporary instead of (B, O, I, k, k)
            # (9x smaller for 3x3), in float32 at least (elementwise, so autocast leaves it alone)
            acc = torch.promote_types(weight.dtype, torch.float32)
            d = (styles.to(acc).pow(2)[:, None, :] * weight.to(acc).pow(2).sum(dim=[2, 3])[None]).sum(-1)
            dcoef = torch.rsqrt(d + eps)
            if not defer_demod:
                out = out * dcoef[:, :, None, None].to(out.dtype)
    if up and not blurred:
        out = upfirdn2d(out, blur_kernel, pad=blur_pad, impl=impl)
    return (out, dcoef) if defer_demod else out


def modconv_epilogue(x: torch.Tensor, dcoef: torch.Tensor | None, bias: torch.Tensor | None,
                     noise: torch.Tensor | None = None, noise_weight: torch.Tensor | None = None,
                     negative_slope: float = 0.2, gain: float = math.sqrt(2), impl: str = "ref") -> torch.Tensor:
    """(x * dcoef[b, o] + noise_weight * noise[b, h, w] + bias[o]) -> leaky ReLU -> * gain.

    x: (B, O, H, W) from modulated_conv2d(..., defer_demod=True); dcoef (B, O) or None (already
    demodulated); noise (B or 1, 1, H, W) with its scalar weight, or None. The reference is the
    StyledConv chain (demodulate, NoiseInjection, FusedLeakyReLU); impl="triton" is one pass over memory.
    """
    check_impl(impl)
    if use_triton(impl, x, dcoef, bias, noise, noise_weight):
        from e4e.ops.triton_kernels import epilogue_triton
        return epilogue_triton(x, dcoef=dcoef, noise=noise, noise_weight=noise_weight, bias=bias, act=True,
                               negative_slope=negative_slope, gain=gain)
    if dcoef is not None:
        x = x * dcoef[:, :, None, None].to(x.dtype)
    if noise is not None:
        x = add_noise(x, noise, noise_weight)
    return fused_leaky_relu(x, bias, negative_slope, gain)
