"""A synthetic labelled folder in `e4e data avatars`' labels.csv format, for the attribute-network tests.

Each image is a cartoon head drawn with PIL whose parts encode the labels: skin colour fills the face,
hair colour a band above it (hidden, and labelled 'none', under a hat), a hat is a dark-red cap, glasses
two dark rings, facial hair a brown patch on the chin, a smile an open arc (else a flat line). Positions
jitter by a few pixels so that a network has to learn the parts, not pixel addresses.
"""
import csv
import random
from pathlib import Path

from PIL import Image, ImageDraw

HAIR = {"black": (30, 30, 30), "blonde": (230, 200, 90), "red": (200, 60, 30)}
SKIN = {"light": (250, 220, 190), "dark": (140, 90, 60)}
COLUMNS = ["file", "split", "seed", "smile", "glasses", "facial_hair", "hat", "hair_colour", "skin_colour",
           "opt_top"]


def draw_avatar(labels: dict, size: int, rng: random.Random) -> Image.Image:
    s = size / 64
    dx, dy = rng.randint(-2, 2) * s, rng.randint(-2, 2) * s
    im = Image.new("RGB", (size, size), (120, 170, 220))
    d = ImageDraw.Draw(im)

    def box(x0, y0, x1, y1):
        return [x0 * s + dx, y0 * s + dy, x1 * s + dx, y1 * s + dy]

    if labels["hat"]:
        d.rectangle(box(14, 6, 50, 20), fill=(150, 20, 40))
    else:
        d.ellipse(box(14, 6, 50, 30), fill=HAIR[labels["hair_colour"]])
    d.ellipse(box(18, 14, 46, 52), fill=SKIN[labels["skin_colour"]])
    d.ellipse(box(25, 27, 29, 31), fill=(20, 20, 20))
    d.ellipse(box(35, 27, 39, 31), fill=(20, 20, 20))
    if labels["glasses"]:
        d.ellipse(box(22, 24, 32, 34), outline=(10, 10, 10), width=max(1, int(2 * s)))
        d.ellipse(box(32, 24, 42, 34), outline=(10, 10, 10), width=max(1, int(2 * s)))
    if labels["facial_hair"]:
        d.chord(box(20, 36, 44, 54), 0, 180, fill=(90, 50, 20))
    if labels["smile"]:
        d.arc(box(26, 36, 38, 44), 0, 180, fill=(170, 0, 0), width=max(1, int(2 * s)))
    else:
        d.line(box(27, 41, 37, 41), fill=(170, 0, 0), width=max(1, int(2 * s)))
    return im


def random_labels(rng: random.Random) -> dict:
    hat = int(rng.random() < 0.3)
    return {"smile": int(rng.random() < 0.5), "glasses": int(rng.random() < 0.4),
            "facial_hair": int(rng.random() < 0.3), "hat": hat,
            "hair_colour": "none" if hat else rng.choice(sorted(HAIR)), "skin_colour": rng.choice(sorted(SKIN))}


def make_avatar_folder(root, n_train: int = 48, n_test: int = 16, size: int = 32, seed: int = 0) -> Path:
    """Writes root/train/*.png, root/test/*.png and root/labels.csv; returns root."""
    root = Path(root)
    rng = random.Random(seed)
    rows = []
    for split, n in (("train", n_train), ("test", n_test)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            labels = random_labels(rng)
            file = f"{split}/{i:06d}.png"
            draw_avatar(labels, size, rng).save(root / file)
            rows.append({"file": file, "split": split, "seed": rng.randrange(10**6), **labels,
                         "opt_top": "hat" if labels["hat"] else "hair"})
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return root
