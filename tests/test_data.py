import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from e4e.cli import main
from e4e.data import emoji
from e4e.data.folder import ImageFolderDataset, read_split
from e4e.errors import E4EError

LIMIT = 48


def installed_font() -> Path:
    try:
        return emoji.find_font()
    except E4EError:
        pytest.skip("Noto Color Emoji is not installed (apt-get install fonts-noto-color-emoji)")


def parse(hexes: str) -> tuple[int, ...]:
    return tuple(int(h, 16) for h in hexes.split())


def read_rows(out: Path) -> list[dict]:
    with open(out / "labels.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    installed_font()
    out = tmp_path_factory.mktemp("emoji") / "ds"
    stats = emoji.build(out, size=16, limit=LIMIT, progress=False)
    return out, stats


@pytest.fixture(scope="module")
def all_glyphs():
    return emoji.select(emoji.read_glyphs(installed_font()))[0]


# --- pure functions (no font needed) ----------------------------------------------------------------

def test_group_key_unifies_skin_tone_gender_and_direction():
    wave, wave_dark = (0x1F44B,), (0x1F44B, 0x1F3FF)
    assert emoji.group_key(wave_dark) == wave
    runner_woman_right = (0x1F3C3, 0x1F3FD, 0x200D, 0x2640, 0x200D, 0x27A1)
    assert emoji.group_key(runner_woman_right) == (0x1F3C3,)
    man_cook, woman_cook = (0x1F468, 0x1F3FB, 0x200D, 0x1F373), (0x1F469, 0x200D, 0x1F373)
    assert emoji.group_key(man_cook) == emoji.group_key(woman_cook) == (0x1F9D1, 0x200D, 0x1F373)
    assert emoji.group_key((0x1F3FB,)) == (0x1F3FB,)  # never empty
    for a, b in [(wave, wave_dark), (man_cook, woman_cook), ((0x1F3C3,), runner_woman_right)]:
        assert emoji.split_of(a) == emoji.split_of(b)


def test_split_is_a_fixed_fraction():
    seqs = [(cp,) for cp in range(0x1F300, 0x1F300 + 2000)]
    splits = [emoji.split_of(s) for s in seqs]
    assert splits == [emoji.split_of(s) for s in seqs]
    frac = splits.count("test") / len(splits)
    assert abs(frac - emoji.TEST_FRACTION) < 0.03


def test_canonical_order_of_reversed_sequences():
    zwj = 0x200D
    cook = (0x1F468, zwj, 0x1F373)
    assert emoji.canonical([cook, cook[::-1]]) == cook
    family = (0x1F468, zwj, 0x1F469, zwj, 0x1F467)
    assert emoji.canonical([family[::-1], family]) == family
    couple = (0x1F469, zwj, 0x2764, zwj, 0x1F468)
    assert emoji.canonical([couple[::-1], couple]) == couple
    kiss = (0x1F469, zwj, 0x2764, zwj, 0x1F48B, zwj, 0x1F468)
    assert emoji.canonical([kiss[::-1], kiss]) == kiss
    fire = (0x2764, zwj, 0x1F525)
    assert emoji.canonical([fire[::-1], fire]) == fire
    au, hm = (0x1F1E6, 0x1F1FA), (0x1F1ED, 0x1F1F2)
    assert emoji.canonical([hm, au]) == au


def test_names_and_kinds():
    assert emoji.name_of((0x1F600,)) == "GRINNING FACE"
    assert emoji.kind_of((0x1F600,)) == "single"
    assert emoji.name_of((0x1F44B, 0x1F3FB)) == "WAVING HAND SIGN (light skin tone)"
    assert emoji.kind_of((0x1F44B, 0x1F3FB)) == "modifier"
    assert emoji.name_of((0x1F468, 0x200D, 0x1F373)) == "MAN + COOKING"
    assert emoji.kind_of((0x1F468, 0x200D, 0x1F373)) == "zwj"
    assert emoji.name_of((0x1F1E6, 0x1F1FA), aliases=[(0x1F1ED, 0x1F1F2)]) == "FLAG AU/HM"
    assert emoji.name_of((0x23, 0x20E3)) == "KEYCAP NUMBER SIGN"
    scotland = (0x1F3F4, 0xE0067, 0xE0062, 0xE0073, 0xE0063, 0xE0074, 0xE007F)
    assert emoji.name_of(scotland) == "FLAG GB-SCT" and emoji.kind_of(scotland) == "tag-flag"
    assert emoji.block_of(0x1F600) == "Emoticons"


def test_missing_font_errors(tmp_path, monkeypatch):
    with pytest.raises(E4EError, match="no such font file"):
        emoji.find_font(tmp_path / "nope.ttf")
    monkeypatch.setattr(emoji, "FONT_PATHS", (str(tmp_path / "absent.ttf"),))
    with pytest.raises(E4EError) as e:
        emoji.find_font()
    assert "apt-get install fonts-noto-color-emoji" in str(e.value) and "--font" in str(e.value)
    (tmp_path / "fake.ttf").write_text("not a font")
    with pytest.raises(E4EError, match="not a readable font"):
        emoji.read_glyphs(tmp_path / "fake.ttf")
    assert main(["data", "emoji", str(tmp_path / "out"), "-q"]) == 2


# --- the installed font -------------------------------------------------------------------------------

def test_whole_font_split(all_glyphs):
    seqs = [g.codepoints for g in all_glyphs]
    assert len(seqs) == len(set(seqs)) > 3000
    splits = {s: emoji.split_of(s) for s in seqs}
    n_test = sum(v == "test" for v in splits.values())
    assert n_test >= 300 and len(seqs) - n_test > 2500
    sides = {}
    for s, split in splits.items():
        sides.setdefault(emoji.group_key(s), set()).add(split)
    assert all(len(v) == 1 for v in sides.values())  # no group straddles the split
    # every skin-tone variant sits with its untoned base
    for s in seqs:
        plain = tuple(c for c in s if c not in emoji.SKIN_TONES)
        if plain != s and plain in splits:
            assert splits[s] == splits[plain], emoji.hex_seq(s)
    # ZWJ sequences come out in Unicode order, not the font's reversed copies
    assert not any(0x200D in s and s[0] in emoji.NEVER_FIRST | {0x200D} for s in seqs)
    for known in [(0x1F468, 0x200D, 0x1F373), (0x1F469, 0x200D, 0x2764, 0x200D, 0x1F468), (0x2764, 0x200D, 0x1F525)]:
        assert known in splits
    assert all(len(s) > 1 or s[0] not in emoji.COMPONENTS for s in seqs)


def test_small_build(small_build):
    out, stats = small_build
    rows = read_rows(out)
    assert len(rows) == LIMIT and tuple(rows[0]) == emoji.LABEL_COLUMNS
    assert stats["split"]["train"] + stats["split"]["test"] == LIMIT
    assert stats["split"]["test"] > 0
    for r in rows:
        path = out / r["file"]
        assert r["file"].startswith(r["split"] + "/")
        assert r["split"] == emoji.split_of(parse(r["codepoints"]))
        assert r["group_key"] == emoji.hex_seq(emoji.group_key(parse(r["codepoints"])))
        assert r["name"] and r["category"] and r["group"] and r["kind"]
        with Image.open(path) as im:
            assert im.size == (16, 16) and im.mode == "RGB"
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(
        Path(r["file"]).name for r in rows if r["split"] == "train")
    corner = np.asarray(Image.open(out / rows[0]["file"]))[0, 0]
    assert corner.tolist() == [255, 255, 255]  # white background, padded square


def test_build_is_deterministic_and_limit_stable(small_build, tmp_path):
    out, _ = small_build
    again = tmp_path / "again"
    emoji.build(again, size=16, limit=LIMIT // 2, progress=False)
    rows_a, rows_b = read_rows(out)[:LIMIT // 2], read_rows(again)
    assert rows_a == rows_b
    for r in rows_b:
        assert (out / r["file"]).read_bytes() == (again / r["file"]).read_bytes()


def test_cli_overwrite_and_background(tmp_path):
    installed_font()
    out = tmp_path / "cli"
    assert main(["data", "emoji", str(out), "--limit", "3", "--size", "16", "-q"]) == 0
    assert main(["data", "emoji", str(out), "--limit", "3", "--size", "16", "-q"]) == 2  # exists
    assert main(["data", "emoji", str(out), "--limit", "2", "--size", "32", "--background", "#000000",
                 "--overwrite", "-q"]) == 0
    rows = read_rows(out)
    assert len(rows) == 2 and len(list(out.glob("*/*.png"))) == 2
    im = Image.open(out / rows[0]["file"])
    assert im.size == (32, 32) and im.getpixel((0, 0)) == (0, 0, 0)
    assert main(["data", "emoji", str(tmp_path / "x"), "--background", "nocolour", "-q"]) == 2


# --- ImageFolderDataset ---------------------------------------------------------------------------------

def make_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for i in range(5):
        p = root / ("sub" if i % 2 else "") / f"img{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(p)
    Image.new("RGBA", (24, 20), (255, 0, 0, 0)).save(root / "alpha.png")
    good = (root / "img0.png").read_bytes()
    (root / "truncated.png").write_bytes(good[:len(good) // 2])  # header fine, pixels missing
    (root / "text.png").write_text("not an image")
    (root / "empty.jpg").write_bytes(b"")
    return root


def test_folder_dataset_skips_bad_files(tmp_path):
    ds = ImageFolderDataset(make_folder(tmp_path), size=16)
    assert len(ds) == 7 and ds.num_skipped == 2  # text + empty found at once
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [ds[i] for i in range(len(ds))]
    assert ds.num_skipped == 3 and any("truncated.png" in str(w.message) for w in caught)
    for t in items:
        assert t.shape == (3, 16, 16) and t.dtype == torch.float32
        assert -1 <= t.min() and t.max() <= 1
    alpha = items[[p.name for p in ds.paths].index("alpha.png")]
    assert torch.equal(alpha, torch.ones_like(alpha))  # transparent -> white
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=7)))
    assert batch.shape == (7, 3, 16, 16)


def test_folder_dataset_hflip_and_determinism(tmp_path):
    a = np.zeros((8, 8, 3), np.uint8)
    a[:, :4] = 255
    Image.fromarray(a).save(tmp_path / "half.png")
    plain = ImageFolderDataset(tmp_path)[0]
    flipping = ImageFolderDataset(tmp_path, hflip=True, cache=True)
    torch.manual_seed(1)
    seen = [flipping[0] for _ in range(20)]
    torch.manual_seed(1)
    assert all(torch.equal(x, y) for x, y in zip(seen, [flipping[0] for _ in range(20)]))
    flips = sum(torch.equal(x, plain.flip(-1)) for x in seen)
    assert 0 < flips < 20 and all(torch.equal(x, plain) or torch.equal(x, plain.flip(-1)) for x in seen)


def test_folder_dataset_respects_emoji_split(small_build):
    out, stats = small_build
    train, test = ImageFolderDataset(out), ImageFolderDataset(out, split="test")
    assert len(train) == stats["split"]["train"] and len(test) == stats["split"]["test"]
    assert all(p.parent.name == "train" for p in train.paths)  # held-out images never reach a trainer
    assert len(ImageFolderDataset(out / "train")) == len(train)
    assert read_split(out / "labels.csv", "test") == [f"test/{p.name}" for p in test.paths]
    assert train[0].shape == (3, 16, 16)
