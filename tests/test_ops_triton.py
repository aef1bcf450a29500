"""e4e.ops.triton_kernels: every kernel against the PyTorch reference of its op.

On a CUDA device the kernels run compiled (marked gpu). Without one, where Triton is installed, the
same kernel source runs on CPU tensors through Triton's interpreter: Triton reads TRITON_INTERPRET=1
when it is first imported, so test_kernels_under_the_interpreter reruns this file in a fresh process
with it set (the shapes are tiny: the interpreter is slow). Without Triton: skipped.
"""
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton", reason="Triton is not installed (pip install triton): kernels untested here")

from e4e.nets.stylegan2 import Generator, GeneratorConfig  # noqa: E402
from e4e.ops import add_noise, fused_leaky_relu, modconv_epilogue, upfirdn2d  # noqa: E402

INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
DEVICES = [pytest.param("cpu", id="cpu-interpreter", marks=pytest.mark.skipif(
               not INTERPRETING, reason="runs in test_kernels_under_the_interpreter's process")),
           pytest.param("cuda", id="cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
               INTERPRETING or not torch.cuda.is_available(), reason="needs a CUDA GPU")])]


@pytest.fixture
def device(request):
    return torch.device(request.param)


@pytest.mark.slow
@pytest.mark.skipif(INTERPRETING, reason="this is the interpreter's process")
def test_kernels_under_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__, "-k", "cpu"],
                       env=env, cwd=root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    passed = re.search(r"(\d+) passed", r.stdout)
    assert passed and int(passed.group(1)) >= 16, r.stdout[-500:]  # every cpu-interpreter case ran


def rel(a, b):
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


LAYOUTS = [torch.contiguous_format, torch.channels_last]


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("up,down,pad", [(1, 1, (1, 2)), (2, 1, (2, 1)), (1, 2, (1, 1)), (2, 2, (0, 0)),
                                         (1, 1, (-1, 2)), (4, 1, (3, 2))])
@pytest.mark.parametrize("layout", LAYOUTS, ids=["nchw", "nhwc"])
def test_upfirdn2d(device, up, down, pad, layout):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 7, 9, generator=g).to(device).contiguous(memory_format=layout)
    k = torch.randn(4, 3, generator=g).to(device)  # asymmetric, non-square: catches a missing flip
    ref = upfirdn2d(x, k, up=up, down=down, pad=pad)
    out = upfirdn2d(x, k, up=up, down=down, pad=pad, impl="triton")
    assert out.shape == ref.shape and out.dtype == x.dtype
    assert out.is_contiguous(memory_format=layout)
    assert rel(out, ref) < 1e-6


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("layout", LAYOUTS, ids=["nchw", "nhwc"])
def test_bias_act_noise_and_epilogue(device, layout):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 5, 6, 7, generator=g).to(device).contiguous(memory_format=layout)
    bias, w = torch.randn(5, generator=g).to(device), torch.randn(1, generator=g).to(device)
    dcoef = torch.rand(3, 5, generator=g).to(device) + 0.5
    for noise in (torch.randn(3, 1, 6, 7, generator=g).to(device), torch.randn(1, 1, 6, 7, generator=g).to(device)):
        assert rel(add_noise(x, noise, w, impl="triton"), add_noise(x, noise, w)) < 1e-6
        fused = modconv_epilogue(x, dcoef, bias, noise, w, impl="triton")
        assert rel(fused, modconv_epilogue(x, dcoef, bias, noise, w)) < 1e-6
        out = modconv_epilogue(x, None, bias, noise, w, impl="triton")
        assert rel(out, modconv_epilogue(x, None, bias, noise, w)) < 1e-6
        assert out.is_contiguous(memory_format=layout)
    assert rel(fused_leaky_relu(x, bias, impl="triton"), fused_leaky_relu(x, bias)) < 1e-6
    assert rel(fused_leaky_relu(x, None, 0.1, 1.5, impl="triton"), fused_leaky_relu(x, None, 0.1, 1.5)) < 1e-6
    x2, b2 = torch.randn(4, 6, generator=g).to(device), torch.randn(6, generator=g).to(device)  # mapping layers
    assert rel(fused_leaky_relu(x2, b2, impl="triton"), fused_leaky_relu(x2, b2)) < 1e-6


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_bf16_kernels_round_once(device):
    """bf16 in, bf16 out, float32 inside: at least as close to the float32 result as the reference chain."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 8, 8, generator=g).to(device)
    bias, w, noise = (torch.randn(4, generator=g).to(device), torch.randn(1, generator=g).to(device),
                      torch.randn(2, 1, 8, 8, generator=g).to(device))
    dcoef = torch.rand(2, 4, generator=g).to(device) + 0.5
    exact = modconv_epilogue(x, dcoef, bias, noise, w)
    xb = x.bfloat16()
    out = modconv_epilogue(xb, dcoef, bias, noise, w, impl="triton")
    assert out.dtype == torch.bfloat16
    assert rel(out, exact) <= max(rel(modconv_epilogue(xb, dcoef, bias, noise, w), exact), 2 ** -8)
    k = torch.rand(4, 4, generator=g).to(device)
    assert rel(upfirdn2d(xb, k, up=2, pad=(2, 1), impl="triton"), upfirdn2d(x, k, up=2, pad=(2, 1))) < 2 ** -7


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_generator_with_kernels_is_the_reference(device):
    """The whole synthesis network, shared-weight form with every Triton kernel, against the reference."""
    torch.manual_seed(0)
    gen = Generator(GeneratorConfig(size=16, style_dim=16, n_mlp=1, channel_max=8)).to(device).eval()
    w = torch.randn(2, gen.n_latent, 16, device=device)
    # strict fp32 convolutions: cuDNN's default TF32 (PyTorch's allow_tf32=True) would differ by ~1e-4
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        ref = gen.configure(grouped=True, impl="ref").synthesis(w)
        out = gen.configure(grouped=False, impl="triton").synthesis(w)
        nhwc = gen.configure(channels_last=True).synthesis(w)
    assert rel(out, ref) < 1e-5 and rel(nhwc, ref) < 1e-5
    assert math.isfinite(float(out.abs().sum()))
