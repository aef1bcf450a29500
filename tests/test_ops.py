"""Each op against an independent float64 formulation (numpy loops / per-sample convolutions)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from e4e.ops import (add_noise, fused_leaky_relu, make_kernel, modconv_epilogue, modulated_conv2d,
                     triton_available, upfirdn2d)
from e4e.ops.impl import use_triton


def upfirdn2d_loops(x: np.ndarray, k: np.ndarray, up: int, down: int, pad: tuple[int, int]) -> np.ndarray:
    """Textbook definition: zero-stuff, pad (negative = crop), true 2-D convolution, keep every down-th."""
    n, c, h, w = x.shape
    u = np.zeros((n, c, h * up, w * up))
    u[:, :, ::up, ::up] = x
    p0, p1 = pad
    u = np.pad(u, ((0, 0), (0, 0), (max(p0, 0), max(p1, 0)), (max(p0, 0), max(p1, 0))))
    u = u[:, :, max(-p0, 0): u.shape[2] - max(-p1, 0), max(-p0, 0): u.shape[3] - max(-p1, 0)]
    kh, kw = k.shape
    oh, ow = u.shape[2] - kh + 1, u.shape[3] - kw + 1
    out = np.zeros((n, c, oh, ow))
    for i in range(kh):
        for j in range(kw):
            out += k[kh - 1 - i, kw - 1 - j] * u[:, :, i:i + oh, j:j + ow]
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize("up,down,pad", [(1, 1, (1, 2)), (2, 1, (2, 1)), (1, 2, (1, 1)), (2, 2, (0, 0)),
                                         (1, 1, (-1, 2)), (4, 1, (3, 2))])
def test_upfirdn2d_matches_loops(up, down, pad):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 7, 9, generator=g, dtype=torch.float64)
    k = torch.randn(4, 4, generator=g, dtype=torch.float64)  # asymmetric: catches a missing flip
    ours = upfirdn2d(x, k, up=up, down=down, pad=pad)
    ref = upfirdn2d_loops(x.numpy(), k.numpy(), up, down, pad)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("up,down,pad", [(1, 1, (1, 2)), (2, 1, (2, 1)), (2, 2, (0, 0))])
def test_upfirdn2d_taps_match_loops(up, down, pad):
    """impl="taps" (the FIR as shifted-slice taps, for torch.compile): the same numbers, eagerly and
    traced (aot_eager traces exactly what inductor would see, without generating code)."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 7, 9, generator=g, dtype=torch.float64)
    k = torch.randn(4, 3, generator=g, dtype=torch.float64)
    ref = upfirdn2d_loops(x.numpy(), k.numpy(), up, down, pad)
    np.testing.assert_allclose(upfirdn2d(x, k, up=up, down=down, pad=pad, impl="taps").numpy(), ref,
                               rtol=1e-12, atol=1e-12)
    torch._dynamo.reset()
    fn = torch.compile(lambda a, b: upfirdn2d(a, b, up=up, down=down, pad=pad, impl="taps"), backend="aot_eager",
                       fullgraph=True)
    np.testing.assert_allclose(fn(x, k).numpy(), ref, rtol=1e-12, atol=1e-12)


