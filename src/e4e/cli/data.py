"""e4e data: build datasets (emoji, avatars).
`e4e data emoji OUT_DIR` writes the project's emoji training set; `e4e data avatars OUT_DIR` the
avataaars faces with exact labels and counterfactual pairs."""
import argparse

from e4e.errors import E4EError


def run_emoji(args) -> int:
    from e4e.data.emoji import build
    from e4e.outputs import writable_dir
    writable_dir(args.out_dir)
    stats = build(args.out_dir, font=args.font, size=args.size, background=args.background,
                  limit=args.limit, overwrite=args.overwrite, progress=not args.quiet)
    s = stats["split"]
    print(f"wrote {s['train'] + s['test']} emoji ({stats['size']}x{stats['size']}) to {args.out_dir}: "
          f"train {s['train']}, test {s['test']} (held out, {stats['groups']['test']} groups); "
          f"labels.csv, info.json; {stats['seconds']} s")
    return 0


def run_avatars(args) -> int:
    from e4e.data.avatars import AvatarConfig, build_avatars
    config = AvatarConfig(glasses_probability=args.glasses_probability,
                          facial_hair_probability=args.facial_hair_probability)
    stats = build_avatars(args.out_dir, size=args.size, count=args.count, seed=args.seed,
                          workers=args.workers, pairs=args.pairs, config=config, overwrite=args.overwrite,
                          progress=not args.quiet)
    s, secs = stats["split"], stats["seconds"]
    rate = f", {stats['rendered'] / secs:.0f} img/s" if stats["rendered"] and secs else ""
    pairs = f", {sum(stats['pairs'].values())} pairs" if stats["pairs"] else ""
    print(f"{args.out_dir}: {s['train'] + s['test']} avatars ({stats['size']}x{stats['size']}), train "
          f"{s['train']}, test {s['test']}{pairs}; labels.csv, info.json; rendered {stats['rendered']} "
          f"in {secs} s{rate}")
    return 0


def register(sub):
    from e4e.data.emoji import SIZES
    p = sub.add_parser("data", help="build datasets (emoji, avatars)")
    kinds = p.add_subparsers(dest="dataset", metavar="DATASET")

    def no_dataset(args):
        raise E4EError("name a dataset: e4e data emoji OUT_DIR, or e4e data avatars OUT_DIR")

    p.set_defaults(func=no_dataset)
    e = kinds.add_parser("emoji", help="colour emoji from Noto Color Emoji -> OUT_DIR/{train,test}/*.png + labels.csv")
    e.add_argument("out_dir", metavar="OUT_DIR")
    e.add_argument("--font", help="NotoColorEmoji.ttf (default: the fonts-noto-color-emoji install path)")
    e.add_argument("--size", type=int, default=64, choices=SIZES, help="image side in pixels (default 64; "
                   "the bitmaps are ~136 px, so 256 is upscaled)")
    e.add_argument("--background", default="white", help="colour behind the emoji: a name or #rrggbb (default white)")
    e.add_argument("--limit", type=int, help="only the first N emoji in font order (quick tests)")
    e.add_argument("--overwrite", action="store_true", help="replace the images of an existing build in OUT_DIR")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=run_emoji)

    a = kinds.add_parser("avatars", help="avataaars cartoon faces with exact labels -> OUT_DIR/{train,test}/*.png, "
                         "labels.csv, pairs/ + pairs.csv (counterfactuals of the test split)")
    a.add_argument("out_dir", metavar="OUT_DIR")
    a.add_argument("--size", type=int, default=128, help="image side: 64, 128 or 256 (default 128)")
    a.add_argument("--count", type=int, default=60000, help="number of avatars (default 60000; 5%% are test)")
    a.add_argument("--seed", type=int, default=0, help="base seed: avatar i is dicebear seed 'SEED-i' (default 0)")
    a.add_argument("--workers", type=int, help="processes (default: all CPU cores)")
    a.add_argument("--pairs", action=argparse.BooleanOptionalAction, default=True,
                   help="counterfactual pairs for the test split (default on)")
    a.add_argument("--glasses-probability", type=int, default=25, help="percent with glasses (default 25)")
    a.add_argument("--facial-hair-probability", type=int, default=20, help="percent with facial hair (default 20)")
    a.add_argument("--overwrite", action="store_true", help="replace a build with other settings in OUT_DIR")
    a.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    a.set_defaults(func=run_avatars)
