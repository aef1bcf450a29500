"""`e4e demo` and scripts/make_demo_assets.py: the assets script on a tiny synthetic avatar folder, the demo
on what it wrote (a tiny inverter, a rule for a judge: seconds), the shipped assets against the embedded
model, and one short run of the real demo."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import e4e.cli.demo as demo
from e4e import benchmark as bm
from e4e.assets import default_inverter_path, directions_path, samples_dir
from e4e.checkpoints import load_inverter
from e4e.cli import main
from e4e.latents import checkpoint_sha256
from conftest import load_module
from test_benchmark import StubNet, make_avatar_folder, patch_rule
from tiny_inverters import tiny_inverter

REPO = Path(__file__).resolve().parents[1]


def load_script():
    return load_module(REPO / "scripts" / "make_demo_assets.py", "make_demo_assets")


@pytest.fixture(scope="module")
def tiny_assets(tmp_path_factory):
    """make_demo_assets.build on a synthetic folder with a tiny inverter and a rule for a judge."""
    root = tmp_path_factory.mktemp("demo")
    make_avatar_folder(root / "data", n_train=16, n_test=4)
    inv = tiny_inverter(0)
    inv.save(root / "tiny.safetensors")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        opts = bm.DirectionOptions(samples=200, codes=12, calib_samples=4, calib_grid=(1.0, 2.0), batch_size=4,
                                   kinds=("codes_wplus",), stop_at_goal=True, calib_on="codes")
        files = {"model": "tiny.safetensors", "model_sha256": checkpoint_sha256(root / "tiny.safetensors"),
                 "judge": "stub"}
        info = load_script().build(root / "data", root / "assets", inv, StubNet(patch_rule), None, opts, 3, files,
                                   log=lambda *a: None)
    finally:
        torch.set_num_threads(n)
    return root, info


def cells(grid: Image.Image, size: int, n_cols: int, n_rows: int) -> list[list[np.ndarray]]:
    """The grid's images (make_grid with padding 2, under the label header)."""
    a = np.asarray(grid.convert("RGB"))
    top = a.shape[0] - (n_rows * (size + 2) + 2)
    assert a.shape[1] == n_cols * (size + 2) + 2 and top > 0
    return [[a[top + 2 + r * (size + 2):top + 2 + r * (size + 2) + size, 2 + c * (size + 2):2 + c * (size + 2) + size]
             for c in range(n_cols)] for r in range(n_rows)]


EXPECTED_COLUMNS = ["input", "inversion", "smile edit", "smile truth", "glasses edit", "glasses truth",
                    "facial hair edit", "facial hair truth", "hat edit", "hat truth", "hair colour edit",
                    "hair colour truth"]


def test_assets_script_writes_directions_and_a_small_dataset(tiny_assets):
    root, info = tiny_assets
    assets = root / "assets"
    dirs, _ = bm.load_directions(assets / "directions.safetensors")
    assert bm.directions_info(assets / "directions.safetensors") == json.loads(json.dumps(info))
    assert info["kind"] == "codes_wplus" and "class-mean difference" in info["how"] and len(info["sources"]) == 3
    assert "the e4e inversions of 4 training avatars (rows after the first 12)" in info["strength"]
    assert {d.kind for d in dirs} == {"codes_wplus", "sefa"}
    n = tiny_inverter(0).decoder.n_latent
    assert all(d.vector.shape == ((32,) if d.kind == "sefa" else (n, 32)) and d.info["strength"] > 0 for d in dirs)
    # the samples folder is a dataset of its own: the source and pair images are the data's, byte for byte
    data = bm.read_pairs(assets / "samples")
    assert [r["file"] for r in data.labels] == info["sources"]
    assert len(data.pairs) == 3 * 5
    with open(root / "data" / "pairs.csv") as f:
        originals = {(Path(p["source"]).name, p["attribute"]): p for p in csv.DictReader(f)}
    for p in data.pairs:
        orig = originals[(p["source"], p["attribute"])]
        assert p["target"] == orig["target"]
        assert (assets / "samples" / p["file"]).read_bytes() == (root / "data" / orig["file"]).read_bytes()


def test_calibrated_strengths_are_capped_for_class_gap_directions():
    """A judge can be satisfied by a wrecked image: codes_wplus strengths stop at MAX_GAPS; W ones do not."""
    mod = load_script()
    v = torch.zeros(4, 8)
    far = bm.Direction("codes_wplus", "hat", "1", v, {}, 3.66, [0.06, 0.36, 0.6, 0.72, 0.83, 0.94])
    near = bm.Direction("codes_wplus", "hat", "0", v, {}, 1.83, [0.18, 0.29, 0.82, 0.94])
    w_far = bm.Direction("ifg_samples", "hat", "1", v[0], {}, 4.5, [0.1, 0.5, 0.9])
    grid = (0.5, 1, 1.5, 2, 3, 4)
    assert mod.strength_of(far, grid) == (mod.MAX_GAPS, f"s90 3.66 above the cap: {mod.MAX_GAPS:g}")
    assert mod.strength_of(near, grid) == (1.83, "s90")
    assert mod.strength_of(w_far, grid) == (4.5, "s90")


