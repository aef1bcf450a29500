"""e4e.serve.core: the web app's logic without a browser (embedded model, tiny checkpoints, seconds)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import e4e
from e4e import benchmark as bm
from e4e import editing
from e4e.checkpoints.native import save_native
from e4e.errors import E4EError
from e4e.serve import core
from tiny_inverters import tiny_inverter


@pytest.fixture(scope="module")
def editor(tmp_path_factory):
    return core.load_editor(tmp_path_factory.mktemp("serve"), ganspace_samples=2000, log=lambda *a: None)


@pytest.fixture(scope="module")
def sample():
    return core.sample_images()[0]


def test_embedded_model_directions_are_discovered(editor):
    kinds = [d.kind for d in editor.directions]
    names = [d.name for d in editor.directions]
    # the fitted directions file beside the embedded checkpoint: one slider per binary attribute (toward 1)
    # and per hair colour, one unit of the file's kind per slider unit (a class gap for the shipped W+
    # directions), reaching past the calibrated strength
    shipped, _ = bm.load_directions(Path(editor.inverter.checkpoint_path).parent / core.FITTED_FILE)
    colours = sorted(d.target for d in shipped if d.attribute == "hair_colour")
    binary = ["smile", "glasses", "facial hair", "hat"]
    assert names[:4 + len(colours)] == binary + [f"hair colour {c}" for c in colours]
    assert kinds.count("fitted") == 4 + len(colours) and kinds.count("sefa") == 3 and kinds.count("ganspace") == 3
    smile = next(d for d in shipped if (d.attribute, d.target) == ("smile", "1"))
    assert torch.equal(editor.directions[0].vector, smile.vector.float().reshape(1, *smile.vector.shape))
    assert editor.directions[0].unit == 1.0 and editor.directions[0].limit >= smile.info["strength"]
    g = editor.inverter.decoder
    for d in editor.directions:
        editing.check_direction(d.vector, g.n_latent, g.style_dim, d.label)


def _tiny_checkpoint(folder: Path, directions: dict) -> Path:
    inv = tiny_inverter()
    parts = {"encoder": inv.encoder.state_dict(), "generator": inv.decoder.state_dict()}
    tensors = {"latent_avg": inv.latent_avg, **{f"directions.{k}": v for k, v in directions.items()}}
    path = folder / "tiny.safetensors"
    save_native(path, parts, inv.configs(), tensors=tensors)
    return path


def test_checkpoint_sidecar_and_user_directions(tmp_path):
    smile = torch.randn(1, 32)
    ckpt = _tiny_checkpoint(tmp_path, {"smile": smile})
    torch.save(torch.randn(1, 32), tmp_path / "age.pt")
    torch.save(torch.randn(1, 64), tmp_path / "other_model.pt")  # 64-d: not for this generator
    (tmp_path / "notes.npy").write_bytes(b"junk")
    logged = []
    inv = e4e.load(ckpt)
    found = core.discover_directions(inv, n_sefa=1, n_ganspace=2, ganspace_samples=500, log=logged.append)
    assert [(d.name, d.kind) for d in found] == [("smile", "checkpoint"), ("age", "file"), ("SeFa 0", "sefa"),
                                                 ("GANSpace 0", "ganspace"), ("GANSpace 1", "ganspace")]
    assert torch.equal(found[0].vector, smile)
    assert any("other_model.pt" in m for m in logged) and any("notes.npy" in m for m in logged)
    # a file the user names must fit: a clear error, not a silent skip
    with pytest.raises(E4EError, match="64-d but the latents are 32-d"):
        core.discover_directions(inv, [tmp_path / "other_model.pt"], n_sefa=0, n_ganspace=0, log=logged.append)
    with pytest.raises(E4EError, match="no such direction file"):
        core.discover_directions(inv, [tmp_path / "missing.pt"], n_sefa=0, n_ganspace=0)


def _fitted_file(path: Path, dim: int, sha: str | None) -> Path:
    dirs = [bm.Direction("ifg_codes", "smile", "1", torch.randn(dim), {"strength": 2.0}),
            bm.Direction("ifg_codes", "smile", "0", torch.randn(dim), {"strength": 2.5}),
            bm.Direction("ifg_codes", "hair_colour", "red", torch.randn(dim), {"strength": 4.0}),
            bm.Direction("ifg_samples", "hat", "1", torch.randn(dim)),
            bm.Direction("sefa", "sefa0", "+", torch.randn(dim), {"strength": 3.0})]
    bm.save_directions(path, dirs, [], {"kind": "ifg_codes", "model": "x.safetensors", "model_sha256": sha})
    return path


def test_fitted_directions_beside_and_given(tmp_path):
    """A fitted directions file beside the checkpoint gives sliders of its own kind (binary once, each colour
    once), unless it records another model's hash; given with --directions, it is read as it is."""
    from e4e.latents import checkpoint_sha256
    ckpt = _tiny_checkpoint(tmp_path, {})
    inv = e4e.load(ckpt)
    _fitted_file(tmp_path / core.FITTED_FILE, 32, checkpoint_sha256(ckpt))
    found = core.discover_directions(inv, n_sefa=0, n_ganspace=0, log=print)
    assert [(d.name, d.kind) for d in found] == [("smile", "fitted"), ("hair colour red", "fitted")]
    assert found[0].limit == 5.0 and found[1].limit == 6.0
    logged = []
    _fitted_file(tmp_path / core.FITTED_FILE, 32, "0" * 64)
    assert core.discover_directions(inv, n_sefa=0, n_ganspace=0, log=logged.append) == []
    assert any("fitted to another model (x.safetensors)" in m for m in logged)
    given = _fitted_file(tmp_path / "mine.safetensors", 32, None)
    assert [d.name for d in core.discover_directions(inv, [given], n_sefa=0, n_ganspace=0, log=logged.append)] == \
        ["smile", "hair colour red"]
    with pytest.raises(E4EError, match="64-d but the latents are 32-d"):
        core.discover_directions(inv, [_fitted_file(tmp_path / "wide.safetensors", 64, None)], n_sefa=0,
                                 n_ganspace=0)