def test_impl_is_checked_and_triton_falls_back_to_the_reference_on_cpu(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x, k = torch.randn(1, 2, 5, 5), make_kernel([1, 3, 3, 1])
    with pytest.raises(ValueError, match="impl must be one of"):
        upfirdn2d(x, k, impl="cuda")
    with pytest.raises(ValueError, match="impl must be one of"):
        fused_leaky_relu(x, torch.zeros(2), impl="fast")
    assert not triton_available("cpu")
    assert torch.equal(upfirdn2d(x, k, up=2, pad=(2, 1), impl="triton"), upfirdn2d(x, k, up=2, pad=(2, 1)))
    b, nz, w = torch.randn(2), torch.randn(1, 1, 5, 5), torch.randn(1)
    assert torch.equal(fused_leaky_relu(x, b, impl="triton"), fused_leaky_relu(x, b))
    assert torch.equal(add_noise(x, nz, w, impl="triton"), add_noise(x, nz, w))


def test_triton_is_not_used_where_autograd_records(monkeypatch):
    """The kernels have no backward: with gradients needed, impl="triton" runs the reference."""
    monkeypatch.setattr("e4e.ops.impl.triton_available", lambda device="cuda": True)
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    assert not use_triton("triton", x, None)
    with torch.no_grad():
        assert use_triton("triton", x, None)
    assert not use_triton("ref", x.detach())


def test_modconv_epilogue_is_the_styledconv_chain():
    """Demodulation deferred to the epilogue (shared form) = demodulated conv, noise, bias + lrelu."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, 6, 6, generator=g, dtype=torch.float64)
    w = torch.randn(5, 4, 3, 3, generator=g, dtype=torch.float64)
    s = torch.randn(3, 4, generator=g, dtype=torch.float64) + 1
    blur = torch.randn(4, 4, generator=g, dtype=torch.float64)
    bias, nw = torch.randn(5, generator=g, dtype=torch.float64), torch.randn(1, generator=g, dtype=torch.float64)
    for up in (False, True):
        ref = modconv_per_sample(x, w, s, True, 1, up, blur, (1, 1))
        noise = torch.randn(3, 1, *ref.shape[2:], generator=g, dtype=torch.float64)
        z = ref + nw * noise + bias[None, :, None, None]
        y = torch.where(z >= 0, z, 0.2 * z) * math.sqrt(2)
        out, dcoef = modulated_conv2d(x, w, s, padding=1, up=up, blur_kernel=blur, blur_pad=(1, 1), grouped=False,
                                      defer_demod=True)
        assert dcoef.shape == (3, 5)
        assert torch.allclose(modconv_epilogue(out, dcoef, bias, noise, nw), y, rtol=1e-10, atol=1e-10)
        assert torch.allclose(add_noise(ref, noise, nw), ref + nw * noise, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="defer_demod"):
        modulated_conv2d(x, w, s, padding=1, grouped=True, defer_demod=True)


def test_make_kernel_normalised_and_separable():
    k = make_kernel([1, 3, 3, 1])
    assert k.shape == (4, 4)
    assert torch.isclose(k.sum(), torch.tensor(1.0))
    assert torch.allclose(k, torch.outer(k[0], k[:, 0]) / k[0, 0])


def test_fused_leaky_relu():
    x = torch.randn(3, 5, 4, 4, dtype=torch.float64)
    b = torch.randn(5, dtype=torch.float64)
    y = x + b[None, :, None, None]
    ref = torch.where(y >= 0, y, 0.2 * y) * math.sqrt(2)
    assert torch.allclose(fused_leaky_relu(x, b), ref, rtol=0, atol=1e-15)
    # on 2-D input (mapping network) the bias broadcasts over dim 1 as well
    x2, b2 = torch.randn(4, 6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    y2 = x2 + b2
    assert torch.allclose(fused_leaky_relu(x2, b2), torch.where(y2 >= 0, y2, 0.2 * y2) * math.sqrt(2))


def modconv_per_sample(x, weight, styles, demodulate, padding, up, blur, blur_pad):
    """One ordinary convolution per sample with its own modulated weight; upsampling written as
    zero-stuffing + full-padding convolution with the flipped, transposed kernel."""
    outs = []
    for b in range(x.shape[0]):
        w = weight * styles[b][None, :, None, None]
        if demodulate:
            w = w / torch.sqrt((w ** 2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        xb = x[b:b + 1]
        if up:
            k = w.shape[-1]
            z = torch.zeros(1, xb.shape[1], xb.shape[2] * 2 - 1, xb.shape[3] * 2 - 1, dtype=x.dtype)
            z[:, :, ::2, ::2] = xb
            z = F.pad(z, (k - 1, k - 1, k - 1, k - 1))
            o = F.conv2d(z, torch.flip(w, [2, 3]))
            o = torch.from_numpy(upfirdn2d_loops(o.numpy(), blur.numpy(), 1, 1, blur_pad))
        else:
            o = F.conv2d(xb, w, padding=padding)
        outs.append(o)
    return torch.cat(outs)


@pytest.mark.parametrize("grouped", [True, False])
@pytest.mark.parametrize("up", [False, True])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv2d(grouped, up, demodulate):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, 6, 6, generator=g, dtype=torch.float64)
    w = torch.randn(5, 4, 3, 3, generator=g, dtype=torch.float64)
    s = torch.randn(3, 4, generator=g, dtype=torch.float64) + 1
    blur = torch.randn(4, 4, generator=g, dtype=torch.float64)
    ours = modulated_conv2d(x, w, s, demodulate=demodulate, padding=1, up=up, blur_kernel=blur, blur_pad=(1, 1),
                            grouped=grouped)
    ref = modconv_per_sample(x, w, s, demodulate, 1, up, blur, (1, 1))
    assert ours.shape == ref.shape == ((3, 5, 12, 12) if up else (3, 5, 6, 6))
    assert torch.allclose(ours, ref, rtol=1e-10, atol=1e-10)


# -- e4e.ops.conv: impl="gradfix" (backward passes written as convolutions) -------------------------------
CONV_CASES = [  # (stride, padding, groups, kernel): the shapes StyleGAN2's G and D use, and grouped ones
    (1, 1, 1, 3), (2, 0, 1, 3), (2, 0, 1, 1), (1, 0, 4, 4), (2, 1, 2, 3)]


@pytest.mark.parametrize("stride,padding,groups,k", CONV_CASES)
def test_gradfix_conv2d_values_gradients_and_second_derivatives(stride, padding, groups, k):
    """Same values as F.conv2d / F.conv_transpose2d, and gradcheck + gradgradcheck (float64) of the
    Function's hand-written backward: the second derivatives R1 and path length take."""
    from torch.autograd import gradcheck, gradgradcheck

    from e4e.ops.conv import conv2d, conv_transpose2d
    g = torch.Generator().manual_seed(stride * 100 + padding * 10 + groups + k)
    x = torch.randn(2, 4, 7, 7, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 4 // groups, k, k, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    conv = lambda x, w: conv2d(x, w, stride=stride, padding=padding, groups=groups, impl="gradfix")  # noqa: E731
    convt = lambda x, w: conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups, impl="gradfix")  # noqa: E731
    assert torch.allclose(conv(x, w), F.conv2d(x, w, stride=stride, padding=padding, groups=groups), atol=1e-12)
    assert torch.allclose(convt(x, w), F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups),
                          atol=1e-12)
    assert torch.allclose(conv2d(x, w, b, stride, padding, groups, impl="gradfix"),
                          F.conv2d(x, w, b, stride, padding, 1, groups), atol=1e-12)
    assert gradcheck(conv, (x, w)) and gradgradcheck(conv, (x, w))
    assert gradcheck(convt, (x, w)) and gradgradcheck(convt, (x, w))


