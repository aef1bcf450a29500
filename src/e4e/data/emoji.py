"""The project's own training set: colour emoji from Noto Color Emoji (Debian `fonts-noto-color-emoji`).

No face data can be downloaded here, so e4e trains its small StyleGAN on emoji. This module reads the
font's PNG bitmaps (CBDT/CBLC tables, ~136x128 px) with fontTools, names each glyph by its codepoint
sequence (cmap for single codepoints, GSUB ligatures for sequences), and writes

    OUT_DIR/train/*.png, OUT_DIR/test/*.png   square RGB images, emoji on a flat background
    OUT_DIR/labels.csv                        one row per image (columns: LABEL_COLUMNS)
    OUT_DIR/info.json                         font, settings and counts, for reproducibility

Held-out split: a glyph goes to `test` when a hash of its *group key* falls below TEST_FRACTION. The
group key is the codepoint sequence with skin tones, gender signs and "facing right" removed and
man/woman/person unified, so all skin-tone, gender and direction variants of one emoji land on the
same side and the test set is really unseen. It depends on nothing but the codepoints: the same
glyph always gets the same split, with or without --limit, on any machine.

Left out: glyphs that are components rather than emoji (keycap bases 0-9 # *, regional-indicator
letters, the enclosing keycap, the five skin-tone swatches), glyphs reachable only through private-use codepoints, and exact
duplicate bitmaps (the first glyph in font order is kept). Codepoint sequences are given without
variation selectors (U+FE0F), as the font stores them.
"""
import csv
import hashlib
import io
import json
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from e4e.errors import E4EError
from e4e.imageio import parse_color, to_rgb

FONT_NAME = "NotoColorEmoji.ttf"
FONT_PATHS = (
    "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",                # Debian / Ubuntu
    "/usr/share/fonts/noto/NotoColorEmoji.ttf",                         # Arch
    "/usr/share/fonts/google-noto-color-emoji-fonts/NotoColorEmoji.ttf",  # Fedora
    "/usr/local/share/fonts/NotoColorEmoji.ttf",
)
SIZES = (16, 32, 64, 128, 256)
TEST_FRACTION = 0.12  # of groups; font 2.042 gives 383 test images of 3872 (223 of 1800 groups)
SPLIT_SALT = "e4e-emoji-split-v1"
LABEL_COLUMNS = ("file", "split", "codepoints", "name", "category", "group", "kind", "skin_tone",
                 "group_key", "glyph")

ZWJ, VS16, KEYCAP = 0x200D, 0xFE0F, 0x20E3
SKIN_TONES = {0x1F3FB: "light", 0x1F3FC: "medium-light", 0x1F3FD: "medium", 0x1F3FE: "medium-dark",
              0x1F3FF: "dark"}
GENDER_SIGNS = {0x2640, 0x2642}
# Gender, and facing right (a mirror image, which hflip augmentation produces anyway).
VARIANT_SIGNS = {*GENDER_SIGNS, 0x27A1}
ADULTS = {0x1F468, 0x1F469, 0x1F9D1}  # man, woman, person
PERSON = 0x1F9D1
REGIONAL = range(0x1F1E6, 0x1F200)
TAGS = range(0xE0020, 0xE0080)
COMPONENTS = {0x23, 0x2A, *range(0x30, 0x3A), KEYCAP, *REGIONAL, *SKIN_TONES}
# The font also stores every ZWJ sequence in reversed segment order (for right-to-left text). These
# codepoints never start a well-formed sequence: gender signs, arrows and other trailing attributes,
# the kiss mark, children (who come last in families), skin tones and tag characters.
NEVER_FIRST = {*GENDER_SIGNS, 0x27A1, 0x2194, 0x2195, 0x2620, 0x2744, 0x2B1B, 0x26A7, 0x1F308, 0x1F525,
               0x1FA79, 0x1F32B, 0x1F4A8, 0x1F4AB, 0x1F5E8, 0x1F9BA, 0x1F7E9, 0x1F7EB, 0x1F4A5, 0x1F48B,
               0x1F466, 0x1F467, 0x1F9D2, *SKIN_TONES, *TAGS}

