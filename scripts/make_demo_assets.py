"""Rebuild the demo's shipped assets from the emoji dataset and the embedded inverter.

    python scripts/make_demo_assets.py DATASET_DIR   (DATASET_DIR from `e4e data emoji DIR --size 64`)

Writes src/e4e/assets/samples/*.png (12 held-out images, never trained on) and
src/e4e/assets/skin_tone.pt: an InterFaceGAN-style direction (1, D) fitted with a linear SVM on the
e4e codes of the TRAINING images labelled with a dark (U+1F3FE/F) versus a light (U+1F3FB/C) skin tone.
"""
import csv
import sys
from pathlib import Path

import torch

from e4e.api import invert, load
from e4e.editing import fit_direction, save_direction
from e4e.imageio import load_image

ASSETS = Path(__file__).resolve().parents[1] / "src" / "e4e" / "assets"


def main(root):
    root = Path(root)
    rows = list(csv.DictReader(open(root / "labels.csv", encoding="utf-8")))
    inv = load()
    tones = {"dark": 1, "medium-dark": 1, "light": 0, "medium-light": 0}
    train = [r for r in rows if r["split"] == "train" and r["skin_tone"] in tones]
    lat = invert([root / r["file"] for r in train], inv, batch_size=64)
    labels = [tones[r["skin_tone"]] for r in train]
    fit = fit_direction(lat.codes, labels, method="svm", seed=0)
    save_direction(ASSETS / "skin_tone.pt", fit.direction)
    print(f"skin_tone.pt: fitted on {len(train)} training codes, held-out accuracy {fit.accuracy:.3f}")
    # held-out samples: a fixed, varied pick (every k-th test image in file order)
    test = sorted(r["file"] for r in rows if r["split"] == "test")
    want = [r["file"] for r in rows if r["split"] == "test" and r["skin_tone"] in ("light", "medium-light")][:4]
    others = [f for f in test if f not in want][:: max(1, len(test) // 8)][:8]
    out = ASSETS / "samples"
    out.mkdir(exist_ok=True)
    for f in want + others:
        load_image(root / f).save(out / Path(f).name)
    print(f"samples: {len(want + others)} held-out images in {out}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main(sys.argv[1])
