"""conv2d and conv_transpose2d, with impl="gradfix": backward passes written as convolutions.

In/out: as torch.nn.functional.conv2d / conv_transpose2d (no dilation). impl="ref" (or any name but
"gradfix" and "fold", which runs its convolutions through gradfix) calls them. impl="gradfix" runs the
same forward through an autograd.Function whose backward computes the input gradient with the transposed
convolution (for conv2d) or the convolution (for conv_transpose2d) and the weight gradient with aten's
convolution_backward. Why: StyleGAN2's lazy R1 and path-length steps differentiate a gradient. PyTorch
differentiates a convolution's backward with its generic double-backward formula, and on the H200 and
H100 that second-order pass ran on slow fallback kernels (docs/benchmarks.md, "Where the trainers' time
goes": through this Function R1 ran 7x faster). With it, the second pass only ever differentiates
ordinary convolutions, whose first-order backward kernels are the fast ones. The same idea is NVIDIA's
conv2d_gradfix (stylegan2-ada-pytorch).

The weight gradient itself is aten's, so a third-order derivative through it falls back to PyTorch's
formula: correct, only not sped up. tests/test_ops.py checks values, gradients and second derivatives
against F.conv2d / F.conv_transpose2d in float64 (gradcheck, gradgradcheck).
"""
import torch
import torch.nn.functional as F

GRADFIX = ("gradfix", "fold")  # the impls (e4e.ops.impl) whose convolutions run through the Functions below


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _output_padding(in_hw, out_hw, w_hw, stride, padding):
    """output_padding that makes conv_transpose2d of an (out_hw) map give back in_hw."""
    return tuple(i - ((o - 1) * s - 2 * p + k) for i, o, k, s, p in zip(in_hw, out_hw, w_hw, stride, padding))


def _weight_grad(gy, x, w, stride, padding, groups, transposed, output_padding):
    return torch.ops.aten.convolution_backward(
        gy, x, w, None, list(stride), list(padding), [1, 1], transposed, list(output_padding), groups,
        [False, True, False])[1]


class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, stride, padding, groups):
        ctx.save_for_backward(x, w)
        ctx.conf = (stride, padding, groups)
        return F.conv2d(x, w, None, stride, padding, 1, groups)

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        stride, padding, groups = ctx.conf
        gx = gw = None
        if ctx.needs_input_grad[0]:
            op = _output_padding(x.shape[2:], gy.shape[2:], w.shape[2:], stride, padding)
            gx = conv_transpose2d(gy, w, stride=stride, padding=padding, output_padding=op, groups=groups,
                                  impl="gradfix")
        if ctx.needs_input_grad[1]:
            gw = _weight_grad(gy, x, w, stride, padding, groups, False, (0, 0))
        return gx, gw, None, None, None


class _ConvTranspose2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, stride, padding, output_padding, groups):
        ctx.save_for_backward(x, w)
        ctx.conf = (stride, padding, output_padding, groups)
        return F.conv_transpose2d(x, w, None, stride, padding, output_padding, groups, 1)

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        stride, padding, output_padding, groups = ctx.conf
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = conv2d(gy, w, stride=stride, padding=padding, groups=groups, impl="gradfix")
        if ctx.needs_input_grad[1]:
            gw = _weight_grad(gy, x, w, stride, padding, groups, True, output_padding)
        return gx, gw, None, None, None, None


def _autocast_inputs(x, w):
    """Under autocast, the dtype the convolution would run in: the Function then runs with autocast off
    (its backward, outside autocast, sees the dtypes its forward used)."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        dt = torch.get_autocast_dtype(dev)
        return x.to(dt), w.to(dt)
    return x, w


def conv2d(x, w, bias=None, stride=1, padding=0, groups: int = 1, impl: str = "ref"):
    if impl not in GRADFIX:
        return F.conv2d(x, w, bias, stride, padding, 1, groups)
    x, w = _autocast_inputs(x, w)
    with torch.autocast(x.device.type, enabled=False):
        y = _Conv2d.apply(x, w, _pair(stride), _pair(padding), groups)
    return y if bias is None else y + bias.to(y.dtype).view(1, -1, 1, 1)


def conv_transpose2d(x, w, bias=None, stride=1, padding=0, output_padding=0, groups: int = 1, impl: str = "ref"):
    if impl not in GRADFIX:
        return F.conv_transpose2d(x, w, bias, stride, padding, output_padding, groups, 1)
    x, w = _autocast_inputs(x, w)
    with torch.autocast(x.device.type, enabled=False):
        y = _ConvTranspose2d.apply(x, w, _pair(stride), _pair(padding), _pair(output_padding), groups)
    return y if bias is None else y + bias.to(y.dtype).view(1, -1, 1, 1)
