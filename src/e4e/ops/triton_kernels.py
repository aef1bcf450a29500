"""Triton kernels behind the ops' impl="triton" (inference only: no backward).

In: CUDA tensors (or CPU tensors under TRITON_INTERPRET=1, for tests), NCHW- or NHWC-contiguous (other
layouts are made contiguous first). Out: a new tensor in x's dtype and layout; arithmetic in float32.
Why: each replaces several passes over memory by one. Callers go through e4e.ops (upfirdn2d,
fused_leaky_relu, add_noise, modconv_epilogue), which fall back to the PyTorch reference where these
cannot run; tests/test_ops_triton.py checks every kernel against that reference. Triton compiles a
kernel on first use (seconds) and keeps it in its on-disk cache (~/.triton/cache, TRITON_CACHE_DIR).

Indices are int64: a 1024px StyleGAN2 layer at batch 64 has more than 2**31 elements.
"""
import torch
import triton
import triton.language as tl

BLOCK = 1024


def _layout(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """-> (x dense in NCHW or NHWC, channels_last flag); 2-D (B, C) counts as NCHW with H = W = 1."""
    if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return x, True
    return x.contiguous(), False


@triton.jit
def _epilogue_kernel(x_ptr, out_ptr, dcoef_ptr, noise_ptr, noise_w_ptr, bias_ptr, total, C, HW, noise_batch_stride,
                     negative_slope, gain, HAS_DCOEF: tl.constexpr, HAS_NOISE: tl.constexpr,
                     HAS_BIAS: tl.constexpr, ACT: tl.constexpr, CHANNELS_LAST: tl.constexpr,
                     BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    if CHANNELS_LAST:
        c = offs % C
        hw = (offs // C) % HW
    else:
        c = (offs // HW) % C
        hw = offs % HW
    n = offs // (C * HW)
    v = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_DCOEF:
        v = v * tl.load(dcoef_ptr + n * C + c, mask=mask, other=0.0)
    if HAS_NOISE:
        nz = tl.load(noise_ptr + n * noise_batch_stride + hw, mask=mask, other=0.0).to(tl.float32)
        v = v + tl.load(noise_w_ptr).to(tl.float32) * nz
    if HAS_BIAS:
        v = v + tl.load(bias_ptr + c, mask=mask, other=0.0).to(tl.float32)
    if ACT:
        v = tl.where(v >= 0, v, v * negative_slope)
    v = v * gain
    tl.store(out_ptr + offs, v.to(out_ptr.dtype.element_ty), mask=mask)


def epilogue_triton(x, dcoef=None, noise=None, noise_weight=None, bias=None, act=True, negative_slope=0.2,
                    gain=1.0):
    """((x * dcoef[b, c]) + noise_weight * noise[b, h, w] + bias[c]) -> leaky ReLU if act -> * gain.

    x (B, C, H, W) or (B, C); dcoef (B, C); noise (B or 1, 1, H, W) with a 1-element weight; bias (C,)."""
    x, cl = _layout(x)
    b, c = x.shape[:2]
    hw = x.shape[2] * x.shape[3] if x.ndim == 4 else 1
    out = torch.empty_like(x)
    total = x.numel()
    dummy = x  # never read: the HAS_* flags switch the loads off
    if dcoef is not None:
        dcoef = dcoef.float().contiguous()
    nstride = 0
    if noise is not None:
        if noise.shape[-2:] != x.shape[-2:] or noise.shape[1] != 1 or noise.shape[0] not in (1, b):
            raise ValueError(f"noise of shape {tuple(noise.shape)} does not fit activations {tuple(x.shape)}")
        noise = noise.contiguous()
        nstride = hw if noise.shape[0] == b and b > 1 else 0
        noise_weight = noise_weight.reshape(1)
    grid = (triton.cdiv(total, BLOCK),)
    _epilogue_kernel[grid](x, out, dcoef if dcoef is not None else dummy, noise if noise is not None else dummy,
                           noise_weight if noise is not None else dummy, bias if bias is not None else dummy,
                           total, c, hw, nstride, float(negative_slope), float(gain),
                           HAS_DCOEF=dcoef is not None, HAS_NOISE=noise is not None, HAS_BIAS=bias is not None,
                           ACT=bool(act), CHANNELS_LAST=cl, BLOCK=BLOCK)
    return out


@triton.jit
def _upfirdn2d_kernel(x_ptr, k_ptr, out_ptr, total, C, H, W, OH, OW, sxn, sxc, sxh, sxw,
                      UP: tl.constexpr, DOWN: tl.constexpr, P0: tl.constexpr, KH: tl.constexpr,
                      KW: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    if CHANNELS_LAST:  # the output is written in its own memory order: (n, oy, ox, c)
        c = offs % C
        ox = (offs // C) % OW
        oy = (offs // (C * OW)) % OH
    else:
        ox = offs % OW
        oy = (offs // OW) % OH
        c = (offs // (OW * OH)) % C
    n = offs // (C * OH * OW)
    base = x_ptr + n * sxn + c * sxc
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for a in tl.static_range(KH):
        uy = oy * DOWN + (a - P0)  # row in the zero-stuffed, unpadded image
        iy = uy // UP
        ok_y = (uy >= 0) & (uy < H * UP) & (uy - iy * UP == 0)
        for bb in tl.static_range(KW):
            ux = ox * DOWN + (bb - P0)
            ix = ux // UP
            ok = mask & ok_y & (ux >= 0) & (ux < W * UP) & (ux - ix * UP == 0)
            v = tl.load(base + iy * sxh + ix * sxw, mask=ok, other=0.0).to(tl.float32)
            kv = tl.load(k_ptr + (KH - 1 - a) * KW + (KW - 1 - bb))  # true convolution: flipped taps
            acc += v * kv
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


def upfirdn2d_triton(x, kernel, up=1, down=1, pad=(0, 0)):
    """The whole upfirdn2d (zero insertion, padding or cropping, FIR, decimation) in one pass: each
    output pixel reads only the input pixels its taps land on."""
    x, cl = _layout(x)
    n, c, h, w = x.shape
    kh, kw = kernel.shape
    p0, p1 = pad
    oh = (h * up + p0 + p1 - kh) // down + 1
    ow = (w * up + p0 + p1 - kw) // down + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"upfirdn2d: {h}x{w} input gives an empty output with kernel {kh}x{kw}, pad {pad}")
    out = torch.empty((n, c, oh, ow), dtype=x.dtype, device=x.device,
                      memory_format=torch.channels_last if cl else torch.contiguous_format)
    k = kernel.float().contiguous()
    total = out.numel()
    sn, sc, sh, sw = x.stride()
    _upfirdn2d_kernel[(triton.cdiv(total, BLOCK),)](x, k, out, total, c, h, w, oh, ow, sn, sc, sh, sw,
                                                    UP=up, DOWN=down, P0=p0, KH=kh, KW=kw,
                                                    CHANNELS_LAST=cl, BLOCK=BLOCK)
    return out