def test_pick_sources_wants_complete_and_varied_sources():
    mod = load_script()
    labels, pairs = [], []
    for i, (smile, hat, colour) in enumerate([("0", "0", "red"), ("0", "0", "red"), ("1", "0", "blond"),
                                              ("0", "1", "none"), ("1", "0", "red")]):
        f = f"test/{i}.png"
        labels.append({"file": f, "split": "test", "smile": smile, "glasses": "0", "facial_hair": "0", "hat": hat,
                       "hair_colour": colour, "skin_colour": "light"})
        for a in bm.EDIT_ATTRIBUTES:
            if not (a == "hair_colour" and (hat == "1" or i == 4)):  # 4: a hatless source missing a pair
                pairs.append({"file": f"pairs/{a}/{i}.png", "source": f, "attribute": a, "target": "x"})
    data = bm.PairSet(Path("."), labels, pairs, bm.EDIT_ATTRIBUTES)
    assert [r["file"] for r in mod.complete_sources(data)] == ["test/0.png", "test/1.png", "test/2.png", "test/3.png"]
    # 0 first (file order), then 3 (hat, no hair: new values), then 2 (smile, blond); 1 adds nothing new
    assert [r["file"] for r in mod.pick_sources(data, 3)] == ["test/0.png", "test/2.png", "test/3.png"]
    assert len(mod.pick_sources(data, 10)) == 4