# Unicode blocks that hold emoji: a coarse, dependency-free "group" for labels.csv.
BLOCKS = (
    (0x0000, 0x007F, "Basic Latin"), (0x0080, 0x00FF, "Latin-1 Supplement"),
    (0x2000, 0x206F, "General Punctuation"), (0x2100, 0x214F, "Letterlike Symbols"),
    (0x2190, 0x21FF, "Arrows"), (0x2300, 0x23FF, "Miscellaneous Technical"),
    (0x2460, 0x24FF, "Enclosed Alphanumerics"), (0x25A0, 0x25FF, "Geometric Shapes"),
    (0x2600, 0x26FF, "Miscellaneous Symbols"), (0x2700, 0x27BF, "Dingbats"),
    (0x2900, 0x297F, "Supplemental Arrows-B"), (0x2B00, 0x2BFF, "Miscellaneous Symbols and Arrows"),
    (0x3000, 0x303F, "CJK Symbols and Punctuation"), (0x3200, 0x32FF, "Enclosed CJK Letters and Months"),
    (0x1F000, 0x1F02F, "Mahjong Tiles"), (0x1F0A0, 0x1F0FF, "Playing Cards"),
    (0x1F100, 0x1F1FF, "Enclosed Alphanumeric Supplement"), (0x1F200, 0x1F2FF, "Enclosed Ideographic Supplement"),
    (0x1F300, 0x1F5FF, "Miscellaneous Symbols and Pictographs"), (0x1F600, 0x1F64F, "Emoticons"),
    (0x1F680, 0x1F6FF, "Transport and Map Symbols"), (0x1F780, 0x1F7FF, "Geometric Shapes Extended"),
    (0x1F900, 0x1F9FF, "Supplemental Symbols and Pictographs"),
    (0x1FA70, 0x1FAFF, "Symbols and Pictographs Extended-A"),
)


@dataclass
class EmojiGlyph:
    glyph: str                  # the font's glyph name
    codepoints: tuple[int, ...]  # canonical sequence, without U+FE0F
    png: bytes                  # the font's bitmap, a PNG file
    aliases: tuple[tuple[int, ...], ...] = ()  # other sequences drawing the same glyph (e.g. flag AU/HM)


def find_font(path: str | Path | None = None) -> Path:
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise E4EError(f"{p}: no such font file (--font)")
        return p
    for candidate in FONT_PATHS:
        if Path(candidate).is_file():
            return Path(candidate)
    raise E4EError(f"{FONT_NAME} not found in {FONT_PATHS[0]}: install it with "
                   "`apt-get install fonts-noto-color-emoji` or pass --font PATH")


def hex_seq(seq, sep=" ") -> str:
    return sep.join(f"{c:04X}" for c in seq)


def _is_private(cp: int) -> bool:
    return 0xE000 <= cp <= 0xF8FF or cp >= 0xF0000


def _ligatures(gsub):
    """(component glyph names, ligature glyph name) for every ligature in the GSUB table."""
    if gsub is None:
        return
    for lookup in gsub.table.LookupList.Lookup:
        for st in lookup.SubTable:
            if lookup.LookupType == 7:  # extension: the real subtable is wrapped
                st = st.ExtSubTable
            for first, ligs in getattr(st, "ligatures", {}).items():
                for lig in ligs:
                    yield [first, *lig.Component], lig.LigGlyph


def _badness(seq) -> int:
    """How far `seq` is from a well-formed emoji sequence (0 = plausible). Used to pick the canonical
    order among the font's reversed copies of ZWJ sequences."""
    bad = int(seq[0] in NEVER_FIRST)
    bad += sum(1 for a, b in zip(seq, seq[1:]) if a == ZWJ and b in SKIN_TONES)
    hearts = [c for c in seq if c in (0x2764, 0x1F48B)]
    bad += hearts == [0x1F48B, 0x2764]  # kiss: heart, then kiss mark
    return bad


def canonical(seqs) -> tuple[int, ...]:
    """Pick one codepoint sequence for a glyph from all that the font maps to it."""
    seqs = sorted(set(seqs))
    if any(c in REGIONAL for c in seqs[0]):
        return seqs[0]  # flags shared by regions (AU/HM, NO/SJ/BV): alphabetical first
    best = min(_badness(s) for s in seqs)
    seqs = [s for s in seqs if _badness(s) == best]
    adult_first = [s for s in seqs if s[0] in ADULTS]
    # Ties left: couples, where Unicode puts woman (1F469) before man (1F468) -> max.
    return max(adult_first or seqs)


def group_key(seq) -> tuple[int, ...]:
    """Sequence with skin tones, gender and direction removed and man/woman/person unified: every
    variant of one emoji shares its key."""
    out = []
    for i, c in enumerate(seq):
        if c in SKIN_TONES or c == VS16:
            continue
        if c in VARIANT_SIGNS and i > 0 and seq[i - 1] == ZWJ:
            out.pop()  # drop the ZWJ before the sign too
            continue
        out.append(PERSON if c in ADULTS else c)
    while out and out[-1] == ZWJ:
        out.pop()
    return tuple(out) or tuple(seq)