def test_gradfix_second_order_graph_holds_no_convolution_double_backward():
    """What the Function is for: the R1-style second backward (grad of a gradient's norm) differentiates
    only ordinary convolutions. With ref it goes through aten's convolution double backward; with gradfix
    the recorded graph of the first gradient has no ConvolutionBackwardBackward node at all."""
    from e4e.ops.conv import conv2d

    def nodes(impl):
        x = torch.randn(2, 3, 8, 8, requires_grad=True)
        w = torch.randn(4, 3, 3, 3, requires_grad=True)
        y = conv2d(conv2d(x, w, stride=2, impl=impl).relu(), torch.randn(1, 4, 1, 1, requires_grad=True), impl=impl)
        (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        seen, todo = set(), [gx.grad_fn]
        while todo:
            fn = todo.pop()
            if fn is None or fn in seen:
                continue
            seen.add(fn)
            todo += [f for f, _ in fn.next_functions]
        return {type(f).__name__ for f in seen}
    assert "ConvolutionBackwardBackward0" in nodes("ref")
    assert "ConvolutionBackwardBackward0" not in nodes("gradfix")


def test_gradfix_impl_of_the_ops_is_the_reference():
    """impl="gradfix" through upfirdn2d (its depthwise conv) and modulated_conv2d (both forms, up or not):
    the reference's values and input gradients (float64)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    k = make_kernel([1, 3, 3, 1]).double()
    for kw in (dict(pad=(2, 1)), dict(up=2, pad=(2, 1)), dict(down=2, pad=(1, 1))):
        a = x.clone().requires_grad_(True)
        bb = x.clone().requires_grad_(True)
        ya, yb = upfirdn2d(a, k, **kw), upfirdn2d(bb, k, impl="gradfix", **kw)
        assert torch.allclose(ya, yb, atol=1e-12)
        ga, = torch.autograd.grad((ya ** 2).sum(), a)
        gb, = torch.autograd.grad((yb ** 2).sum(), bb)
        assert torch.allclose(ga, gb, atol=1e-12)
    w = torch.randn(5, 4, 3, 3, generator=g, dtype=torch.float64)
    s = torch.randn(2, 4, generator=g, dtype=torch.float64)
    for grouped in (True, False):
        for up in (False, True):
            extra = dict(up=True, blur_kernel=k * 4, blur_pad=(1, 1)) if up else dict(padding=1)
            ref = modulated_conv2d(x, w, s, grouped=grouped, **extra)
            fix = modulated_conv2d(x, w, s, grouped=grouped, impl="gradfix", **extra)
            assert torch.allclose(ref, fix, atol=1e-12), (grouped, up)


# -- e4e.ops.fir_conv: impl="fold" (a blur and the convolution beside it as one convolution) --------------
FIR_CASES = [  # (conv kernel, stride, pad): D's downsampling conv and skip, an unstrided asymmetric case
    (3, 2, (2, 2)), (1, 2, (1, 1)), (3, 1, (2, 1))]


def _fir(g):  # an asymmetric FIR kernel: a flip in the wrong place cannot pass
    return torch.rand(4, 4, generator=g, dtype=torch.float64) + 0.1


@pytest.mark.parametrize("k,stride,pad", FIR_CASES)
def test_fir_then_conv2d_is_the_chain(k, stride, pad):
    """blur (upfirdn2d) then a strided conv == one conv with the folded kernel: values, and gradcheck +
    gradgradcheck in float64 (the R1 step's second derivative)."""
    from torch.autograd import gradcheck, gradgradcheck

    from e4e.ops.fir_conv import fir_then_conv2d
    g = torch.Generator().manual_seed(k * 10 + stride)
    fir = _fir(g)
    x = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, k, k, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    chain = F.conv2d(upfirdn2d(x, fir, pad=pad), w, b, stride=stride)
    folded = fir_then_conv2d(x, w, fir, pad, stride=stride, bias=b)
    assert folded.shape == chain.shape
    assert torch.allclose(folded, chain, atol=1e-12)
    fn = lambda x, w: fir_then_conv2d(x, w, fir, pad, stride=stride)  # noqa: E731
    assert gradcheck(fn, (x, w)) and gradgradcheck(fn, (x, w))


@pytest.mark.parametrize("groups,k,pad", [(1, 3, (1, 1)), (2, 3, (1, 1)), (1, 1, (2, 3))])
def test_conv_transpose2d_then_fir_is_the_chain(groups, k, pad):
    """A stride-2 transposed conv then the blur (G's upsampling conv) == one transposed conv."""
    from torch.autograd import gradcheck, gradgradcheck

    from e4e.ops.fir_conv import conv_transpose2d_then_fir
    g = torch.Generator().manual_seed(groups * 10 + k)
    fir = _fir(g)
    x = torch.randn(2, 4, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 6 // groups, k, k, generator=g, dtype=torch.float64, requires_grad=True)
    chain = upfirdn2d(F.conv_transpose2d(x, w, stride=2, groups=groups), fir, pad=pad)
    folded = conv_transpose2d_then_fir(x, w, fir, pad, stride=2, groups=groups)
    assert folded is not None and folded.shape == chain.shape
    assert torch.allclose(folded, chain, atol=1e-12)
    fn = lambda x, w: conv_transpose2d_then_fir(x, w, fir, pad, stride=2, groups=groups)  # noqa: E731
    assert gradcheck(fn, (x, w)) and gradgradcheck(fn, (x, w))


def test_fold_upsampling_and_its_fallback_are_upfirdn2d():
    """upfirdn2d(impl="fold") upsamples as one depthwise transposed conv (ToRGB's skip: pad (2, 1)); a
    padding the transposed conv cannot express (a crop past the kernel) falls back to the chain; plain
    blurs and downsampling run the gradfix depthwise conv. All equal the reference."""
    from e4e.ops.fir_conv import conv_transpose2d_then_fir
    g = torch.Generator().manual_seed(5)
    fir = _fir(g)
    x = torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64)
    assert conv_transpose2d_then_fir(x, None, fir, (2, 1), stride=2) is not None  # ToRGB's skip folds
    assert conv_transpose2d_then_fir(x, None, fir, (5, 0), stride=2) is None
    for kw in (dict(up=2, pad=(2, 1)), dict(up=2, pad=(5, 0)), dict(pad=(1, 2)), dict(down=2, pad=(1, 1))):
        assert torch.allclose(upfirdn2d(x, fir, impl="fold", **kw), upfirdn2d(x, fir, **kw), atol=1e-12), kw


@pytest.mark.parametrize("grouped", [True, False])
def test_fold_modulated_conv_is_the_reference(grouped):
    """modulated_conv2d(impl="fold"), up or not, with deferred demodulation in the shared form: the
    reference's values and input gradients (float64)."""
    g = torch.Generator().manual_seed(6)
    k = _fir(g) * 4
    w = torch.randn(5, 4, 3, 3, generator=g, dtype=torch.float64)
    s = torch.randn(2, 4, generator=g, dtype=torch.float64)
    for up in (False, True):
        extra = dict(up=True, blur_kernel=k, blur_pad=(1, 1)) if up else dict(padding=1)
        xs = [torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(7), dtype=torch.float64,
                          requires_grad=True) for _ in range(2)]
        ref = modulated_conv2d(xs[0], w, s, grouped=grouped, **extra)
        fold = modulated_conv2d(xs[1], w, s, grouped=grouped, impl="fold", **extra)
        assert torch.allclose(ref, fold, atol=1e-12), up
        ga, gb = (torch.autograd.grad((y ** 2).sum(), x)[0] for y, x in ((ref, xs[0]), (fold, xs[1])))
        assert torch.allclose(ga, gb, atol=1e-10), up
        if not grouped:
            out, dcoef = modulated_conv2d(xs[1], w, s, grouped=False, impl="fold", defer_demod=True, **extra)
            assert torch.allclose(out * dcoef[:, :, None, None], ref, atol=1e-12)


def _fold_networks_run(device, dtype):
    """G -> image -> D -> R1 gradient with impl ref and fold on every op module: ((ref outputs), (fold))."""
    from e4e.nets.discriminators import Discriminator, DiscriminatorConfig
    from e4e.nets.stylegan2 import Generator, GeneratorConfig
    torch.manual_seed(0)
    gcfg = GeneratorConfig(size=32, style_dim=16, n_mlp=2, channel_max=32)
    gen = Generator(gcfg).to(device, dtype).configure(grouped=False)
    d = Discriminator(DiscriminatorConfig.from_generator(gcfg)).to(device, dtype)
    z = torch.randn(4, 16, dtype=dtype, device=device)

    def run(impl):
        for m in (*gen.modules(), *d.modules()):
            if hasattr(m, "impl"):
                m.impl = impl
        img, _ = gen([z], randomize_noise=False)
        x = img.detach().requires_grad_(True)
        pred = d(x)
        (grad,) = torch.autograd.grad(pred.sum(), x, create_graph=True)
        (gw,) = torch.autograd.grad(grad.pow(2).sum(), d.convs[1].conv2[1].weight)  # R1's second order
        return img, pred, grad, gw
    return run("ref"), run("fold")


def test_fold_generator_and_discriminator_are_the_reference():
    """Whole networks with impl="fold": the reference's image, logits, R1 gradient (d pred / d image)
    and its derivative for a downsampling conv's weight (float64, CPU)."""
    ref, fold = _fold_networks_run("cpu", torch.float64)
    for a, b in zip(ref, fold):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fold_generator_and_discriminator_are_the_reference_on_cuda():
    """The same on CUDA in strict fp32 (TF32 off): cuDNN's kernels for the folded 6x6 convolutions
    against its kernels for the chains, within fp32 rounding."""
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        ref, fold = _fold_networks_run("cuda", torch.float32)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    for a, b in zip(ref, fold):
        assert (a - b).abs().max() <= 1e-4 * a.abs().max(), (a - b).abs().max() / a.abs().max()