def test_fitted_wplus_directions_move_each_style_by_its_own_vector(tmp_path):
    """A codes_wplus file (one vector per style, what scripts/make_demo_assets.py ships) gives W+ sliders:
    a slider value v adds v times each style's own vector; a file for another style count is refused."""
    ckpt = _tiny_checkpoint(tmp_path, {})
    inv = e4e.load(ckpt)
    n, dim = inv.decoder.n_latent, inv.decoder.style_dim
    vec = torch.randn(n, dim)
    path = tmp_path / "wplus.safetensors"
    bm.save_directions(path, [bm.Direction("codes_wplus", "smile", "1", vec, {"strength": 2.0})], [],
                       {"kind": "codes_wplus"})
    (found,) = core.discover_directions(inv, [path], n_sefa=0, n_ganspace=0)
    assert found.name == "smile" and found.vector.shape == (1, n, dim)
    codes = torch.randn(2, n, dim)
    torch.testing.assert_close(core.apply_values(codes, [found], [1.5]), codes + 1.5 * vec)
    bm.save_directions(path, [bm.Direction("codes_wplus", "smile", "1", torch.randn(n + 1, dim), {})], [],
                       {"kind": "codes_wplus"})
    with pytest.raises(E4EError, match=f"has {n + 1} styles but the latents have {n}"):
        core.discover_directions(inv, [path], n_sefa=0, n_ganspace=0)


def test_apply_values_matches_the_editing_library(editor):
    """The slider path equals e4e.edit / editing.apply_direction applied one direction at a time."""
    codes = torch.randn(1, editor.inverter.decoder.n_latent, editor.inverter.decoder.style_dim)
    zeros = [0.0] * len(editor.directions)
    assert torch.equal(core.apply_values(codes, editor.directions, zeros), codes)
    values = [0.5 * (i + 1) * (-1) ** i for i in range(len(editor.directions))]
    ref = codes
    for d, v in zip(editor.directions, values):
        ref = editing.apply_direction(ref, d.vector, v * d.unit, d.styles)
    torch.testing.assert_close(core.apply_values(codes, editor.directions, values), ref)
    smile = [d.name for d in editor.directions].index("smile")
    one = zeros.copy()
    one[smile] = 2.0
    torch.testing.assert_close(core.apply_values(codes, editor.directions, one),
                               e4e.edit(codes, direction=editor.directions[smile].vector, strength=2.0))
    with pytest.raises(E4EError, match="slider values"):
        core.apply_values(codes, editor.directions, [1.0])


def test_invert_edit_and_distortion(editor, sample):
    inv = editor.invert(sample)
    assert inv.name == sample.stem and inv.image.size == (editor.size, editor.size)
    # the same codes as the library's e4e.invert on the file
    ref = e4e.invert([sample], editor.inverter)
    torch.testing.assert_close(inv.codes, ref.codes, atol=1e-5, rtol=1e-5)
    recon = editor.reconstruction(inv)
    target = np.asarray(inv.image, dtype=np.float64) / 127.5 - 1
    mse = ((np.asarray(recon, dtype=np.float64) / 127.5 - 1 - target) ** 2).mean()
    assert inv.distortion == pytest.approx(mse, abs=2e-3)  # recon above is 8-bit quantised
    zeros = [0.0] * len(editor.directions)
    assert np.array_equal(np.asarray(editor.edit(inv, zeros)), np.asarray(recon))
    # the first slider at its end moves the image (how far an edit goes is the model's, docs/model_card_avatar.md)
    moved = np.asarray(editor.edit(inv, [editor.directions[0].limit] + zeros[1:]), dtype=np.int16)
    assert np.abs(moved - np.asarray(recon, dtype=np.int16)).mean() > 1.0


