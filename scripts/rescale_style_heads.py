"""Shrink the style heads of a pSp (GradualStyleEncoder) checkpoint whose outputs ran away, keeping their
direction: the warm start for a pSp run with a W-norm bound (`e4e train --w_norm_lambda`).

In:  an e4e-format pSp checkpoint (encoder + generator + latent_avg) and a folder of images.
Out: the same checkpoint with each runaway head's output scaled to the median head's size.

Why: a style that feeds only demodulated convolutions changes nothing in the image when it is scaled, so an
unregularised pSp can let one grow without bound (the avatar pSp's entry 10 reached ~7e7, docs/model_card_avatar.md).
Turning on a W-norm loss then is not enough: the head's gain (about 7 per conv layer) sends the loss's
gradient through the shared feature pyramid a million times amplified, and Adam wrecks every other style
(measured on CPU: reconstruction L2 0.04 -> 0.33 in 5 steps). A head is stride-2 convs with LeakyReLU, then an
EqualLinear: all positively homogeneous, so scaling layer k's weight by a and its bias by a^k scales the
head's output by a^(layers) exactly, and the W-norm loss starts from a normal gain.

    python scripts/rescale_style_heads.py models/avatar/psp_avatar128.safetensors DATA/test -o out.safetensors
"""
import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from e4e.checkpoints.native import load_native, save_native  # noqa: E402
from e4e.errors import E4EError, first_line  # noqa: E402
from e4e.metrics import runaway_styles, style_norms  # noqa: E402


def head_norms(inv, images: torch.Tensor) -> torch.Tensor:
    """-> (n_styles,) mean over images of ||code_i - latent_avg|| (each head's output size)."""
    with torch.no_grad():
        return style_norms(inv.encode(images), inv.latent_avg)


def scale_head(sd: dict, index: int, factor: float) -> int:
    """Scale head `index`'s output by `factor` (in place on the encoder state dict sd) -> its layer count."""
    prefix = f"styles.{index}."
    convs = sorted({int(k[len(prefix) + 6:].split(".")[0]) for k in sd if k.startswith(prefix + "convs.")})
    layers = [f"{prefix}convs.{c}" for c in convs] + [f"{prefix}linear"]
    a = factor ** (1.0 / len(layers))
    for k, name in enumerate(layers, start=1):
        for suffix, power in (("weight", 1), ("bias", k)):
            t = sd[f"{name}.{suffix}"]
            sd[f"{name}.{suffix}"] = (t.double() * a ** power).to(t.dtype)
    return len(layers)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="pSp checkpoint in e4e's format (.safetensors)")
    ap.add_argument("images", help="folder of images to measure the heads on")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--limit", type=int, default=32, help="images measured (default 32)")
    ap.add_argument("--ratio", type=float, default=100.0, help="a head is runaway above this many times the median")
    args = ap.parse_args(argv)
    from e4e.api import load
    from e4e.imageio import iter_image_paths
    from e4e.pipeline import load_batch
    try:
        inv = load(args.checkpoint)
        if type(inv.encoder).__name__ != "GradualStyleEncoder":
            raise E4EError(f"{args.checkpoint}: a {type(inv.encoder).__name__}, not a pSp GradualStyleEncoder")
        paths = [str(p) for p in sorted(iter_image_paths(args.images))][: args.limit]
        if not paths:
            raise E4EError(f"{args.images}: no images")
        _, images, _ = load_batch(paths, inv.input_size)
        before = head_norms(inv, images)
        median = float(before.median())
        runaway = runaway_styles(before, args.ratio)
        print("head output norms:", ", ".join(f"{n:.4g}" for n in before.tolist()), f"(median {median:.4g})")
        if not runaway:
            print("no runaway head: nothing written")
            return 0
        parts, configs, extra, info = load_native(args.checkpoint)
        sd = parts["encoder"]
        for i in runaway:
            n = scale_head(sd, i, median / float(before[i]))
            print(f"head {i}: {float(before[i]):.4g} -> scaled by {median / float(before[i]):.3g} over {n} layers")
        info = {**info, "rescaled_heads": {str(i): float(before[i]) for i in runaway}}
        save_native(args.out, parts, configs, extra, info)
        after = head_norms(load(args.out), images)
        print("after:", ", ".join(f"{n:.4g}" for n in after.tolist()))
        print("wrote", args.out)
    except E4EError as e:
        print(f"rescale_style_heads: error: {first_line(e, limit=None)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
