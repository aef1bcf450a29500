"""e4e.data.avatars: the avataaars dataset (determinism, resume, labels, counterfactual pairs, guards)."""
import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("dicebear", reason="the [avatars] extra is not installed (pip install 'e4e[avatars]')")
pytest.importorskip("resvg_py", reason="the [avatars] extra is not installed (pip install 'e4e[avatars]')")

from e4e.cli import main  # noqa: E402
from e4e.data import avatars  # noqa: E402
from e4e.data.folder import ImageFolderDataset  # noqa: E402
from e4e.errors import E4EError  # noqa: E402

COUNT = 41  # test images: indices 0, 20, 40
SIZE = 64
# the component that draws each attribute, and the clean columns an edit of it may change
COMPONENT = {"smile": "mouth", "glasses": "accessories", "facial_hair": "facialHair", "hat": "top",
             "hair_colour": "top"}
MAY_CHANGE = {"smile": {"smile", "mouth"}, "glasses": {"glasses", "glasses_style"},
              "facial_hair": {"facial_hair", "facial_hair_style", "facial_hair_colour"},
              "hat": {"hat", "top", "hair_colour"}, "hair_colour": {"hair_colour"}}


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".parts" not in p.parts}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("avatars") / "ds"
    stats = avatars.build_avatars(out, size=SIZE, count=COUNT, seed=3, workers=1, progress=False,
                                  shard_size=10)
    return out, stats


# --- the build ---------------------------------------------------------------------------------------

def test_build_writes_images_labels_and_pairs(built):
    out, stats = built
    rows = avatars.read_labels(out)
    assert len(rows) == COUNT and stats["rendered"] == COUNT
    assert [r["file"] for r in rows if r["split"] == "test"] == ["test/000000.png", "test/000020.png",
                                                                  "test/000040.png"]
    assert stats["split"]["test"] == 3 and stats["split"]["train"] == COUNT - 3
    assert rows[5]["seed"] == "3-5" and rows[5]["file"] == "train/000005.png"
    for r in rows:
        assert (out / r["file"]).is_file()
        assert r["hair_colour"] in (*avatars.HAIR_COLOURS, "none") and r["skin_colour"] in avatars.SKIN_COLOURS
        assert (r["hair_colour"] == "none") == bool(r["hat"])
    header = next(csv.reader(open(out / "labels.csv")))
    assert header[:3 + len(avatars.LABEL_COLUMNS)] == ["file", "split", "seed", *avatars.LABEL_COLUMNS]
    assert header[3 + len(avatars.LABEL_COLUMNS):] == [f"opt_{k}" for k in avatars.option_keys()]
    from PIL import Image
    with Image.open(out / rows[0]["file"]) as im:
        assert im.mode == "RGB" and im.size == (SIZE, SIZE)
        assert im.getpixel((0, 0)) == (128, 128, 128)  # the fixed background
    pairs = avatars.read_pairs(out)
    sources = {r["source"] for r in pairs}
    assert sources == {r["file"] for r in rows if r["split"] == "test"}
    for src in sources:
        hat = next(r["hat"] for r in rows if r["file"] == src)
        assert {p["attribute"] for p in pairs if p["source"] == src} == \
            set(avatars.EDIT_ATTRIBUTES) - ({"hair_colour"} if hat else set())
    assert all((out / p["file"]).is_file() for p in pairs)
    info = json.loads((out / "info.json").read_text())
    assert info["packages"]["dicebear-core"] and info["pairs"]["smile"] == 3


def test_folder_dataset_reads_the_train_split(built):
    out, stats = built
    ds = ImageFolderDataset(out, size=SIZE)
    assert len(ds) == stats["split"]["train"] and ds.num_skipped == 0
    assert ds[0].shape == (3, SIZE, SIZE)


def test_same_command_same_bytes_and_workers_agree(built, tmp_path):
    """The multiprocess build (fast path) writes the very bytes of the single-process one (reference)."""
    out, _ = built
    again = tmp_path / "again"
    avatars.build_avatars(again, size=SIZE, count=COUNT, seed=3, workers=2, progress=False, shard_size=10)
    assert files_of(again) == files_of(out)