def _bad_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {"text": folder / "notes.png", "empty": folder / "empty.jpg", "truncated": folder / "cut.png",
           "big": folder / "big.png"}
    out["text"].write_bytes(b"hello, not an image")
    out["empty"].write_bytes(b"")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 90).save(out["big"])
    data = out["big"].read_bytes()
    out["truncated"].write_bytes(data[: len(data) // 2])
    return out


@pytest.mark.parametrize("kind, message", [("text", "not an image file"), ("empty", "empty file"),
                                           ("truncated", "corrupt or truncated"), ("big", "image too large")])
def test_bad_input_is_one_line_naming_only_the_file(tmp_path, editor, kind, message):
    path = _bad_files(tmp_path / "deep" / "upload")[kind]
    small = core.Editor(editor.inverter, editor.directions, tmp_path,
                        max_pixels=64 * 63 if kind == "big" else core.MAX_PIXELS)
    with pytest.raises(E4EError) as err:
        small.invert(path)
    text = str(err.value)
    assert message in text and path.name in text and "\n" not in text
    assert str(path.parent) not in text  # the server's temporary path is not shown to the user


def test_no_image_and_alignment(tmp_path, editor, sample):
    with pytest.raises(E4EError, match="no image"):
        editor.load_input(None)
    bare = core.Editor(editor.inverter, editor.directions, tmp_path, detector=None)
    with pytest.raises(E4EError, match="alignment is not available"):
        bare.load_input(sample, align=True)
    no_face = core.Editor(editor.inverter, editor.directions, tmp_path, detector=lambda im: [])
    with pytest.raises(E4EError, match=f"{sample.name}: no face found"):
        no_face.invert(sample, align=True)
    # a detector that finds a face: the aligned crop (here: the whole image) is what gets inverted
    w, h = Image.open(sample).size
    five = np.array([[0.35 * w, 0.4 * h], [0.65 * w, 0.4 * h], [0.5 * w, 0.55 * h], [0.38 * w, 0.7 * h],
                     [0.62 * w, 0.7 * h]])
    face = core.Editor(editor.inverter, editor.directions, tmp_path, detector=lambda im: [five])
    aligned = face.invert(sample, align=True)
    assert aligned.image.size == (editor.size, editor.size)
    assert not torch.equal(aligned.codes, editor.invert(sample).codes)


def test_refine_lowers_distortion(editor, sample):
    inv = editor.invert(sample)
    before = {k: v.clone() for k, v in editor.inverter.decoder.state_dict().items()}
    opt = editor.refine(inv, "optimize", steps=3, progress=False)
    assert opt.distortion < inv.distortion and opt.generator is None and opt.refined == "optimize"
    pti = editor.refine(inv, "pti", steps=2, progress=False)
    assert pti.distortion < inv.distortion and pti.generator is not None
    assert torch.equal(pti.codes, inv.codes)  # PTI keeps the pivot and tunes a generator copy...
    after = editor.inverter.decoder.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())  # ...never the served model
    with pytest.raises(E4EError, match="refine method"):
        editor.refine(inv, "magic")
    with pytest.raises(E4EError, match="refine steps"):
        editor.refine(inv, "optimize", steps=0)


def test_export_writes_only_under_the_workdir(tmp_path, editor, sample):
    ed = core.Editor(editor.inverter, editor.directions, tmp_path / "work")
    inv = ed.invert(sample)
    values = [1.5] + [0.0] * (len(ed.directions) - 1)
    lat_path, img_path = ed.export(inv, values)
    for p in (lat_path, img_path):
        assert p.is_file() and (tmp_path / "work") in p.parents
    lat = e4e.load_latents(lat_path)
    assert lat.names == [sample.stem]
    torch.testing.assert_close(lat.codes, core.apply_values(inv.codes, ed.directions, values))
    assert lat.meta["edit"] == {ed.directions[0].label: 1.5}
    assert lat.meta["generator"]["size"] == ed.inverter.decoder.size
    assert np.array_equal(np.asarray(Image.open(img_path).convert("RGB")), np.asarray(ed.edit(inv, values)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def test_face_default_follows_the_checkpoint(tmp_path, editor):
    assert not core.looks_like_faces(editor.inverter)  # the embedded avatar model
    inv = tiny_inverter()
    inv.checkpoint_path = tmp_path / "e4e_ffhq_encode.pt"
    inv.checkpoint_path.write_bytes(b"")
    assert core.looks_like_faces(inv)


def test_label_of_keeps_only_plain_characters():
    from e4e.serve.core import label_of
    assert label_of("../../etc/passwd") == "etc_passwd"
    assert label_of("my photo (1).png") == "my_photo_1_.png"
    assert label_of("...") == "image" and len(label_of("a" * 200)) == 80
