import numpy as np
import pytest
import torch
from PIL import Image

import e4e
from e4e.cli import main
from e4e.editing import load_pca
from e4e.latents import Latents, save_latents
from tiny_inverters import save_tiny

N_IMAGES = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny checkpoint and latents.npz of 3 images inverted with it."""
    root = tmp_path_factory.mktemp("edit")
    ckpt = save_tiny(root / "tiny.safetensors")
    inv = e4e.load(ckpt)
    x = torch.rand(N_IMAGES, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    lat = e4e.invert(x, inv)
    lat = Latents(["a", "b", "sub/c"], lat.codes, lat.meta)
    save_latents(root / "latents.npz", lat)
    return root, ckpt, inv, lat


def edit(args, capsys=None):
    rc = main(["edit", *map(str, args), "-q"])
    return rc, (capsys.readouterr() if capsys else None)


def png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def decoded(inv, codes) -> list[np.ndarray]:
    """Expected PNG pixels: float64 synthesis from the codes, [-1, 1] -> 0..255 written out here."""
    import copy
    dec = copy.deepcopy(inv.decoder).double().use_grouped_conv(True)
    with torch.no_grad():
        img = dec.synthesis(codes.double())
    px = img.clamp(-1, 1).add(1).mul(127.5).round().permute(0, 2, 3, 1).numpy()
    return list(px.astype(np.int16))


def test_edit_direction_sweep(setup, tmp_path, capsys):
    root, ckpt, inv, lat = setup
    d = torch.randn(1, 32, generator=torch.Generator().manual_seed(1))
    torch.save(d, tmp_path / "age.pt")
    out = tmp_path / "out"
    rc, cap = edit([root / "latents.npz", "-o", out, "--checkpoint", ckpt, "--direction", tmp_path / "age.pt",
                    "--sweep=-2:2:3"], capsys)
    assert rc == 0, cap.err
    cols = ["original", "age-2", "age+0", "age+2"]
    for col in cols:
        for name in lat.names:
            assert png(out / col / f"{name}.png").shape == (32, 32, 3)
    want = decoded(inv, lat.codes + 2 * d)
    for i, name in enumerate(lat.names):
        assert np.abs(png(out / "age+2" / f"{name}.png") - want[i]).max() <= 1
        assert np.array_equal(png(out / "age+0" / f"{name}.png"), png(out / "original" / f"{name}.png"))
        gif = Image.open(out / "sweep" / "age" / f"{name}.gif")
        assert gif.n_frames == 3
    # rows = images, columns = edits, 32px tiles with 2px padding
    w, h = Image.open(out / "grid.png").size  # tiles, plus a header row naming the columns
    assert w == len(cols) * 34 + 2 and N_IMAGES * 34 + 2 < h <= N_IMAGES * 34 + 2 + 24


def test_edit_ganspace_fit_matches_exported_pca(setup, tmp_path):
    root, ckpt, inv, lat = setup
    assert main(["directions", "ganspace", "-o", str(tmp_path / "pca.pt"), "--checkpoint", str(ckpt),
                 "--samples", "400", "--components", "8"]) == 0
    pca = load_pca(tmp_path / "pca.pt")
    assert pca["comp"].shape == (8, 1, 32)
    spec = "0,0,8,2"
    assert edit([root / "latents.npz", "-o", tmp_path / "fit", "--checkpoint", ckpt,
                 "--ganspace-fit", 400, "--edit", spec])[0] == 0
    assert edit([root / "latents.npz", "-o", tmp_path / "file", "--checkpoint", ckpt,
                 "--ganspace", tmp_path / "pca.pt", "--edit", spec, "--grid", 0])[0] == 0
    # the official rule: every style moves along component 0 until style 0's coordinate is 2 std
    comp, std = pca["comp"][0, 0], float(pca["std"][0])
    coord0 = ((lat.codes[:, 0] - pca["mean"].reshape(1, -1)) @ comp) / std
    want = decoded(inv, lat.codes + ((2 - coord0) * std)[:, None, None] * comp)
    for i, name in enumerate(lat.names):
        a, b = png(tmp_path / "fit" / "pc0_0-8+2" / f"{name}.png"), png(tmp_path / "file" / "pc0_0-8+2" / f"{name}.png")
        assert np.abs(a - b).max() <= 1 and np.abs(b - want[i]).max() <= 1
    assert not (tmp_path / "file" / "grid.png").exists()


def test_edit_sefa_equals_exported_direction(setup, tmp_path):
    root, ckpt, inv, lat = setup
    assert main(["directions", "sefa", "-o", str(tmp_path / "sefa.pt"), "--checkpoint", str(ckpt),
                 "--index", "1", "--layers", "1-3"]) == 0
    d = torch.load(tmp_path / "sefa.pt", weights_only=True)
    assert d.shape == (1, 8, 32)
    assert d[0, 1:4].norm(dim=1).allclose(torch.ones(3)) and d[0, [0, 4, 5, 6, 7]].abs().max() == 0
    # SeFa (Shen & Zhou): the 2nd right-singular vector of the row-normalised modulation weights of the
    # convs reading styles 1-3 (convs 0, 1, 2; to_rgb layers left out), up to sign
    a = torch.cat([inv.decoder.convs[i].conv.modulation.weight.detach().double() for i in (0, 1, 2)])
    v = torch.linalg.svd(a / a.norm(dim=1, keepdim=True)).Vh[1]
    assert abs(float(d[0, 1].double() @ v)) > 1 - 1e-5
    out = tmp_path / "out"
    assert edit([root / "latents.npz", "-o", out, "--checkpoint", ckpt, "--sefa", 1, "--layers", "1-3",
                 "--direction", tmp_path / "sefa.pt", "--strength", 3])[0] == 0
    for name in lat.names:
        a, b = png(out / "sefa1+3" / f"{name}.png"), png(out / "sefa+3" / f"{name}.png")
        assert np.abs(a - b).max() <= 1
        assert np.abs(a - png(out / "original" / f"{name}.png")).max() > 0


def test_edit_refuses_latents_of_another_model(setup, tmp_path, capsys):
    root, ckpt, inv, lat = setup
    d = tmp_path / "d.npy"
    np.save(d, np.ones((1, 32), np.float32))
    args = ["-o", tmp_path / "out", "--direction", d, "--strength", 1]
    other_size = save_tiny(tmp_path / "g16.safetensors", size=16)  # 6 styles: another generator shape
    rc, cap = edit([root / "latents.npz", "--checkpoint", other_size, "--force", *args], capsys)
    assert rc == 2 and "another model" in cap.err
    same_shape = save_tiny(tmp_path / "seed1.safetensors", seed=1)
    rc, cap = edit([root / "latents.npz", "--checkpoint", same_shape, *args], capsys)
    assert rc == 2 and "--force" in cap.err and "tiny.safetensors" in cap.err
    assert edit([root / "latents.npz", "--checkpoint", same_shape, "--force", *args])[0] == 0
    # a recorded generator shape is checked even when the codes happen to fit
    fake = Latents(lat.names, lat.codes, {**lat.meta, "generator": {"size": 64, "n_styles": 8, "style_dim": 32}})
    save_latents(tmp_path / "fake.npz", fake)
    rc, cap = edit([tmp_path / "fake.npz", "--checkpoint", ckpt, "--force", *args], capsys)
    assert rc == 2 and "--force does not override" in cap.err


@pytest.mark.parametrize("bad, message", [
    (["--direction", "D", "--strength", "1", "--sweep=0:1:1"], "at least 2 steps"),
    (["--sefa", "0"], "--strength S or --sweep"),
    (["--strength", "1"], "need --direction FILE or --sefa K"),
    (["--edit", "0,0,2,1"], "--edit needs --ganspace"),
    (["--ganspace-fit", "10"], "at least one --edit"),
    (["--sefa", "99", "--strength", "1"], "--sefa 99: out of range"),
    ([], "no edit given"),
])
def test_edit_argument_errors(setup, tmp_path, capsys, bad, message):
    root, ckpt, _, _ = setup
    np.save(tmp_path / "D.npy", np.ones((1, 32), np.float32))
    bad = [str(tmp_path / "D.npy") if b == "D" else b for b in bad]
    rc, cap = edit([root / "latents.npz", "-o", tmp_path / "out", "--checkpoint", ckpt, *bad], capsys)
    assert rc == 2 and message in cap.err


def test_directions_fit_recovers_a_planted_direction(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(240, 8, 32, generator=g)
    truth = torch.randn(32, generator=g)
    labels = (codes.mean(1) @ truth > 0).long()
    names = [f"img{i}" for i in range(240)]
    save_latents(tmp_path / "latents.npz", Latents(names, codes, {}))
    rows = ["file,smiling"] + [f"train/{n}.png,{'yes' if y else 'no'}" for n, y in zip(names, labels.tolist())]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\nunknown.png,yes\n")
    rc = main(["directions", "fit", str(tmp_path / "latents.npz"), str(tmp_path / "labels.csv"), "-o",
               str(tmp_path / "smile.pt"), "--label-column", "smiling", "--method", "logistic"])
    out = capsys.readouterr().out
    assert rc == 0
    acc = float(out.split("held-out accuracy ")[1].split()[0])
    assert acc >= 0.8 and "1 labels unmatched" in out
    d = torch.load(tmp_path / "smile.pt", weights_only=True)
    assert d.shape == (1, 32)
    assert torch.cosine_similarity(d[0], truth, dim=0) > 0.8


def test_directions_fit_class_gap_writes_a_per_style_direction(tmp_path, capsys):
    """--method class_gap on W+ latents: a (1, n_styles, D) direction that e4e edit applies style by style."""
    g = torch.Generator().manual_seed(4)
    codes = torch.randn(120, 8, 32, generator=g)
    labels = torch.rand(120, generator=g) < 0.5
    codes[labels, 3] += 2.0
    names = [f"img{i}" for i in range(120)]
    save_latents(tmp_path / "latents.npz", Latents(names, codes, {}))
    rows = ["file,label"] + [f"{n}.png,{int(y)}" for n, y in zip(names, labels.tolist())]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    rc = main(["directions", "fit", str(tmp_path / "latents.npz"), str(tmp_path / "labels.csv"), "-o",
               str(tmp_path / "gap.pt"), "--method", "class_gap"])
    out = capsys.readouterr().out
    assert rc == 0 and "class_gap" in out and "(1, 8, 32)" in out
    d = torch.load(tmp_path / "gap.pt", weights_only=True)
    assert d.shape == (1, 8, 32) and float(d[0, 3].mean()) == pytest.approx(2.0, abs=0.3)
    assert float(d[0, [0, 1, 2, 4, 5, 6, 7]].mean(-1).abs().max()) < 0.2


def test_default_edit_checkpoint_missing(setup, tmp_path, monkeypatch, capsys):
    root, *_ = setup
    import e4e.assets
    monkeypatch.setattr(e4e.assets, "DEFAULT_INVERTER", "absent.safetensors")
    rc, cap = edit([root / "latents.npz", "-o", tmp_path / "out", "--sefa", "0", "--strength", "1"], capsys)
    assert rc == 2 and "pass --checkpoint PATH" in cap.err


def test_directions_fit_on_a_dataset_labels_csv(tmp_path, capsys):
    """A dataset's labels.csv (file, split, Unicode name, ...): the file column is the one that matches the
    latents' names, and a majority-class baseline is printed beside the accuracy."""
    g = torch.Generator().manual_seed(1)
    codes = torch.randn(60, 4, 32, generator=g)
    labels = (codes.mean(1)[:, 0] > 0.3).long()
    names = [f"u1f{i:03x}" for i in range(60)]
    save_latents(tmp_path / "latents.npz", Latents(names, codes, {}))
    rows = ["file,split,name,tone"] + [f"train/{n}.png,train,GRINNING FACE {i},{'dark' if y else 'light'}"
                                       for i, (n, y) in enumerate(zip(names, labels.tolist()))]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    args = ["directions", "fit", str(tmp_path / "latents.npz"), str(tmp_path / "labels.csv"), "-o",
            str(tmp_path / "d.pt"), "--label-column", "tone", "--positive", "dark"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "on 'file' names" in out and "0 labels unmatched" in out
    base = float(out.split("majority-class baseline ")[1].split(")")[0])
    assert 0.5 <= base <= 1.0
    # --negative: rows with neither value are left out
    rows = rows + [f"train/extra{i}.png,train,X,medium" for i in range(5)]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    assert main(args + ["--negative", "light"]) == 0
    assert "0 labels unmatched" in capsys.readouterr().out
    assert main(args + ["--name-column", "name"]) == 2
    err = capsys.readouterr().err
    assert "column 'name'" in err and "GRINNING FACE" in err


@pytest.mark.parametrize("flag,value,msg", [("--batch-size", 0, "--batch-size must be at least 1, got 0"),
                                            ("--size", 0, "--size must be a positive number of pixels, got 0")])
def test_edit_bad_batch_or_size_is_one_line(setup, tmp_path, capsys, flag, value, msg):
    root, ckpt, _, _ = setup
    rc, cap = edit([root / "latents.npz", "-o", tmp_path / "o", "--checkpoint", ckpt, "--sefa", 1, flag, value],
                   capsys)
    assert rc == 2 and msg in cap.err and len(cap.err.strip().splitlines()) == 1
