"""A face-like domain with ground truth: cartoon heads from DiceBear's avataaars style.

In: a base seed, a count and a size (64/128/256). Out, under OUT_DIR:

    train/NNNNNN.png, test/NNNNNN.png   RGB avatars on one flat background (BACKGROUND)
    labels.csv                          one row per image: file, split, seed, the clean labels
                                        (LABEL_COLUMNS), then every resolved dicebear option (opt_*)
    pairs/<attribute>/NNNNNN.png        for each test avatar, the same seed with one attribute switched
    pairs.csv                           file, source, attribute, target, then the clean labels of the pair
    info.json                           settings, package versions, counts and label rates

Why: an inversion or editing method can be checked against a truth here. DiceBear draws every part from
`Mulberry32(FNV1a(seed + ":" + key))`, one stream per option key, so forcing one option (the mouth, the
glasses...) leaves every other choice of that seed unchanged: the forced render is the exact "after"
image of an edit. `render` asserts that the resolved options hold what was asked, because dicebear
fails silently (a misspelt variant removes the part, unknown probability names are ignored).

Image i of a build uses the dicebear seed f"{seed}-{i}" and goes to `test` when i % TEST_EVERY == 0
(5%: 3,000 of 60,000), so an index keeps its split whatever --count: a bigger build never trains on the
test images of a smaller one. Builds run in shards over worker processes; a finished shard is recorded
atomically in OUT_DIR/.parts/, so an interrupted build resumes and a finished one is a no-op that
rewrites the same bytes.
"""
import csv
import io
import json
import os
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from tqdm import tqdm

from e4e.errors import E4EError

SIZES = (64, 128, 256)
EXTRA = "avatars"
PACKAGES = ("dicebear-core", "dicebear-styles", "resvg-py")
FORMAT = 1  # bump when the images or labels of the same settings change

# A neutral mid grey: it maps to ~0 in [-1, 1], matches none of the art's palettes (dicebear would
# otherwise drop an equal colour through `notEqualTo: background`) and leaves both the darkest parts
# (black hair #2c1b18, dark skin #614335) and the lightest (white hats, platinum hair) visible.
BACKGROUND = "#808080"
# The 280x280 canvas cropped to the head: eyes at 45% of the height as in FFHQ's alignment; the
# widest hair is clipped at the sides, as FFHQ clips hair. (x, y, width, height) in canvas units.
FRAME = (20, 8, 240, 240)

EDIT_ATTRIBUTES = ("smile", "glasses", "facial_hair", "hat", "hair_colour")
BINARY_ATTRIBUTES = ("smile", "glasses", "facial_hair", "hat")

# --- the curated option set ------------------------------------------------------------------------
# Mouths and eyes: the grotesque variants are left out (vomit, eating, tongue, screamOpen, grimace;
# cry, eyeRoll, hearts, xDizzy, winkWacky). "default" is a closed smile in this art.
SMILE_MOUTHS = ("default", "smile", "twinkle")
OTHER_MOUTHS = ("concerned", "disbelief", "sad", "serious")
EYES = ("closed", "default", "happy", "side", "squint", "surprised", "wink")
EYEBROWS = ("angry", "angryNatural", "default", "defaultNatural", "flatNatural", "frownNatural",
            "raisedExcited", "raisedExcitedNatural", "sadConcerned", "sadConcernedNatural",
            "unibrowNatural", "upDown", "upDownNatural")
GLASSES = ("kurt", "prescription01", "prescription02", "round", "sunglasses", "wayfarers")  # no eyepatch
FACIAL_HAIR = ("beardLight", "beardMajestic", "beardMedium", "moustacheFancy", "moustacheMagnum")
HAT_TOPS = ("hat", "hijab", "turban", "winterHat02", "winterHat03", "winterHat04", "winterHat1")
HAIR_TOPS = ("bigHair", "bob", "bun", "curly", "curvy", "dreads", "dreads01", "dreads02", "frida",
             "frizzle", "fro", "froBand", "longButNotTooLong", "miaWallace", "shaggy", "shaggyMullet",
             "shavedSides", "shortCurly", "shortFlat", "shortRound", "shortWaved", "sides", "straight01",
             "straight02", "straightAndStrand", "theCaesar", "theCaesarAndSidePart")
