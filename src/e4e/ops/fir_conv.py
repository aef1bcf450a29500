"""A convolution and the FIR filter beside it, computed as one convolution (impl="fold").

StyleGAN2 resamples with a 4x4 FIR blur next to a convolution: the discriminator blurs and then convolves
with stride 2 (`blur -> conv2d`), the generator convolves transposed with stride 2 and then blurs
(`conv_transpose2d -> blur`), and its ToRGB skip upsamples (`zero insertion -> blur`). Both steps are
linear, so each pair is one convolution whose kernel is the full convolution of the two kernels (3x3 and
4x4 -> 6x6). That costs 4x the convolution's multiply-adds but drops the depthwise blur, which on the GPU
runs on slow, memory-bound kernels, and whose double backward (the GAN trainer's lazy R1 and path-length
steps differentiate a gradient) is slower still. Every convolution here runs through e4e.ops.conv's
gradfix Functions, whose backward passes are plain convolutions.

In/out: the same tensors as the chains they replace (e4e.ops.upfirdn2d after or before F.conv2d /
F.conv_transpose2d); None where a case does not fold (the caller then runs its chain). The FIR kernel is
applied as a true convolution, as upfirdn2d applies it. tests/test_ops.py checks every case against the
chain in float64, values and first and second derivatives.
"""
import torch
import torch.nn.functional as F

from e4e.ops.conv import conv2d, conv_transpose2d


def full_conv_kernels(weight: torch.Tensor, fir: torch.Tensor) -> torch.Tensor:
    """(..., kh, kw) kernels, each fully convolved (true convolution) with fir (fh, fw) ->
    (..., kh + fh - 1, kw + fw - 1). Differentiable in weight."""
    lead, (kh, kw) = weight.shape[:-2], weight.shape[-2:]
    out = F.conv_transpose2d(weight.reshape(-1, 1, kh, kw), fir.to(weight.dtype)[None, None])
    return out.reshape(*lead, *out.shape[-2:])


def fir_then_conv2d(x: torch.Tensor, weight: torch.Tensor, fir: torch.Tensor, pad: tuple[int, int],
                    stride: int = 1, bias: torch.Tensor | None = None) -> torch.Tensor:
    """conv2d(upfirdn2d(x, fir, pad=pad), weight, bias, stride) (the conv without padding) as one conv.

    y = corr(blur(x)) = corr(x, weight * flip(fir)): a (kh + fh - 1)-square kernel on the padded input.
    """
    w = full_conv_kernels(weight, torch.flip(fir, [0, 1]))
    p0, p1 = pad
    if p0 != p1 or p0 < 0:
        x = F.pad(x, (p0, p1, p0, p1))
        p0 = 0
    return conv2d(x, w, bias, stride=stride, padding=p0, impl="gradfix")


def conv_transpose2d_then_fir(x: torch.Tensor, weight: torch.Tensor | None, fir: torch.Tensor,
                              pad: tuple[int, int], stride: int = 2, groups: int = 1) -> torch.Tensor | None:
    """upfirdn2d(conv_transpose2d(x, weight, stride=stride, groups=groups), fir, pad=pad) as one
    transposed convolution; weight (C_in, C_out / groups, kh, kw) as F.conv_transpose2d takes it.
    weight=None: zero insertion alone (upfirdn2d(x, fir, up=stride, pad=pad), depthwise, groups = C).

    The chain's output is the full convolution of the transposed conv's output with fir, cropped by
    fh - 1 - pad[0] at the start: a transposed conv with that padding (plus output_padding for the end).
    Returns None when the crop does not fit that form (the caller runs the chain).
    """
    c, h, w_ = x.shape[1], x.shape[2], x.shape[3]
    if weight is None:
        groups = c
        weight = x.new_ones(c, 1, 1, 1)
        # upfirdn2d's zero insertion makes stride * H samples; the transposed conv's full output counts
        # (H - 1) * stride + 1 of them before the FIR: the trailing zeros shift nothing, only the length
        t_len = (h * stride, w_ * stride)
    else:
        t_len = ((h - 1) * stride + weight.shape[2], (w_ - 1) * stride + weight.shape[3])
    fh, fw = fir.shape
    p0, p1 = pad
    if fh != fw or t_len[0] != t_len[1] or h != w_:
        return None
    crop = fh - 1 - p0
    n_out = t_len[0] + p0 + p1 - fh + 1
    out_pad = n_out - ((h - 1) * stride - 2 * crop + weight.shape[2] + fh - 1)  # the folded kernel's size
    if crop < 0 or not 0 <= out_pad < stride:
        return None
    k = full_conv_kernels(weight, fir)
    return conv_transpose2d(x, k, stride=stride, padding=crop, output_padding=out_pad, groups=groups,
                            impl="gradfix")
