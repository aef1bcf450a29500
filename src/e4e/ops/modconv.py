import torch
import torch.nn.functional as F

from e4e.ops.upfirdn2d import upfirdn2d


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool = True,
                     padding: int = 0, up: bool = False, blur_kernel: torch.Tensor | None = None,
                     blur_pad: tuple[int, int] = (0, 0), grouped: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """StyleGAN2 modulated convolution.

    x: (B, I, H, W); weight: (O, I, k, k), already multiplied by its equalised-lr scale; styles: (B, I).
    up=True is a stride-2 transposed convolution followed by the FIR blur (rosinality's order).
    grouped=True folds the batch into conv groups (one weight per sample: the reference form);
    grouped=False scales activations instead of weights, so one shared weight serves the whole batch
    (cheaper on GPU at large batch; the same function up to rounding).
    """
    b, i, h, w = x.shape
    o, _, kh, kw = weight.shape
    if grouped:
        wgt = weight[None] * styles[:, None, :, None, None]  # (B, O, I, k, k)
        if demodulate:
            wgt = wgt * torch.rsqrt(wgt.pow(2).sum(dim=[2, 3, 4]) + eps)[:, :, None, None, None]
        x = x.reshape(1, b * i, h, w)
        if up:
            wgt = wgt.transpose(1, 2).reshape(b * i, o, kh, kw)
            out = F.conv_transpose2d(x, wgt, stride=2, groups=b)
        else:
            out = F.conv2d(x, wgt.reshape(b * o, i, kh, kw), padding=padding, groups=b)
        out = out.reshape(b, o, out.shape[2], out.shape[3])
    else:
        x = x * styles[:, :, None, None].to(x.dtype)
        if up:
            out = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
        else:
            out = F.conv2d(x, weight, padding=padding)
        if demodulate:
            d = (weight[None] * styles[:, None, :, None, None]).pow(2).sum(dim=[2, 3, 4])
            out = out * torch.rsqrt(d + eps)[:, :, None, None].to(out.dtype)
    if up:
        out = upfirdn2d(out, blur_kernel, pad=blur_pad)
    return out
