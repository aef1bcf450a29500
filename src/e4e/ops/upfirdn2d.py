"""upfirdn2d: upsample (zero insertion), pad, FIR-filter, downsample, as rosinality's op does.

In: x (N, C, H, W), a 2-D FIR kernel, integer up/down factors and (before, after) padding.
Out: (N, C, (H*up + p0 + p1 - kh + 1) // down rounded up, same for W). Three implementations, chosen
with impl= (e4e.ops.impl): the depthwise-conv reference, the shifted-slice taps that torch.compile
fuses, and a Triton kernel (e4e.ops.triton_kernels) that does all four steps in one pass.
"""
import torch
import torch.nn.functional as F

from e4e.ops.conv import conv2d
from e4e.ops.impl import check_impl, use_triton


def make_kernel(k) -> torch.Tensor:
    """Separable 1-D taps -> normalised 2-D FIR kernel (sums to 1); a 2-D input is only normalised."""
    k = torch.as_tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0), impl: str = "ref") -> torch.Tensor:
    """kernel: (kh, kw), applied as a true convolution (flipped), which matters because checkpoints store
    the kernel as a buffer and need not be symmetric. pad = (before, after) on both axes; negative values
    crop. impl: "ref" (depthwise conv), "taps" (for torch.compile), "gradfix" (the depthwise conv through
    e4e.ops.conv), "fold" (gradfix; upsampling as one depthwise transposed conv, e4e.ops.fir_conv) or
    "triton" (CUDA inference)."""
    check_impl(impl)
    if use_triton(impl, x, kernel):
        from e4e.ops.triton_kernels import upfirdn2d_triton
        return upfirdn2d_triton(x, kernel, up=up, down=down, pad=pad)
    if impl == "fold" and up > 1 and down == 1:
        from e4e.ops.fir_conv import conv_transpose2d_then_fir
        y = conv_transpose2d_then_fir(x, None, kernel, pad, stride=up)
        if y is not None:
            return y
    n, c, h, w = x.shape
    kh, kw = kernel.shape
    p0, p1 = pad
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, (max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)))
    x = x[:, :, max(-p0, 0): x.shape[2] - max(-p1, 0), max(-p0, 0): x.shape[3] - max(-p1, 0)]
    if impl == "taps":
        x = fir_taps(x, kernel)
    else:
        weight = torch.flip(kernel, [0, 1]).to(x.dtype).view(1, 1, kh, kw).expand(c, 1, kh, kw)
        x = conv2d(x, weight, groups=c, impl=impl)  # F.conv2d, or its gradfix form
    return x[:, :, ::down, ::down]


def fir_taps(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The same valid FIR filtering as a sum of shifted slices.

    Eagerly this is kh*kw passes over memory, slower than the depthwise conv; under torch.compile it is
    one pointwise kernel that inductor fuses with the zero-insertion, padding, noise, bias and activation
    around it, while a depthwise conv would stay a separate cuDNN call with its own pass over memory.
    """
    kh, kw = kernel.shape
    h, w = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    k = torch.flip(kernel, [0, 1]).to(x.dtype)
    out = None
    for a in range(kh):
        for b in range(kw):
            term = x[:, :, a:a + h, b:b + w] * k[a, b]
            out = term if out is None else out + term
    return out
