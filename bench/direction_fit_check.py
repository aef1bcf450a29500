"""Why the label edits did not move the avatar model: three fits of the same directions, on real inversions.

    python bench/direction_fit_check.py --data /work/data/avatars --codes 1000 --held-out 200

In: an avatar dataset (e4e data avatars), the embedded inverter, the evaluation classifier (the judge).
Out: a Markdown table. Per attribute, three directions fitted on the e4e codes of the first --codes
labelled training avatars:
- "SVM, W": e4e.benchmark's ifg_codes (InterFaceGAN's linear SVM on the codes' mean over styles, one W
  standard deviation long, added to every style): what scripts/make_demo_assets.py shipped until 2026-12-07;
- "class gap, W": the mean code of the images with the attribute minus the mean of those without, after
  averaging over styles (one vector for every style);
- "class gap, W+": the same difference style by style (e4e.benchmark's codes_wplus, shipped since).
Each moves the codes of the next --held-out training avatars that lack the attribute (never used in the
fit); the judge says on what share of the edited images it sees the attribute. Strengths are in each
direction's own unit: W standard deviations for the SVM, class gaps for the other two.
"""
import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from e4e import benchmark as bm  # noqa: E402
from e4e.checkpoints import load_inverter  # noqa: E402
from e4e.checkpoints.attributes import load_attribute_net  # noqa: E402
from e4e.editing import class_gap  # noqa: E402
from e4e.evaluate import sample_w  # noqa: E402


def success(inv, judge, codes, vector, strengths, attribute) -> list[float]:
    out = []
    for s in strengths:
        with torch.no_grad():
            moved = bm.edit_codes(codes, vector, s)
            img = torch.cat([inv.decode(c, resize=False) for c in moved.split(24)]).clamp(-1, 1)
        got = bm.label_strings(judge, img, [attribute], 48)[attribute]
        out.append(sum(g == "1" for g in got) / len(got))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--checkpoint", default=str(ROOT / "src/e4e/assets/e4e_avatar128.safetensors"))
    ap.add_argument("--classifier", default=str(ROOT / "models/avatar/eval_convnet_B.safetensors"))
    ap.add_argument("--attributes", default="smile,glasses,facial_hair,hat")
    ap.add_argument("--codes", type=int, default=1000, help="labelled training avatars the directions are fitted on")
    ap.add_argument("--held-out", type=int, default=200, help="the next training avatars, edited (those lacking it)")
    ap.add_argument("--max-edited", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    inv = load_inverter(a.checkpoint).eval()
    judge = load_attribute_net(a.classifier).eval()
    data = bm.read_pairs(a.data)
    rows = data.split("train")[:a.codes + a.held_out]
    images, names, _ = bm.load_files(data.root, [r["file"] for r in rows], inv.input_size)
    with torch.no_grad():
        codes = torch.cat([inv.encode(c) for c in images.split(50)])
    label = {r["file"]: r for r in rows}
    fit, held = codes[:a.codes], codes[a.codes:]
    w = sample_w(inv.decoder, 10_000, 0)
    w_grid, gap_grid = [0, 2, 4, 6, 10], [0, 1, 2, 3]
    print(f"{len(names)} avatars encoded: directions fitted on {fit.shape[0]}, edits on up to {a.max_edited} of "
          f"the next {held.shape[0]} that lack each attribute\n")
    print("| attribute | direction | strengths | judge sees the attribute |\n|---|---|---|---|")
    for attr in a.attributes.split(","):
        labels = [label[n][attr] for n in names]
        y = torch.tensor([lab == "1" for lab in labels])
        svm = bm.fit_directions(w, None, fit, {attr: labels[:a.codes]}, None, {attr: ["1"]},
                                kinds=("ifg_codes",))[0][0].vector
        gap_wplus = class_gap(fit, y[:a.codes]).float()
        gap_w = gap_wplus.mean(0)
        start = held[~y[a.codes:]][:a.max_edited]
        for name, vec, grid in (("SVM, W (shipped until 2026-12-07)", svm, w_grid), ("class gap, W", gap_w, gap_grid),
                                ("class gap, W+ (codes_wplus)", gap_wplus, gap_grid)):
            rates = success(inv, judge, start, vec, grid, attr)
            print(f"| {attr} | {name} | {', '.join(map(str, grid))} | {', '.join(f'{r:.2f}' for r in rates)} |",
                  flush=True)


if __name__ == "__main__":
    main()
