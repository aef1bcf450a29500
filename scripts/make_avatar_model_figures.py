"""The figures of docs/model_card_avatar.md, from the embedded avatar model and the pSp encoder:

    PYTHONPATH=src python scripts/make_avatar_model_figures.py --data /work/data/avatars \
        [--e4e src/e4e/assets/e4e_avatar128.safetensors] [--psp models/avatar/psp_avatar128.safetensors] [--out docs/images]

avatar_g128_samples.png: generator samples at seeds 0-31 (e4e.sampling.sample, no truncation, fixed noise).
avatar_g128_truncation.png: seeds 0-7 at truncation psi 1.0, 0.7 and 0.5 (one row each, toward latent_avg).
avatar_inversions.png: the first 8 test avatars of DATA; columns input | e4e | pSp, two avatars per row.
"""
import argparse
import csv
from pathlib import Path

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--e4e", default="src/e4e/assets/e4e_avatar128.safetensors")
    ap.add_argument("--psp", default="models/avatar/psp_avatar128.safetensors")
    ap.add_argument("--out", type=Path, default=Path("docs/images"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from e4e.api import load
    from e4e.benchmark import load_files
    from e4e.imageio import save_grid
    from e4e.refine import render
    from e4e.sampling import sample

    e4e, psp = load(args.e4e), load(args.psp)
    g = e4e.decoder
    avg = e4e.latent_avg.reshape(-1, g.style_dim)[0]
    images, _ = sample(g, list(range(32)), 1.0, None, "cpu", 8, progress=False)
    print("wrote", save_grid(images.clamp(-1, 1), args.out / "avatar_g128_samples.png", nrow=8))
    rows = [sample(g, list(range(8)), psi, avg, "cpu", 8, progress=False)[0] for psi in (1.0, 0.7, 0.5)]
    print("wrote", save_grid(torch.cat(rows).clamp(-1, 1), args.out / "avatar_g128_truncation.png", nrow=8))
    with open(args.data / "labels.csv", newline="", encoding="utf-8") as f:
        files = [r["file"] for r in csv.DictReader(f) if r["split"] == "test"][:8]
    x, _, _ = load_files(args.data, files, e4e.input_size)
    with torch.no_grad():
        recon = [render(inv.decoder, inv.encode(x), tuple(x.shape[-2:])).clamp(-1, 1) for inv in (e4e, psp)]
    tiles = torch.stack([x, *recon], dim=1).reshape(-1, 2, 3, *x.shape[1:])  # (4 rows, 2 avatars, 3 columns)
    print("wrote", save_grid(tiles.reshape(-1, *x.shape[1:]), args.out / "avatar_inversions.png", nrow=6,
                             labels=["input", "e4e", "pSp"] * 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
