import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import e4e
from e4e.editing import ganspace_pca
from e4e.errors import E4EError
from e4e.latents import Latents, check_compatible, load_latents, merge_latents, read_index, save_latents
from tiny_inverters import save_tiny, tiny_inverter


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("api") / "tiny.safetensors")


def test_import_is_light():
    code = "import sys, e4e; assert 'torch' not in sys.modules; assert callable(e4e.load); assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_load_and_invert_paths(ckpt, tmp_path):
    rng = np.random.default_rng(0)
    for name in ("x", "y"):
        Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    inv = e4e.load(ckpt)
    assert inv.checkpoint_path == ckpt and not inv.training
    lat = e4e.invert(tmp_path, inv, batch_size=1)
    assert lat.names == ["x", "y"] and lat.codes.shape == (2, 8, 32)
    assert lat.meta["checkpoint"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert lat.meta["generator"] == {"size": 32, "n_styles": 8, "style_dim": 32}
    # expected: the files centre-cropped (36x36 of 36x40) and resized by PIL here, scaled to [-1, 1], then
    # the float64 composition encoder + latent_avg (not the API's own loading path)
    from tiny_inverters import float64_reference
    pixels = []
    for n in ("x", "y"):
        im = Image.open(tmp_path / f"{n}.png").convert("RGB")
        pixels.append(np.asarray(im.resize((32, 32), Image.Resampling.LANCZOS, box=(0, 2, 36, 38)), np.float64))
    x = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2) / 127.5 - 1
    _, want = float64_reference(tiny_inverter(), x)
    torch.testing.assert_close(lat.codes.double(), want, atol=1e-5, rtol=1e-5)
    # PIL images give the same codes as their files
    pil = e4e.invert([Image.open(tmp_path / "x.png")], inv)
    torch.testing.assert_close(pil.codes[0], lat["x"], atol=1e-5, rtol=1e-5)
    # the wrapper's own one-call inversion agrees
    recon, codes = inv.invert([tmp_path / "x.png"])
    torch.testing.assert_close(codes[0], lat["x"], atol=1e-5, rtol=1e-5)


def test_latents_file_round_trip_and_merge(tmp_path):
    codes = torch.randn(3, 8, 32)
    lat = Latents(["a", "dir/b", "c"], codes, {"checkpoint": {"sha256": "0" * 64}})
    e4e.save_latents(tmp_path / "l.npz", lat)
    back = e4e.load_latents(tmp_path / "l.npz")
    assert back.names == lat.names and torch.equal(back.codes, codes)
    assert back.meta["format"] == "e4e.latents.v1" and back.meta["checkpoint"]["sha256"] == "0" * 64
    with np.load(tmp_path / "l.npz", allow_pickle=False) as z:  # plain numpy can read it
        assert z["dir/b"].dtype == np.float32 and z["dir/b"].shape == (8, 32)
    # merging keeps first occurrences, streams entries and rewrites the metadata
    save_latents(tmp_path / "m.npz", Latents(["c", "d"], torch.randn(2, 8, 32)))
    names = merge_latents(tmp_path / "l.npz", [tmp_path / "l.npz", tmp_path / "m.npz"], {"note": 1})
    assert names == ["a", "dir/b", "c", "d"]
    merged = load_latents(tmp_path / "l.npz")
    assert torch.equal(merged["c"], codes[2]) and merged.meta["note"] == 1
    assert read_index(tmp_path / "l.npz")[0] == names
    # dict input
    save_latents(tmp_path / "d.npz", {"p": codes[0]}, {"k": 2})
    assert load_latents(tmp_path / "d.npz").meta["k"] == 2
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(E4EError, match="not a latents .npz"):
        load_latents(tmp_path / "bad.npz")


