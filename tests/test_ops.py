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
