import re
import pytest
import torch

from conftest import assert_parity, fixture_params, load_npz, need, state_dict_from_manifest
from e4e.checkpoints import load_inverter
from e4e.checkpoints.official import save_official
from e4e.errors import E4EError
from e4e.inverter import Inverter, build_inverter
from e4e.nets.encoders import EncoderConfig
from e4e.nets.stylegan2 import GeneratorConfig

# measured (docs/testing.md): 0 at the fixtures' thread count; codes move up to ~5e-7 and images ~1e-6
# with the CPU thread count (the fixtures' README)
TOL = {"wrapper_codes": 2e-6, "wrapper_images": 5e-6}


def official_checkpoint(tmp_path, fx):
    """Write the fixture weights in the official on-disk layout, as a user's e4e_ffhq_encode.pt is."""
    f = load_npz(fx["npz"])
    state = {f"encoder.{k}": v for k, v in state_dict_from_manifest(fx.manifest).items()}
    state.update({f"decoder.{k}": v for k, v in state_dict_from_manifest(fx["decoder"]).items()})
    n_styles = f["latent_avg"].shape[0]
    ckpt = {"state_dict": state, "latent_avg": f["latent_avg"],
            "opts": {"encoder_type": "Encoder4Editing", "start_from_latent_avg": True,
                     "stylegan_size": 2 ** ((n_styles + 2) // 2), "lpips_lambda": 0.8}}
    path = tmp_path / "e4e_official.pt"
    torch.save(ckpt, path)
    return path, f


@pytest.mark.parametrize("fx", fixture_params("wrapper"))
def test_official_wrapper_parity(tmp_path, fx):
    fx = need(fx)
    path, f = official_checkpoint(tmp_path, fx)
    inv = load_inverter(path)
    with torch.no_grad():
        images, codes = inv(f["x"], resize=True, randomize_noise=False)
    assert_parity(f"{fx.name}.wrapper_codes", codes, f["wrapper_codes"], TOL["wrapper_codes"])
    assert_parity(f"{fx.name}.wrapper_images", images, f["wrapper_images"], TOL["wrapper_images"])
    # official .pt -> safetensors -> official .pt on these weights: test_convert's
    # test_official_fixture_weights_round_trip (bit-exact tensors), so no second and third forward pass here


def tiny_inverter(size=64, kind="e4e"):
    ecfg = EncoderConfig(kind=kind, stylegan_size=size, style_dim=64, widths=(8, 16, 24, 32), units=(1, 1, 1, 1),
                         input_size=64, mode="ir")
    gcfg = GeneratorConfig(size=size, style_dim=64, n_mlp=2, channel_max=32)
    return build_inverter(ecfg, gcfg, latent_avg=torch.zeros(1, 64), output_size=None).eval()


def test_small_inverter_inverts_on_cpu():
    from tiny_inverters import float64_reference
    torch.manual_seed(0)
    inv = tiny_inverter()
    inv.latent_avg = torch.randn_like(inv.latent_avg)  # non-zero: it must be added once, to every style
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        images, codes = inv(x)
    ref_images, ref_codes = float64_reference(inv, x)
    assert images.shape == (2, 3, 64, 64) and codes.shape == (2, inv.decoder.n_latent, 64)
    assert (codes.double() - ref_codes).abs().max() < 1e-5 * ref_codes.abs().max()
    assert (images.double() - ref_images).abs().max() < 1e-5 * ref_images.abs().max()


def test_encoder_generator_mismatch_is_one_line():
    ecfg = EncoderConfig(stylegan_size=1024, style_dim=64, widths=(8, 16, 24, 32), units=(1, 1, 1, 1), input_size=64)
    gcfg = GeneratorConfig(size=256, style_dim=64, n_mlp=1, channel_max=8)
    with pytest.raises(E4EError, match="18 styles .* 14"):
        build_inverter(ecfg, gcfg)


def test_missing_latent_avg_is_computed_and_reported(tmp_path):
    inv = tiny_inverter()
    inv.latent_avg = None
    save_official(tmp_path / "x.pt", inv, opts={"start_from_latent_avg": True})
    said = []
    inv2 = load_inverter(tmp_path / "x.pt", log=said.append)
    assert inv2.latent_avg is not None and inv2.latent_avg.shape == (inv.decoder.n_latent, 64)
    assert len(said) == 1 and "latent_avg" in said[0]
    # it is E[mapping(z)], the same for every style: compare with an independent sample of 20000 z
    assert torch.equal(inv2.latent_avg, inv2.latent_avg[:1].expand_as(inv2.latent_avg))
    with torch.no_grad():
        w = inv.decoder.mapping(torch.randn(20000, 64, generator=torch.Generator().manual_seed(123)))
    err = (inv2.latent_avg[0] - w.mean(0)).abs() / (w.std(0) / 20000 ** 0.5)
    assert float(err.max()) < 5  # within 5 standard errors in every dimension


def test_not_an_inverter_checkpoint(tmp_path):
    torch.save({"g_ema": {}}, tmp_path / "g.pt")
    with pytest.raises(E4EError, match="not an e4e/pSp checkpoint"):
        load_inverter(tmp_path / "g.pt")


def test_invert_accepts_pil_images():
    from PIL import Image
    inv = tiny_inverter()
    img = Image.new("RGB", (100, 80), (200, 10, 10))
    rec, codes = inv.invert([img, img])
    # a flat colour stays flat at any size: the encoder sees (200, 10, 10) / 127.5 - 1 everywhere
    x = torch.tensor([200, 10, 10]).div(127.5).sub(1).view(1, 3, 1, 1).expand(2, 3, 64, 64)
    with torch.no_grad():
        want_codes = inv.encode(x)
    assert rec.shape[0] == 2 and torch.allclose(codes[0], codes[1])
    torch.testing.assert_close(codes, want_codes, rtol=1e-5, atol=1e-6)