def split_of(seq) -> str:
    """'train' or 'test', from a hash of the group key: fixed, independent of every other glyph."""
    digest = hashlib.sha256(f"{SPLIT_SALT}:{hex_seq(group_key(seq), '-')}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2 ** 64 < TEST_FRACTION else "train"


def read_glyphs(font_path: str | Path) -> list[EmojiGlyph]:
    """All emoji bitmaps in the font, in glyph order, with canonical codepoint sequences."""
    try:
        from fontTools.ttLib import TTFont, TTLibError
    except ImportError:
        raise E4EError("reading the emoji font needs fontTools: pip install 'fonttools>=4.40' "
                       "(or install e4e with the [data] extra)") from None
    try:
        font = TTFont(str(font_path), lazy=True)
        tables = set(font.keys())
    except (TTLibError, OSError, AssertionError) as e:
        raise E4EError(f"{font_path}: not a readable font file ({' '.join(str(e).split())})") from None
    if "CBDT" not in tables or "CBLC" not in tables:
        raise E4EError(f"{font_path}: no colour bitmaps (CBDT/CBLC tables); need the bitmap build of "
                       f"{FONT_NAME} as shipped by fonts-noto-color-emoji")
    cbdt = font["CBDT"]
    ppems = [s.bitmapSizeTable.ppemY for s in font["CBLC"].strikes]
    strike = cbdt.strikeData[max(range(len(ppems)), key=ppems.__getitem__)]

    seqs: dict[str, list[tuple[int, ...]]] = {}
    glyph_cp: dict[str, int] = {}
    for cp, name in sorted(font.getBestCmap().items()):
        if not _is_private(cp):
            glyph_cp.setdefault(name, cp)
            seqs.setdefault(name, []).append((cp,))
    gsub = font["GSUB"] if "GSUB" in tables else None
    for components, lig in _ligatures(gsub):
        if all(c in glyph_cp for c in components):
            seqs.setdefault(lig, []).append(tuple(glyph_cp[c] for c in components))

    glyphs = []
    for name in font.getGlyphOrder():
        if name not in strike or name not in seqs:
            continue
        if name in glyph_cp:  # a real codepoint wins over ligatures that also produce this glyph
            chosen, others = (glyph_cp[name],), []
        else:
            chosen = canonical(seqs[name])
            others = [s for s in seqs[name] if s != chosen]
        png = getattr(strike[name], "imageData", None)  # formats 17/18/19 all carry a PNG here
        if png:
            aliases = tuple(s for s in sorted(set(others)) if any(c in REGIONAL for c in s))
            glyphs.append(EmojiGlyph(name, chosen, png, aliases))
    return glyphs


def select(glyphs: list[EmojiGlyph]) -> tuple[list[EmojiGlyph], dict]:
    """Drop components and duplicate bitmaps -> (kept glyphs, counts of what was dropped)."""
    kept, seen = [], set()
    dropped = {"components": 0, "duplicates": 0}
    for g in glyphs:
        if len(g.codepoints) == 1 and g.codepoints[0] in COMPONENTS:
            dropped["components"] += 1
            continue
        digest = hashlib.sha256(g.png).digest()
        if digest in seen:
            dropped["duplicates"] += 1
            continue
        seen.add(digest)
        kept.append(g)
    return kept, dropped


# --- labels -----------------------------------------------------------------------------------------

def _name(cp: int) -> str:
    return unicodedata.name(chr(cp), f"U+{cp:04X}")


def kind_of(seq) -> str:
    if any(c in TAGS for c in seq):
        return "tag-flag"
    if any(c in REGIONAL for c in seq):
        return "flag"
    if KEYCAP in seq:
        return "keycap"
    if ZWJ in seq:
        return "zwj"
    if any(c in SKIN_TONES for c in seq):
        return "modifier"
    return "single"


def name_of(seq, aliases=()) -> str:
    """Unicode name of a single codepoint; for sequences the base names joined with ' + ', plus the
    skin tones. Flags are named by their region codes."""
    kind = kind_of(seq)
    if kind == "flag":
        regions = ["".join(chr(ord("A") + c - REGIONAL.start) for c in s) for s in (seq, *aliases)]
        return "FLAG " + "/".join(regions)
    tag = "".join(chr(c - TAGS.start + 0x20) for c in seq if c in TAGS and c != 0xE007F).upper()
    if kind == "tag-flag" and tag:
        return f"FLAG {tag[:2]}-{tag[2:]}"
    if kind == "keycap":
        return "KEYCAP " + _name(seq[0])
    parts = [_name(c) for c in seq if c not in SKIN_TONES and c not in (ZWJ, VS16)]
    tones = [SKIN_TONES[c] for c in seq if c in SKIN_TONES]
    name = " + ".join(parts)
    return f"{name} ({', '.join(tones)} skin tone)" if tones else name


def block_of(cp: int) -> str:
    for lo, hi, name in BLOCKS:
        if lo <= cp <= hi:
            return name
    return "Other"


def file_stem(seq) -> str:
    return "u" + "_".join(f"{c:x}" for c in seq)


def label_row(g: EmojiGlyph, file: str, split: str) -> dict:
    seq = g.codepoints
    return {
        "file": file, "split": split, "codepoints": hex_seq(seq), "name": name_of(seq, g.aliases),
        "category": unicodedata.category(chr(seq[0])), "group": block_of(seq[0]), "kind": kind_of(seq),
        "skin_tone": ";".join(SKIN_TONES[c] for c in seq if c in SKIN_TONES),
        "group_key": hex_seq(group_key(seq)), "glyph": g.glyph,
    }


# --- rendering and the whole build ------------------------------------------------------------------

def render(png: bytes, size: int, background=(255, 255, 255)) -> Image.Image:
    """Bitmap -> composited on `background`, padded to a centred square, resized to size x size."""
    with Image.open(io.BytesIO(png)) as im:
        im.load()
        rgb = to_rgb(im, background)
    w, h = rgb.size
    side = max(w, h)
    square = Image.new("RGB", (side, side), background)
    square.paste(rgb, ((side - w) // 2, (side - h) // 2))
    return square if side == size else square.resize((size, size), Image.Resampling.LANCZOS)


def build(out_dir: str | Path, font: str | Path | None = None, size: int = 64, background="white",
          limit: int | None = None, overwrite: bool = False, progress: bool = True) -> dict:
    """Write the dataset; returns the statistics also stored in info.json."""
    if size not in SIZES:
        raise E4EError(f"--size must be one of {', '.join(map(str, SIZES))}, got {size}")
    if limit is not None and limit < 1:
        raise E4EError(f"--limit must be positive, got {limit}")
    bg = parse_color(background)
    font_path = find_font(font)
    out = Path(out_dir)
    if (out / "labels.csv").exists():
        if not overwrite:
            raise E4EError(f"{out} already holds a dataset (labels.csv); pass --overwrite to rebuild it")
        for split in ("train", "test"):
            for old in (out / split).glob("*.png"):
                old.unlink()
    start = time.perf_counter()
    glyphs, dropped = select(read_glyphs(font_path))
    if not glyphs:
        raise E4EError(f"{font_path}: no emoji bitmaps found")
    if limit is not None:
        glyphs = glyphs[:limit]
    for split in ("train", "test"):
        (out / split).mkdir(parents=True, exist_ok=True)

    rows, failed = [], 0
    for g in tqdm(glyphs, desc="emoji", unit="img", disable=not progress):
        split = split_of(g.codepoints)
        rel = f"{split}/{file_stem(g.codepoints)}.png"
        try:
            render(g.png, size, bg).save(out / rel)
        except (OSError, SyntaxError, ValueError, E4EError):
            failed += 1  # a broken bitmap in the font: skip it, report the count
            continue
        rows.append(label_row(g, rel, split))

    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=LABEL_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "test")}
    stats = {
        "font": str(font_path), "font_revision": round(float(_font_revision(font_path)), 3),
        "size": size, "background": "#%02x%02x%02x" % bg, "limit": limit,
        "split": {"salt": SPLIT_SALT, "test_fraction": TEST_FRACTION, **counts},
        "groups": {s: len({r["group_key"] for r in rows if r["split"] == s}) for s in ("train", "test")},
        "kinds": _count(r["kind"] for r in rows), "blocks": _count(r["group"] for r in rows),
        "skipped": {**dropped, "unreadable": failed},
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out / "info.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def _count(values) -> dict:
    counts = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _font_revision(font_path) -> float:
    from fontTools.ttLib import TTFont
    try:
        return TTFont(str(font_path), lazy=True)["head"].fontRevision
    except Exception:  # informational only
        return 0.0
