"""e4e data: build datasets. `e4e data emoji OUT_DIR` writes the project's emoji training set."""
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


def register(sub):
    from e4e.data.emoji import SIZES
    p = sub.add_parser("data", help="build datasets (emoji)")
    kinds = p.add_subparsers(dest="dataset", metavar="DATASET")

    def no_dataset(args):
        raise E4EError("name a dataset: e4e data emoji OUT_DIR")

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
