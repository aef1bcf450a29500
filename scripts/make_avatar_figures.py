"""The two figures of docs/data_avatars.md, drawn with e4e.data.avatars (no build needed):

    PYTHONPATH=src python scripts/make_avatar_figures.py     # -> docs/images/avatars_{samples,pairs}.png

avatars_samples.png: the first 16 avatars of `e4e data avatars DIR` (seed 0) with their clean labels.
avatars_pairs.png: the first 6 test avatars (indices 0, 20, ...) and their counterfactual pairs, one
column per edit attribute (blank: no hair colour edit under a hat).
"""
import argparse
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from e4e.data import avatars

TILE, PAD, TEXT = 128, 4, 40


def caption(labels: dict) -> list[str]:
    on = [name for name, col in (("smile", "smile"), ("glasses", "glasses"), ("beard", "facial_hair"),
                                 ("hat", "hat")) if labels[col]]
    return [" ".join(on) or "-", f"hair {labels['hair_colour']}", f"skin {labels['skin_colour']}"]


def samples(n: int = 16, cols: int = 8) -> Image.Image:
    font = ImageFont.load_default()
    rows = (n + cols - 1) // cols
    grid = Image.new("RGB", (cols * (TILE + PAD) + PAD, rows * (TILE + TEXT + PAD) + PAD), "white")
    draw = ImageDraw.Draw(grid)
    for i in range(n):
        image, labels = avatars.render(avatars.seed_of(0, i), TILE)
        x, y = PAD + (i % cols) * (TILE + PAD), PAD + (i // cols) * (TILE + TEXT + PAD)
        grid.paste(image, (x, y))
        for k, line in enumerate(caption(labels)):
            draw.text((x + 1, y + TILE + 2 + 12 * k), line, fill="black", font=font)
    return grid


def pairs(n: int = 6) -> Image.Image:
    font = ImageFont.load_default()
    cols = ["source", *avatars.EDIT_ATTRIBUTES]
    grid = Image.new("RGB", (len(cols) * (TILE + PAD) + PAD, 16 + n * (TILE + 16 + PAD) + PAD), "white")
    draw = ImageDraw.Draw(grid)
    for c, name in enumerate(cols):
        draw.text((PAD + c * (TILE + PAD) + 2, 3), name, fill="black", font=font)
    for r in range(n):
        seed = avatars.seed_of(0, r * avatars.TEST_EVERY)
        image, labels = avatars.render(seed, TILE)
        y = 16 + PAD + r * (TILE + 16 + PAD)
        grid.paste(image, (PAD, y))
        draw.text((PAD + 1, y + TILE + 2), caption(labels)[0], fill="black", font=font)
        for c, attribute in enumerate(avatars.EDIT_ATTRIBUTES, start=1):
            pair = avatars.render_pair(seed, labels, attribute, TILE)
            if pair is None:
                continue
            x = PAD + c * (TILE + PAD)
            grid.paste(pair[0], (x, y))
            draw.text((x + 1, y + TILE + 2), f"{attribute} -> {pair[2]}", fill="black", font=font)
    return grid


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "images")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    samples().save(a.out / "avatars_samples.png", optimize=True)
    pairs().save(a.out / "avatars_pairs.png", optimize=True)
    print(f"wrote {a.out / 'avatars_samples.png'} and {a.out / 'avatars_pairs.png'}")


if __name__ == "__main__":
    main()
