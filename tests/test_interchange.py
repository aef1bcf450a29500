"""Latents interchange: official latents.pt, .npy (W or W+), our .npz; `e4e edit` accepts each and
renders the same images from the same codes."""
import numpy as np
import pytest
import torch
from PIL import Image

import e4e
from e4e.cli import main
from e4e.errors import E4EError
from e4e.interchange import read_latents, to_wplus, write_latents
from e4e.latents import Latents, save_latents
from tiny_inverters import save_tiny


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("interchange")
    ckpt = save_tiny(root / "tiny.safetensors")
    inv = e4e.load(ckpt)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    lat = e4e.invert(x, inv)
    lat = Latents(["a", "b"], lat.codes, lat.meta)
    save_latents(root / "latents.npz", lat)
    return root, ckpt, lat


@pytest.mark.parametrize("ext", [".npz", ".pt", ".npy"])
def test_write_then_read_keeps_names_and_codes(setup, tmp_path, ext):
    _, _, lat = setup
    back = read_latents(write_latents(tmp_path / f"lat{ext}", lat))
    assert torch.equal(back.codes, lat.codes)
    assert back.names == (lat.names if ext != ".npy" else ["0", "1"])


def test_official_latents_pt_layouts(tmp_path):
    codes = torch.randn(3, 4, 8)
    torch.save({"x.jpg": codes[0:1], "y.jpg": codes[1:2], "z.jpg": codes[2:3]}, tmp_path / "dict.pt")  # (1, n, D)
    torch.save(codes, tmp_path / "tensor.pt")
    d, t = read_latents(tmp_path / "dict.pt"), read_latents(tmp_path / "tensor.pt")
    assert d.names == ["x.jpg", "y.jpg", "z.jpg"] and torch.equal(d.codes, codes)
    assert t.names == ["0", "1", "2"] and torch.equal(t.codes, codes)


def test_w_codes_become_wplus(tmp_path):
    w = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    np.save(tmp_path / "w.npy", w)
    lat = read_latents(tmp_path / "w.npy")
    assert lat.meta["space"] == "w" and lat.codes.shape == (5, 1, 8)
    plus = to_wplus(lat, 6)
    assert plus.codes.shape == (5, 6, 8) and torch.equal(plus.codes[:, 3], torch.from_numpy(w))


@pytest.mark.parametrize("content, suffix, message", [
    (b"hello", ".txt", "latents must be .npz"),
    (b"not a pickle", ".pt", "not a readable torch .pt file"),
    (b"junk", ".npy", "not a numpy .npy array"),
])
def test_bad_files_are_one_line_errors(tmp_path, content, suffix, message):
    (tmp_path / f"bad{suffix}").write_bytes(content)
    with pytest.raises(E4EError, match=message):
        read_latents(tmp_path / f"bad{suffix}")


def test_edit_accepts_every_format_and_exports(setup, tmp_path, capsys):
    root, ckpt, lat = setup
    write_latents(tmp_path / "lat.pt", lat)
    np.save(tmp_path / "lat.npy", lat.codes.numpy())
    outs = {}
    for src in (root / "latents.npz", tmp_path / "lat.pt", tmp_path / "lat.npy"):
        out = tmp_path / f"out_{src.suffix[1:]}"
        assert main(["edit", str(src), "-o", str(out), "--checkpoint", str(ckpt), "--sefa", "0", "--strength", "2",
                     "-q"]) == 0
        outs[src.suffix] = sorted(out.glob("sefa0+2/*.png"))
    ref = [np.asarray(Image.open(p)) for p in outs[".npz"]]
    for ext in (".pt", ".npy"):
        assert len(outs[ext]) == 2
        assert all(np.array_equal(np.asarray(Image.open(p)), r) for p, r in zip(outs[ext], ref))
    # --export alone converts
    assert main(["edit", str(root / "latents.npz"), "-o", str(tmp_path / "x"), "--checkpoint", str(ckpt),
                 "--export", str(tmp_path / "official.pt")]) == 0
    exported = torch.load(tmp_path / "official.pt", weights_only=True)
    assert list(exported) == ["a", "b"] and torch.equal(exported["a"], lat.codes[0])
    capsys.readouterr()
    assert main(["edit", str(tmp_path / "lat.txt"), "-o", str(tmp_path / "y"), "--checkpoint", str(ckpt),
                 "--sefa", "0", "--strength", "1"]) == 2
    assert "latents must be .npz" in capsys.readouterr().err


def test_edit_refuses_codes_of_another_shape(setup, tmp_path, capsys):
    _, ckpt, _ = setup
    torch.save({"a": torch.randn(18, 512)}, tmp_path / "ffhq.pt")
    rc = main(["edit", str(tmp_path / "ffhq.pt"), "-o", str(tmp_path / "o"), "--checkpoint", str(ckpt),
               "--sefa", "0", "--strength", "1"])
    assert rc == 2 and "they come from another model" in capsys.readouterr().err
