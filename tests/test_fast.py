"""e4e.fast: the inference fast path keeps parity with the fp32 reference."""
import pytest
import torch

from e4e.cli import main
from e4e.fast import precision_scope, prepare
from e4e.latents import load_latents
from tiny_inverters import float64_reference, make_images, save_tiny, tiny_inverter


def reference(inv, x):
    """The float64 composition of the parts (tiny_inverters.float64_reference), back in float32."""
    img, codes = float64_reference(inv, x)
    return img.float().to(x.device), codes.float().to(x.device)


def rel(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def test_fp32_is_the_reference():
    inv = tiny_inverter()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    ref_img, ref_codes = reference(inv, x)
    img, codes = prepare(inv, "fp32")(x)
    assert rel(img, ref_img) < 1e-5 and rel(codes, ref_codes) < 1e-5  # fp32 rounding only
    with torch.no_grad(), precision_scope("fp32", x.device):  # and exactly the plain (unprepared) model
        assert torch.equal(codes, inv.encode(x)) and torch.equal(img, inv.decode(inv.encode(x), resize=False))


def test_bf16_stays_close():
    inv = tiny_inverter()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    ref_img, ref_codes = reference(inv, x)
    img, codes = prepare(inv, "bf16")(x)
    assert img.dtype == torch.float32
    assert 0 < (img - ref_img).abs().max() / ref_img.abs().max() < 5e-2  # bf16 really ran, and stayed close
    assert (codes - ref_codes).abs().max() / ref_codes.abs().max() < 2e-2


def test_precision_scope_restores_global_flags():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with precision_scope("tf32", torch.device("cpu")):
        assert torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    with pytest.raises(ValueError, match="precision"):
        prepare(tiny_inverter(), "fp16")


@pytest.mark.slow
def test_compiled_matches_reference():
    """torch.compile (inductor, C++ on CPU) with the FIR as fused taps: same numbers up to rounding."""
    torch._dynamo.reset()
    inv = tiny_inverter()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    ref_img, ref_codes = reference(inv, x)
    img, codes = prepare(inv, "fp32", compile=True)(x)
    assert (img - ref_img).abs().max() / ref_img.abs().max() < 1e-4
    assert (codes - ref_codes).abs().max() / ref_codes.abs().max() < 1e-4


@pytest.mark.slow
def test_compiled_pads_the_last_batch_instead_of_recompiling():
    torch._dynamo.reset()
    inv = tiny_inverter()
    fn = prepare(inv, "fp32", compile=True, batch_size=4)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    full_img, full_codes = fn(x)
    with torch._dynamo.config.patch(error_on_recompile=True):  # a second shape would recompile
        img, codes = fn(x[:3])
    assert img.shape[0] == 3 and codes.shape[0] == 3
    assert (img - full_img[:3]).abs().max() < 1e-5 and (codes - full_codes[:3]).abs().max() < 1e-5


def test_cli_invert_bf16(tmp_path, capsys):
    make_images(tmp_path / "imgs", n_good=2)
    ckpt = save_tiny(tmp_path / "tiny.safetensors")
    outs = {}
    for p in ("fp32", "bf16"):
        rc = main(["invert", str(tmp_path / "imgs"), "-o", str(tmp_path / p), "--checkpoint", str(ckpt),
                   "--precision", p, "-q"])
        assert rc == 0
        outs[p] = load_latents(tmp_path / p / "latents.npz")
    a, b = outs["fp32"], outs["bf16"]
    assert a.names == b.names and len(a.names) == 5
    assert 0 < (a.codes - b.codes).abs().max() / a.codes.abs().max() < 2e-2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_cuda_graphs_outputs_survive_the_next_call():
    torch._dynamo.reset()
    inv = tiny_inverter().cuda()
    fn = prepare(inv, "fp32", compile=True)
    xs = [torch.rand(2, 3, 32, 32, device="cuda") * 2 - 1 for _ in range(3)]
    outs = [fn(x) for x in xs]  # the third call replays the recorded graph
    for x, (img, codes) in zip(xs, outs):
        ref_img, ref_codes = reference(inv, x)
        assert (img - ref_img).abs().max() / ref_img.abs().max() < 1e-3
        assert (codes - ref_codes).abs().max() / ref_codes.abs().max() < 1e-3