def test_interrupted_build_resumes_to_the_same_bytes(built, tmp_path, monkeypatch):
    out, _ = built
    part = tmp_path / "part"
    real, calls = avatars.render, []

    def dying(*a, **k):
        calls.append(1)
        if len(calls) > 28:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(avatars, "render", dying)
    with pytest.raises(KeyboardInterrupt):
        avatars.build_avatars(part, size=SIZE, count=COUNT, seed=3, workers=1, progress=False, shard_size=10)
    monkeypatch.setattr(avatars, "render", real)
    assert not (part / "labels.csv").exists()
    done = sorted(p.name for p in (part / ".parts").glob("*.labels.csv"))
    # shards 0 and 1 are 10 images + the pairs of index 0 (<= 25 renders); shard 2 (index 20 on) died
    assert done == ["00000.labels.csv", "00001.labels.csv"]
    stats = avatars.build_avatars(part, size=SIZE, count=COUNT, seed=3, workers=1, progress=False, shard_size=10)
    assert stats["rendered"] == COUNT - 20
    assert files_of(part) == files_of(out)
    # a finished build is a no-op that rewrites the same bytes
    again = avatars.build_avatars(part, size=SIZE, count=COUNT, seed=3, workers=1, progress=False, shard_size=10)
    assert again["rendered"] == 0 and files_of(part) == files_of(out)


def test_other_settings_are_refused_then_overwritten(built, tmp_path):
    out = tmp_path / "ds"
    avatars.build_avatars(out, size=SIZE, count=3, workers=1, progress=False, pairs=False)
    assert not (out / "pairs.csv").exists()
    with pytest.raises(E4EError, match="other settings.*count 3 -> 4"):
        avatars.build_avatars(out, size=SIZE, count=4, workers=1, progress=False)
    stats = avatars.build_avatars(out, size=SIZE, count=4, workers=1, progress=False, overwrite=True)
    assert stats["rendered"] == 4 and len(avatars.read_labels(out)) == 4 and avatars.read_pairs(out)
    with pytest.raises(E4EError, match="no pairs file"):
        avatars.read_pairs(tmp_path)