def test_demo_on_tiny_assets(tiny_assets, tmp_path, monkeypatch, capsys):
    root, _ = tiny_assets
    monkeypatch.setattr(demo, "load_judge", lambda path: (StubNet(patch_rule), "stub"))
    samples = tmp_path / "samples"
    shutil.copytree(root / "assets" / "samples", samples)
    with open(samples / "pairs.csv") as f:  # one missing pair: its cells are empty
        rows = list(csv.DictReader(f))
    dropped = rows.pop(4)
    assert dropped["attribute"] == "hair_colour"
    with open(samples / "pairs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "out"
    rc = main(["demo", "-o", out, "--checkpoint", root / "tiny.safetensors", "--samples", samples,
               "--directions", root / "assets" / "directions.safetensors", "--threads", "1"])
    log = capsys.readouterr().out
    assert rc == 0
    names = (out / "columns.txt").read_text().splitlines()
    assert names[:12] == EXPECTED_COLUMNS and len(names) == 14 and names[12].startswith("SeFa 0 -")
    assert "reconstruction MSE" in log and "judge sees the target" in log and "fitted to another" not in log
    grid = cells(Image.open(out / "demo.png"), 32, len(names), 3)
    sources = [r["file"] for r in bm.read_pairs(samples).labels]
    for r, src in enumerate(sources):
        assert np.array_equal(grid[r][0], np.asarray(Image.open(samples / src).convert("RGB")))
        for k, a in enumerate(bm.EDIT_ATTRIBUTES):
            truth = samples / "pairs" / a / src
            if src == Path(dropped["source"]).name and a == "hair_colour":
                assert (grid[r][2 + 2 * k] == grid[r][3 + 2 * k]).all() and len(np.unique(grid[r][3 + 2 * k])) == 1
            else:
                assert np.array_equal(grid[r][3 + 2 * k], np.asarray(Image.open(truth).convert("RGB")))
    with open(out / "edits.csv") as f:
        edits = list(csv.DictReader(f))
    assert len(edits) == 3 * 5 - 1 and {e["success"] for e in edits} <= {"0", "1"}
    assert all(float(e["edit_mse"]) >= 0 and float(e["strength"]) > 0 for e in edits)


def test_demo_warns_when_the_directions_belong_to_another_model(tiny_assets, tmp_path, monkeypatch, capsys):
    root, _ = tiny_assets
    monkeypatch.setattr(demo, "load_judge", lambda path: (None, "none"))
    other = tmp_path / "other.safetensors"
    tiny_inverter(3).save(other)
    rc = main(["demo", "-o", tmp_path / "out", "--checkpoint", other, "--samples", root / "assets" / "samples",
               "--directions", root / "assets" / "directions.safetensors", "--limit", "1", "--threads", "1"])
    log = capsys.readouterr().out
    assert rc == 0 and "fitted to another model (tiny.safetensors)" in log and "yes" not in log


@pytest.mark.parametrize("extra, message", [
    (["--samples", "{tmp}/nowhere"], "labels.csv: not found"),
    (["--directions", "{tmp}/nodir.safetensors"], "no such directions file"),
    (["--limit", "0"], "--limit must be at least 1"),
    (["--kind", "component"], "no 'component' directions"),
    (["--checkpoint", "{big}"], "make them for this model with scripts/make_demo_assets.py DATA"),
])
def test_demo_bad_input_is_one_line(tiny_assets, tmp_path, capsys, extra, message):
    root, _ = tiny_assets
    big = tmp_path / "w64.safetensors"
    if "{big}" in extra:
        from e4e.inverter import build_inverter
        from e4e.nets.encoders import EncoderConfig
        from e4e.nets.stylegan2 import GeneratorConfig
        enc = EncoderConfig(kind="e4e", stylegan_size=32, style_dim=64, widths=(8, 8, 8, 8), units=(1, 1, 1, 1),
                            input_size=32, mode="ir")
        build_inverter(enc, GeneratorConfig(size=32, style_dim=64, n_mlp=1, channel_max=8)).save(big)
    extra = [e.format(tmp=tmp_path, big=big) for e in extra]
    base = {"--checkpoint": str(root / "tiny.safetensors"), "--samples": str(root / "assets" / "samples"),
            "--directions": str(root / "assets" / "directions.safetensors")}
    for k in list(base):
        if k in extra:
            del base[k]
    rc = main(["demo", "-o", tmp_path / "out", *[x for kv in base.items() for x in kv], *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1


# ------------------------------------------------------------------------------ the shipped assets


def test_shipped_assets_fit_the_embedded_model():
    """What ships: directions fitted to this very model (its sha256), calibrated strengths, 6-8 held-out
    avatars that each have every pair they can have, and nothing big."""
    info = bm.directions_info(directions_path())
    assert info["model_sha256"] == checkpoint_sha256(default_inverter_path()), \
        "the shipped directions were fitted to another model: python scripts/make_demo_assets.py DATA"
    dirs, _ = bm.load_directions(directions_path())
    kinds = {d.kind for d in dirs}
    assert kinds == {info["kind"], "sefa"}
    assert {d.attribute for d in dirs if d.kind != "sefa"} == set(bm.EDIT_ATTRIBUTES)
    n = load_inverter(default_inverter_path()).decoder.n_latent
    assert all(d.vector.shape == ((n, 512) if d.kind == "codes_wplus" else (512,)) and d.info["strength"] > 0
               for d in dirs)
    data = bm.read_pairs(samples_dir())
    sources = [r for r in data.labels]
    assert 6 <= len(sources) <= 8 and all(r["split"] == "test" for r in sources)
    for r in sources:
        have = {p["attribute"] for p in data.pairs if p["source"] == r["file"]}
        assert have == set(bm.EDIT_ATTRIBUTES) - ({"hair_colour"} if r["hat"] == "1" else set()), r["file"]
    for p in data.pairs:
        assert Image.open(samples_dir() / p["file"]).size == (128, 128)
    small = sum(f.stat().st_size for f in samples_dir().rglob("*") if f.is_file()) + directions_path().stat().st_size
    assert small < 512 * 1024


def test_shipped_weights_stay_under_40_mb():
    shipped = [f for f in (REPO / "src" / "e4e" / "assets").rglob("*") if f.is_file()]
    models = REPO / "models"
    shipped += [f for f in models.rglob("*") if f.is_file() and "state" not in f.relative_to(models).parts]
    assert sum(f.stat().st_size for f in shipped) <= 40_000_000
    assert not (REPO / "src" / "e4e" / "assets" / "e4e_emoji64.safetensors").exists()


@pytest.mark.slow
def test_demo_with_the_embedded_model(tmp_path, capsys):
    """Two shipped avatars through the real model and judge: the truth columns are the shipped pair images."""
    if not demo.default_classifier().is_file():
        pytest.skip("models/avatar/eval_convnet_B.safetensors is not in this checkout")
    out = tmp_path / "demo"
    assert main(["demo", "-o", out, "--limit", "2"]) == 0
    log = capsys.readouterr().out
    assert "inverted with e4e_avatar128.safetensors" in log and "eval_convnet_B.safetensors" in log
    names = (out / "columns.txt").read_text().splitlines()
    assert names[:12] == EXPECTED_COLUMNS
    data = bm.read_pairs(samples_dir())
    sources = [r["file"] for r in data.labels][:2]
    grid = cells(Image.open(out / "demo.png"), 128, len(names), 2)
    for r, src in enumerate(sources):
        for k, a in enumerate(bm.EDIT_ATTRIBUTES):
            truth = samples_dir() / "pairs" / a / src
            if truth.is_file():
                assert np.array_equal(grid[r][3 + 2 * k], np.asarray(Image.open(truth).convert("RGB")))
    with open(out / "edits.csv") as f:
        assert all(e["success"] in ("0", "1") for e in csv.DictReader(f))