# The art's palettes, named after the original avataaars colour names.
HAIR_COLOURS = {"auburn": "#a55728", "black": "#2c1b18", "blonde": "#b58143", "golden": "#d6b370",
                "brown": "#724133", "dark_brown": "#4a312c", "pink": "#f59797", "platinum": "#ecdcbf",
                "red": "#c93305", "grey": "#e8e1e1"}
SKIN_COLOURS = {"black": "#614335", "brown": "#d08b5b", "dark_brown": "#ae5d29", "light": "#edb98a",
                "pale": "#ffdbb4", "tanned": "#fd9841", "yellow": "#f8d25c"}

LABEL_COLUMNS = ("smile", "glasses", "facial_hair", "hat", "hair_colour", "skin_colour", "mouth", "eyes",
                 "eyebrows", "top", "glasses_style", "facial_hair_style", "facial_hair_colour", "clothes")
TEST_EVERY = 20


@dataclass(frozen=True)
class AvatarConfig:
    """The distribution: percent of avatars with glasses / facial hair (the art's default is 10 for
    both; 25 and 20 give both classes enough examples). Hats are 7 of the 34 tops (21%)."""
    glasses_probability: int = 25
    facial_hair_probability: int = 20
    background: str = BACKGROUND
    frame: tuple = FRAME

    def __post_init__(self):
        for name in ("glasses_probability", "facial_hair_probability"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 0 <= v <= 100:
                raise E4EError(f"--{name.replace('_', '-')} must be an integer percent 0-100, got {v}")

    def options(self) -> dict:
        """The dicebear options every avatar gets (the seed and any overrides are added to these)."""
        return {
            "mouthVariant": [*SMILE_MOUTHS, *OTHER_MOUTHS], "eyesVariant": list(EYES),
            "eyebrowsVariant": list(EYEBROWS), "topVariant": [*HAIR_TOPS, *HAT_TOPS],
            "accessoriesVariant": list(GLASSES), "accessoriesProbability": self.glasses_probability,
            "facialHairVariant": list(FACIAL_HAIR), "facialHairProbability": self.facial_hair_probability,
        }


DEFAULT = AvatarConfig()


# --- dicebear and resvg ------------------------------------------------------------------------------

def _missing(name: str) -> E4EError:
    return E4EError(f"e4e data avatars needs {name}: pip install 'e4e[{EXTRA}]' "
                    f"({', '.join(PACKAGES)})")


_STYLE = None


def style():
    """The avataaars Style, built once per process (0.4 s), with the curated names checked against it."""
    global _STYLE
    if _STYLE is None:
        try:
            from dicebear import Style
        except ImportError:
            raise _missing("dicebear-core") from None
        try:
            text = resources.files("dicebear_styles").joinpath("avataaars.json").read_text(encoding="utf-8")
        except (ImportError, FileNotFoundError):
            raise _missing("dicebear-styles") from None
        s = Style(json.loads(text))
        _check_curated(s)
        _STYLE = s
    return _STYLE


def _check_curated(s) -> None:
    """A curated name the style lacks would silently drop the part: refuse it instead."""
    comps = s.components()
    wanted = {"mouth": SMILE_MOUTHS + OTHER_MOUTHS, "eyes": EYES, "eyebrows": EYEBROWS,
              "accessories": GLASSES, "facialHair": FACIAL_HAIR, "top": HAT_TOPS + HAIR_TOPS}
    for comp, names in wanted.items():
        missing = sorted(set(names) - set(comps[comp].variants()))
        if missing:
            raise E4EError(f"the installed dicebear-styles avataaars has no {comp} variants {missing}")
    colours = s.colors()
    for name, palette in (("hair", HAIR_COLOURS), ("skin", SKIN_COLOURS)):
        have = set(colours[name].values())
        if set(palette.values()) != have:
            raise E4EError(f"the installed dicebear-styles avataaars {name} palette changed: {sorted(have)}")


def check_options(options: dict) -> None:
    """Every *Variant / *Probability / *Color option must name a component or colour of the style:
    dicebear accepts unknown names that match its patterns and ignores them (`glassesProbability`)."""
    s = style()
    comps, colours = s.components(), s.colors()
    for key in options:
        for suffix, known in (("Variant", comps), ("Probability", comps), ("Color", colours)):
            if key.endswith(suffix) and key[:-len(suffix)] not in known:
                raise E4EError(f"dicebear option {key!r} names no {suffix.lower()} target of avataaars "
                               "(it would be silently ignored)")


def rasterise(svg: str, size: int, config: AvatarConfig = DEFAULT):
    """SVG -> size x size RGB PIL image: the FRAME crop of the canvas on the flat background."""
    try:
        import resvg_py
    except ImportError:
        raise _missing("resvg-py") from None
    from PIL import Image
    x, y, w, h = config.frame
    svg = svg.replace('viewBox="0 0 280 280"', f'viewBox="{x} {y} {w} {h}"', 1)
    png = resvg_py.svg_to_bytes(svg_string=svg, width=size, height=size, background=config.background)
    with Image.open(io.BytesIO(bytes(png))) as im:
        return im.convert("RGB")


def resolve(seed: str, overrides: dict | None = None, config: AvatarConfig = DEFAULT,
            reference: bool = False) -> tuple[str, dict]:
    """(SVG, resolved options) for one seed; overrides replace curated options (e.g. a forced mouth).
    reference=True draws through dicebear's public `Avatar` (the reference path; same result)."""
    from dicebear import Avatar, ValidationError
    options = {**config.options(), **(overrides or {})}
    check_options(options)
    try:
        if reference:
            avatar = Avatar(style(), {"seed": str(seed), **options})
            svg, resolved = avatar.to_string(), avatar.to_json()["options"]
        else:
            svg, resolved = _draw(str(seed), options)
    except ValidationError as e:
        raise E4EError(f"dicebear refused the options {sorted(options)}: {' '.join(str(e).split())}") from None
    _check_resolved(options, resolved)
    return svg, resolved


_VALIDATED: set[str] = set()


def _draw(seed: str, options: dict) -> tuple[str, dict]:
    """The fast path of `Avatar(style(), {"seed": seed, **options})`: dicebear validates the options
    against its JSON schema on every avatar (2/3 of its CPU time with the curated lists); here each
    distinct option set is validated once, then the resolver and renderer run as `Avatar` runs them.
    Relies on dicebear-core 10.7's internals (pinned); tests compare it with the public path."""
    from dicebear.options import Options
    from dicebear.renderer import Renderer
    from dicebear.resolver import Resolver
    key = json.dumps(options, sort_keys=True)
    if key not in _VALIDATED:
        Options({"seed": seed, **options})  # raises OptionsValidationError like Avatar would
        _VALIDATED.add(key)
    opts = _validated({"seed": seed, **options})
    resolver = Resolver(style(), opts)
    svg = Renderer(style(), resolver).render()
    return svg, resolver.resolved()


_VALIDATED_OPTIONS = None


def _validated(data: dict):
    """dicebear Options over data that already passed its validator (see _draw)."""
    global _VALIDATED_OPTIONS
    if _VALIDATED_OPTIONS is None:
        from dicebear.options import Options

        class Validated(Options):
            def __init__(self, data: dict):  # Options.__init__ minus the validation
                self._data = data
                self._tags = None

        _VALIDATED_OPTIONS = Validated
    return _VALIDATED_OPTIONS(data)


def _check_resolved(asked: dict, resolved: dict) -> None:
    """The resolved options must hold what was asked: every part present and drawn from its list."""
    for comp in ("mouth", "eyes", "eyebrows", "nose", "top", "clothes"):
        if not resolved.get(f"{comp}Variant"):
            raise E4EError(f"dicebear drew no {comp} (asked {asked.get(comp + 'Variant')!r})")
    for comp in ("mouth", "eyes", "eyebrows", "top", "accessories", "facialHair"):
        want, got = asked.get(f"{comp}Variant"), resolved.get(f"{comp}Variant")
        if want is not None and got is not None and got not in ([want] if isinstance(want, str) else want):
            raise E4EError(f"dicebear drew {comp} {got!r}, not one of {want!r}")
    for comp in ("accessories", "facialHair"):
        p = asked.get(f"{comp}Probability")
        if p in (0, 100) and bool(resolved.get(f"{comp}Variant")) != (p == 100):
            raise E4EError(f"dicebear ignored {comp}Probability={p}")
    if "hairColor" in asked and resolved.get("topVariant") in HAIR_TOPS:
        if resolved.get("hairColor", [None])[0] not in asked["hairColor"]:
            raise E4EError(f"dicebear ignored hairColor={asked['hairColor']!r}")


def _colour_name(palette: dict, value) -> str:
    if not value:
        return "none"
    for name, hex_ in palette.items():
        if hex_ == value[0].lower():
            return name
    raise E4EError(f"colour {value[0]} is not in the avataaars palette")


def clean_labels(resolved: dict) -> dict:
    """Resolved dicebear options -> the clean columns (LABEL_COLUMNS): 0/1 ints and names."""
    top = resolved["topVariant"]
    hat = int(top in HAT_TOPS)
    return {
        "smile": int(resolved["mouthVariant"] in SMILE_MOUTHS),
        "glasses": int(bool(resolved.get("accessoriesVariant"))),
        "facial_hair": int(bool(resolved.get("facialHairVariant"))),
        "hat": hat,
        "hair_colour": "none" if hat else _colour_name(HAIR_COLOURS, resolved.get("hairColor")),
        "skin_colour": _colour_name(SKIN_COLOURS, resolved.get("skinColor")),
        "mouth": resolved["mouthVariant"], "eyes": resolved["eyesVariant"],
        "eyebrows": resolved["eyebrowsVariant"], "top": top,
        "glasses_style": resolved.get("accessoriesVariant") or "none",
        "facial_hair_style": resolved.get("facialHairVariant") or "none",
        "facial_hair_colour": _colour_name(HAIR_COLOURS, resolved.get("facialHairColor")),
        "clothes": resolved["clothesVariant"],
    }


def render(seed, size: int = 128, overrides: dict | None = None, config: AvatarConfig = DEFAULT):
    """One avatar -> (RGB PIL image, labels): the clean LABEL_COLUMNS plus "options", the resolved
    dicebear options (`Avatar.to_json()["options"]`)."""
    if size not in SIZES:
        raise E4EError(f"--size must be one of {', '.join(map(str, SIZES))}, got {size}")
    svg, resolved = resolve(seed, overrides, config)
    return rasterise(svg, size, config), {**clean_labels(resolved), "options": resolved}


# --- counterfactuals ---------------------------------------------------------------------------------

def counterfactual(labels: dict, attribute: str) -> tuple[dict, object] | None:
    """(dicebear overrides, target value) that switch `attribute` of an avatar with these labels, or
    None where the edit does not apply (hair colour under a hat). Binary attributes flip; hair colour
    takes the colour that the seed draws from the other nine (dicebear's own `hairColor` stream)."""
    if attribute == "smile":
        target = 1 - labels["smile"]
        return {"mouthVariant": list(SMILE_MOUTHS if target else OTHER_MOUTHS)}, target
    if attribute == "glasses":
        target = 1 - labels["glasses"]
        return {"accessoriesProbability": 100 * target}, target
    if attribute == "facial_hair":
        target = 1 - labels["facial_hair"]
        return {"facialHairProbability": 100 * target}, target
    if attribute == "hat":
        target = 1 - labels["hat"]
        return {"topVariant": list(HAT_TOPS if target else HAIR_TOPS)}, target
    if attribute == "hair_colour":
        if labels["hat"]:
            return None
        others = [h for n, h in HAIR_COLOURS.items() if n != labels["hair_colour"]]
        return {"hairColor": others}, None  # the target is the colour drawn: read it from the render
    raise E4EError(f"unknown attribute {attribute!r}; one of {', '.join(EDIT_ATTRIBUTES)}")


def render_pair(seed, labels: dict, attribute: str, size: int = 128, config: AvatarConfig = DEFAULT):
    """The counterfactual of (seed, labels) for `attribute` -> (image, its labels, target), or None."""
    cf = counterfactual(labels, attribute)
    if cf is None:
        return None
    overrides, target = cf
    image, new = render(seed, size, overrides, config)
    if target is None:
        target = new[attribute]
    if new[attribute] != target or new[attribute] == labels[attribute]:
        raise E4EError(f"seed {seed}: forcing {attribute}={target!r} gave {new[attribute]!r}")
    return image, new, target


# --- labels.csv / pairs.csv --------------------------------------------------------------------------

def option_keys() -> tuple[str, ...]:
    """Every option key dicebear can resolve for avataaars (the opt_* columns), in a fixed order."""
    s = style()
    keys = ["borderRadius", "flip", "idRandomization", "rotate", "scale", "translateX", "translateY"]
    for comp in s.components():
        keys += [f"{comp}{k}" for k in ("Variant", "Rotate", "TranslateX", "TranslateY", "Scale")]
    for colour in ("background", *s.colors()):
        keys += [f"{colour}Color", f"{colour}ColorFill"]
    return tuple(sorted(set(keys)))


def encode_option(value) -> str:
    """A resolved option as a CSV cell: strings as they are, everything else JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def decode_option(cell: str):
    if cell[:1] in "[{-0123456789" or cell in ("true", "false", "null"):
        return json.loads(cell)
    return cell


def decode_options(row: dict) -> dict:
    """The opt_* cells of a labels.csv / pairs.csv row -> the resolved options dict (empty cells:
    options dicebear did not resolve, e.g. hairColor under a hat)."""
    return {k[4:]: decode_option(v) for k, v in row.items() if k.startswith("opt_") and v != ""}


def _row(labels: dict, keys) -> dict:
    options = labels["options"]
    unknown = set(options) - set(keys)
    if unknown:
        raise E4EError(f"dicebear resolved options this version does not know: {sorted(unknown)}")
    row = {c: labels[c] for c in LABEL_COLUMNS}
    row.update({f"opt_{k}": encode_option(options[k]) if k in options else "" for k in keys})
    return row


def _typed(row: dict) -> dict:
    for c in BINARY_ATTRIBUTES:
        row[c] = int(row[c])
    return row


def read_table(path: str | Path, need: tuple[str, ...] = ()) -> list[dict]:
    """A labels.csv or pairs.csv as string rows (the one reader of this format: the typed readers below, the
    editing benchmark and the bench scripts use it); a one-line error for a missing file or column."""
    path = Path(path)
    if not path.is_file():
        what = "no pairs file" if path.name == "pairs.csv" else "not found"
        raise E4EError(f"{path}: {what} (build the folder with `e4e data avatars {path.parent}"
                       + (" --pairs`)" if path.name == "pairs.csv" else "`)"))
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in need if c not in (reader.fieldnames or [])]
        if missing:
            raise E4EError(f"{path}: missing column(s) {', '.join(missing)}")
        return list(reader)


def read_labels(root: str | Path) -> list[dict]:
    """labels.csv rows, binary columns as ints (decode_options(row) gives the dicebear options)."""
    return [_typed(r) for r in read_table(Path(root) / "labels.csv", ("file", "split", *BINARY_ATTRIBUTES))]


def read_pairs(root: str | Path) -> list[dict]:
    """pairs.csv rows: file, source, attribute, target (0/1 int or a colour name), the pair's labels."""
    rows = [_typed(r) for r in read_table(Path(root) / "pairs.csv",
                                          ("file", "source", "attribute", "target", *BINARY_ATTRIBUTES))]
    for r in rows:
        if r["attribute"] in BINARY_ATTRIBUTES:
            r["target"] = int(r["target"])
    return rows


# --- the build ---------------------------------------------------------------------------------------

def seed_of(base: int, index: int) -> str:
    return f"{base}-{index}"


def split_of(index: int) -> str:
    return "test" if index % TEST_EVERY == 0 else "train"


@dataclass(frozen=True)
class _Job:
    shard: int
    start: int
    stop: int
    out: str
    size: int
    base: int
    width: int
    pairs: bool
    config: AvatarConfig = field(default_factory=AvatarConfig)


def _save(image, path: Path) -> None:
    image.save(path, "PNG", compress_level=3)


def _run_shard(job: _Job) -> tuple[int, int, str, str | None]:
    """Render one shard of indices (and the pairs of its test images) -> (shard, images, labels.csv
    rows, pairs.csv rows), the rows as CSV text without a header."""
    out, keys = Path(job.out), option_keys()
    labels, pairs = [], [] if job.pairs else None
    for i in range(job.start, job.stop):
        seed, split = seed_of(job.base, i), split_of(i)
        stem = f"{i:0{job.width}d}"
        rel = f"{split}/{stem}.png"
        image, lab = render(seed, job.size, None, job.config)
        _save(image, out / rel)
        labels.append({"file": rel, "split": split, "seed": seed, **_row(lab, keys)})
        if split != "test" or not job.pairs:
            continue
        for attribute in EDIT_ATTRIBUTES:
            pair = render_pair(seed, lab, attribute, job.size, job.config)
            if pair is None:
                continue
            image, new, target = pair
            prel = f"pairs/{attribute}/{stem}.png"
            _save(image, out / prel)
            pairs.append({"file": prel, "source": rel, "attribute": attribute, "target": target,
                          **_row(new, keys)})
    return (job.shard, len(labels), _csv_text(labels, label_columns(), header=False),
            None if pairs is None else _csv_text(pairs, pair_columns(), header=False))


def label_columns() -> list[str]:
    return ["file", "split", "seed", *LABEL_COLUMNS, *(f"opt_{k}" for k in option_keys())]


def pair_columns() -> list[str]:
    return ["file", "source", "attribute", "target", *LABEL_COLUMNS, *(f"opt_{k}" for k in option_keys())]


def _write_atomic(path: Path, text: str) -> None:
    from e4e.outputs import atomic_write
    atomic_write(path, lambda f: f.write(text), mode="w")


def _csv_text(rows: list[dict], columns, header: bool = True) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for p in PACKAGES:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            raise _missing(p) from None
    return out


def _rates(rows: list[dict]) -> dict:
    n = max(len(rows), 1)
    rates = {c: round(sum(int(r[c]) for r in rows) / n, 4) for c in BINARY_ATTRIBUTES}
    for c in ("hair_colour", "skin_colour"):
        counts = {}
        for r in rows:
            counts[r[c]] = counts.get(r[c], 0) + 1
        rates[c] = {k: round(v / n, 4) for k, v in sorted(counts.items())}
    return rates


def build_avatars(out: str | Path, size: int = 128, count: int = 60000, seed: int = 0,
                  workers: int | None = None, pairs: bool = True, config: AvatarConfig = DEFAULT,
                  overwrite: bool = False, progress: bool = True, shard_size: int = 100) -> dict:
    """Build (or resume, or confirm) the dataset in `out`; returns the statistics also in info.json
    plus "seconds" and "rendered" (images drawn by this call)."""
    if size not in SIZES:
        raise E4EError(f"--size must be one of {', '.join(map(str, SIZES))}, got {size}")
    if not isinstance(count, int) or count < 1:
        raise E4EError(f"--count must be a positive integer, got {count}")
    if workers is not None and workers < 1:
        raise E4EError(f"--workers must be positive, got {workers}")
    if not isinstance(seed, int) or seed < 0:
        raise E4EError(f"--seed must be a non-negative integer, got {seed}")
    start_time = time.perf_counter()
    style()  # the missing-extra error before anything is written
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise E4EError(f"{out} is a file, not a folder")
    parts = out / ".parts"
    settings = {"format": FORMAT, "size": size, "count": count, "seed": seed, **asdict(config),
                "packages": versions()}
    settings["frame"] = list(settings["frame"])
    if parts.is_dir() and (parts / "settings.json").is_file():
        old = json.loads((parts / "settings.json").read_text())
        if old != settings:
            if not overwrite:
                diff = ", ".join(f"{k} {old.get(k)!r} -> {v!r}" for k, v in settings.items() if old.get(k) != v)
                raise E4EError(f"{out} holds a build with other settings ({diff}); pass --overwrite "
                               "to rebuild it, or use another folder")
            _clear(out)
    elif (out / "labels.csv").exists():
        if not overwrite:
            raise E4EError(f"{out} already holds a dataset (labels.csv) not made by this command; "
                           "pass --overwrite to replace it")
        _clear(out)
    for d in ("train", "test", ".parts", *(f"pairs/{a}" for a in EDIT_ATTRIBUTES if pairs)):
        (out / d).mkdir(parents=True, exist_ok=True)
    _write_atomic(parts / "settings.json", json.dumps(settings, indent=2) + "\n")

    width = max(6, len(str(count - 1)))
    jobs = [_Job(k, a, min(a + shard_size, count), str(out), size, seed, width, pairs, config)
            for k, a in enumerate(range(0, count, shard_size))]

    def part(job, kind):  # a shard's rows of labels.csv / pairs.csv, CSV without a header
        return parts / f"{job.shard:05d}.{kind}.csv"

    def done(job):
        return part(job, "labels").is_file() and (not pairs or part(job, "pairs").is_file())

    todo = [j for j in jobs if not done(j)]
    rendered = sum(j.stop - j.start for j in todo)
    workers = min(workers or os.cpu_count() or 1, max(len(todo), 1))
    bar = tqdm(total=count, initial=count - rendered, desc="avatars", unit="img", disable=not progress,
               smoothing=0.05)

    def record(result):
        shard, n, labels_text, pairs_text = result
        if pairs_text is not None:  # pairs first: the labels part marks the shard done
            _write_atomic(part(jobs[shard], "pairs"), pairs_text)
        _write_atomic(part(jobs[shard], "labels"), labels_text)
        bar.update(n)

    try:
        if workers == 1 or len(todo) <= 1:
            for job in todo:
                record(_run_shard(job))
        else:
            import multiprocessing as mp
            # spawn: the parent may hold torch's threads; the workers import only PIL, dicebear and resvg
            with mp.get_context("spawn").Pool(workers, initializer=style) as pool:
                for result in pool.imap_unordered(_run_shard, todo):
                    record(result)
    except OSError as e:  # disk full, permissions: finished shards are kept, a rerun resumes
        raise E4EError(f"{out}: writing the dataset failed ({' '.join(str(e).split())}); rerun to resume") from None
    finally:
        bar.close()

    header = _csv_text([], label_columns())
    _write_atomic(out / "labels.csv", header + "".join(part(j, "labels").read_text(encoding="utf-8") for j in jobs))
    if pairs:
        header = _csv_text([], pair_columns())
        _write_atomic(out / "pairs.csv", header + "".join(part(j, "pairs").read_text(encoding="utf-8") for j in jobs))
    labels = read_labels(out)
    pair_rows = read_pairs(out) if pairs else []
    counts = {s: sum(r["split"] == s for r in labels) for s in ("train", "test")}
    stats = {
        **settings, "split": {"rule": f"index % {TEST_EVERY} == 0 -> test", **counts},
        "seeds": f"'{seed}-<index>'", "pairs": _pair_counts(pair_rows) if pairs else None,
        "rates": _rates(labels), "attribution": ATTRIBUTION,
    }
    _write_atomic(out / "info.json", json.dumps(stats, indent=2) + "\n")
    seconds = time.perf_counter() - start_time
    return {**stats, "seconds": round(seconds, 2), "rendered": rendered}


ATTRIBUTION = ("Avataaars (https://avataaars.com/) by Pablo Stanley, free for personal and commercial "
               "use; rendered with DiceBear (MIT)")


def _pair_counts(rows) -> dict:
    counts = {a: 0 for a in EDIT_ATTRIBUTES}
    for r in rows:
        counts[r["attribute"]] += 1
    return counts


def _clear(out: Path) -> None:
    """Remove what a previous build wrote (only its files)."""
    for d in ("train", "test", *(f"pairs/{a}" for a in EDIT_ATTRIBUTES)):
        for p in (out / d).glob("*.png"):
            p.unlink()
    for p in (out / ".parts").glob("*.csv"):
        p.unlink()
    for name in ("labels.csv", "pairs.csv", "info.json"):
        (out / name).unlink(missing_ok=True)