def test_unwritable_output_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(E4EError, match="is a file, not a folder"):
        avatars.build_avatars(tmp_path / "file", size=SIZE, count=2, workers=1, progress=False)

    def full(image, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(avatars, "_save", full)
    with pytest.raises(E4EError, match="No space left on device.*rerun to resume"):
        avatars.build_avatars(tmp_path / "ds", size=SIZE, count=2, workers=1, progress=False)


def test_split_rule():
    assert sum(avatars.split_of(i) == "test" for i in range(60000)) == 3000
    assert avatars.split_of(0) == "test"  # every build, however small, has a test image
    assert [avatars.split_of(i) for i in (19, 20, 21)] == ["train", "test", "train"]


# --- labels ------------------------------------------------------------------------------------------

def test_labels_round_trip_through_to_json_options(built):
    out, _ = built
    for r in avatars.read_labels(out):
        _, resolved = avatars.resolve(r["seed"])
        assert avatars.decode_options(r) == resolved  # every resolved option, decoded from its cells
        clean = avatars.clean_labels(avatars.decode_options(r))
        assert {c: r[c] for c in avatars.LABEL_COLUMNS} == clean
    for p in avatars.read_pairs(out):
        src = next(r for r in avatars.read_labels(out) if r["file"] == p["source"])
        overrides, _ = avatars.counterfactual(src, p["attribute"])
        assert avatars.decode_options(p) == avatars.resolve(src["seed"], overrides)[1]


def test_fast_draw_equals_dicebear_avatar():
    """resolve() validates each option set once (fast path); dicebear's Avatar validates every call."""
    for seed in ("0-0", "0-1", "abc", "7-40"):
        for overrides in (None, {"mouthVariant": list(avatars.SMILE_MOUTHS)}, {"hairColor": ["#2c1b18"]},
                          {"accessoriesProbability": 100}, {"topVariant": list(avatars.HAT_TOPS)}):
            assert avatars.resolve(seed, overrides) == avatars.resolve(seed, overrides, reference=True)
    with pytest.raises(E4EError, match="dicebear refused the options"):
        avatars.resolve("1", {"mouthVariant": 3})
    with pytest.raises(E4EError, match="dicebear refused the options"):
        avatars.resolve("1", {"mouthVariant": 3}, reference=True)


def test_render_sizes_and_labels():
    for size in avatars.SIZES:
        image, labels = avatars.render("x", size)
        assert image.size == (size, size)
    assert labels["options"]["mouthVariant"] == labels["mouth"]
    with pytest.raises(E4EError, match="--size must be one of 64, 128, 256, got 100"):
        avatars.render("x", 100)


# --- counterfactual pairs ----------------------------------------------------------------------------

def footprint(seed: str, overrides: dict, component: str) -> np.ndarray:
    """Pixels that `component` draws in the avatar (seed, overrides): the render with it minus without."""
    with_it, _ = avatars.render(seed, SIZE, overrides)
    without, _ = avatars.render(seed, SIZE, {**overrides, f"{component}Probability": 0}) \
        if component in ("accessories", "facialHair") else (None, None)
    if without is None:  # mouth and top are always drawn: remove them through dicebear directly
        from dicebear import Avatar
        opts = {**avatars.DEFAULT.options(), **overrides, f"{component}Probability": 0}
        without = avatars.rasterise(Avatar(avatars.style(), {"seed": seed, **opts}).to_string(), SIZE)
    return np.any(np.asarray(with_it) != np.asarray(without), axis=2)


@pytest.mark.parametrize("seed", ["3-0", "3-20", "7-40"])
def test_pairs_differ_only_inside_the_attribute_region(seed):
    src_image, src = avatars.render(seed, SIZE)
    for attribute in avatars.EDIT_ATTRIBUTES:
        pair = avatars.render_pair(seed, src, attribute, SIZE)
        if pair is None:
            assert attribute == "hair_colour" and src["hat"] == 1
            continue
        image, new, target = pair
        assert new[attribute] == target != src[attribute]
        changed = {c for c in avatars.LABEL_COLUMNS if new[c] != src[c]}
        assert attribute in changed and changed <= MAY_CHANGE[attribute], (attribute, changed)
        comp = COMPONENT[attribute]
        overrides, _ = avatars.counterfactual(src, attribute)
        region = footprint(seed, {}, comp) | footprint(seed, overrides, comp)
        diff = np.any(np.asarray(src_image) != np.asarray(image), axis=2)
        assert diff.any(), attribute
        assert not (diff & ~region).any(), f"{attribute}: {int((diff & ~region).sum())} px changed outside"
        assert region.mean() < (0.8 if comp == "top" else 0.2)


def test_counterfactual_rules():
    labels = {"smile": 1, "glasses": 0, "facial_hair": 0, "hat": 1, "hair_colour": "none"}
    assert avatars.counterfactual(labels, "smile") == ({"mouthVariant": list(avatars.OTHER_MOUTHS)}, 0)
    assert avatars.counterfactual(labels, "glasses") == ({"accessoriesProbability": 100}, 1)
    assert avatars.counterfactual(labels, "hat") == ({"topVariant": list(avatars.HAIR_TOPS)}, 0)
    assert avatars.counterfactual(labels, "hair_colour") is None  # no visible hair under a hat
    overrides, _ = avatars.counterfactual({**labels, "hat": 0, "hair_colour": "red"}, "hair_colour")
    assert len(overrides["hairColor"]) == 9 and avatars.HAIR_COLOURS["red"] not in overrides["hairColor"]
    with pytest.raises(E4EError, match="unknown attribute 'age'"):
        avatars.counterfactual(labels, "age")


# --- guards against dicebear's silent failures -------------------------------------------------------

def test_silent_failures_are_errors():
    with pytest.raises(E4EError, match="glassesProbability"):
        avatars.resolve("1", {"glassesProbability": 100})  # dicebear would ignore it
    with pytest.raises(E4EError, match="drew no mouth"):
        avatars.resolve("1", {"mouthVariant": "smiel"})  # dicebear would drop the mouth
    _, resolved = avatars.resolve("1", {"mouthVariant": "smile", "accessoriesProbability": 100})
    assert resolved["mouthVariant"] == "smile" and resolved["accessoriesVariant"] in avatars.GLASSES


def test_curated_names_are_checked_against_the_style():
    from importlib import resources

    from dicebear import Style
    definition = json.loads(resources.files("dicebear_styles").joinpath("avataaars.json").read_text())
    del definition["components"]["mouth"]["variants"]["twinkle"]
    with pytest.raises(E4EError, match=r"no mouth variants \['twinkle'\]"):
        avatars._check_curated(Style(definition))


def test_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "resvg_py", None)
    with pytest.raises(E4EError, match=r"needs resvg-py: pip install 'e4e\[avatars\]'"):
        avatars.rasterise("<svg/>", 64)
    monkeypatch.setattr(avatars, "_STYLE", None)
    monkeypatch.setitem(sys.modules, "dicebear", None)
    with pytest.raises(E4EError, match=r"needs dicebear-core: pip install 'e4e\[avatars\]'"):
        avatars.style()


# --- command line ------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--size", "100"], "--size must be one of 64, 128, 256, got 100"),
    (["--count", "0"], "--count must be a positive integer, got 0"),
    (["--workers", "0"], "--workers must be positive, got 0"),
    (["--glasses-probability", "101"], "--glasses-probability must be an integer percent 0-100, got 101"),
])
def test_cli_bad_arguments_are_one_line(tmp_path, capsys, args, message):
    assert main(["data", "avatars", str(tmp_path / "ds"), *args]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"e4e: error: {message}"
    assert not (tmp_path / "ds").exists()


def test_cli_builds(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["data", "avatars", str(out), "--size", "64", "--count", "2", "--workers", "1", "-q",
                 "--no-pairs"]) == 0
    assert "2 avatars (64x64), train 1, test 1" in capsys.readouterr().out
    assert len(avatars.read_labels(out)) == 2 and not (out / "pairs.csv").exists()