def test_edit_direction_and_ganspace():
    torch.manual_seed(0)
    lat = Latents(["a", "b"], torch.randn(2, 8, 32), {"x": 1})
    d = torch.randn(1, 32)
    out = e4e.edit(lat, direction=d, strength=2.5)
    assert isinstance(out, Latents) and out.names == lat.names and out.meta == lat.meta
    torch.testing.assert_close(out.codes, lat.codes + 2.5 * d)
    only = e4e.edit(lat.codes, direction=d, strength=1, styles=[2, 3])
    assert torch.equal(only[:, [0, 1, 4, 5, 6, 7]], lat.codes[:, [0, 1, 4, 5, 6, 7]])
    pca = ganspace_pca(torch.randn(500, 32), n_components=4)
    gs = e4e.edit(lat, ganspace=pca, ganspace_edit="1,0,4,3")
    # the official rule: styles 0..3 move along component 1 until style 0's coordinate (in std units)
    # is 3; the other styles are untouched
    comp, std = pca["comp"][1, 0], float(pca["std"][1])
    coord0 = ((lat.codes[:, 0] - pca["mean"].reshape(1, -1)) @ comp) / std
    want = lat.codes.clone()
    want[:, :4] += ((3 - coord0) * std)[:, None, None] * comp
    torch.testing.assert_close(gs.codes, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(E4EError, match="exactly one"):
        e4e.edit(lat)


def test_check_compatible(ckpt, tmp_path):
    g = tiny_inverter().decoder
    lat = e4e.invert(torch.zeros(1, 3, 32, 32), e4e.load(ckpt))
    check_compatible(lat, g, ckpt)  # same file: fine
    other = save_tiny(tmp_path / "other.safetensors", seed=1)
    with pytest.raises(E4EError, match="--force"):
        check_compatible(lat, g, other)
    check_compatible(lat, g, other, force=True)
    with pytest.raises(E4EError, match="another model"):
        check_compatible(lat, tiny_inverter(size=16).decoder, ckpt, force=True)


def test_load_default_model(monkeypatch, ckpt):
    import e4e.assets
    monkeypatch.setattr(e4e.assets, "DEFAULT_INVERTER", "absent.safetensors")
    with pytest.raises(E4EError, match="no embedded model in this install: pass --checkpoint PATH"):
        e4e.load()
    with pytest.raises(E4EError, match="no such checkpoint"):
        e4e.load(ckpt.with_name("missing.pt"))


def test_native_file_in_the_old_emoji_layout_loads_by_path(tmp_path, capsys):
    """The 64 px emoji model left the package (git show 4ba1ebf:src/e4e/assets/e4e_emoji64.safetensors) but
    must still load by path: a tiny file of its layout (IR-SE e4e encoder, fp32 storage, configs written
    before head_width existed, an emoji_encode info) loads and inverts through the API and the command."""
    from e4e.checkpoints.native import save_native
    from e4e.cli import main
    from e4e.inverter import build_inverter
    from e4e.nets.encoders import EncoderConfig
    from e4e.nets.stylegan2 import GeneratorConfig
    torch.manual_seed(0)
    enc = EncoderConfig(kind="e4e", mode="ir_se", stylegan_size=32, style_dim=16, widths=(8, 8, 8, 16),
                        units=(1, 1, 1, 1), input_size=32)
    gen = GeneratorConfig(size=32, style_dim=16, n_mlp=4, channel_multiplier=2, channel_max=16)
    ref = build_inverter(enc, gen, latent_avg=0.1 * torch.randn(1, 16), output_size=None).eval()
    configs = ref.configs()
    del configs["encoder"]["head_width"]  # the emoji file's encoder config has no head_width
    path = tmp_path / "e4e_emoji64.safetensors"
    save_native(path, {"encoder": ref.encoder.state_dict(), "generator": ref.decoder.state_dict()}, configs,
                tensors={"latent_avg": ref.latent_avg}, info={"steps": 2288, "encoder_type": "Encoder4Editing",
                                                               "dataset_type": "emoji_encode"})
    inv = e4e.load(path)
    assert inv.encoder.cfg.head_width == 16 and inv.decoder.n_latent == ref.decoder.n_latent
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(inv.encode(x), ref.encode(x), rtol=0, atol=0)
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(tmp_path / "face.png")
    assert main(["invert", tmp_path / "face.png", "-o", tmp_path / "out", "--checkpoint", path, "-q"]) == 0
    assert load_latents(tmp_path / "out" / "latents.npz").names == ["face"]
