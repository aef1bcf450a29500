"""e4e align: crop and rotate face photos to the FFHQ layout the face models were trained on.
Writes DIR/<name>.png per face and DIR/alignment.json (source photo and face quad per name), which
`e4e edit --paste-back` reads to put edited faces back into the photos."""
import sys

from e4e.errors import E4EError


def run(args) -> int:
    from e4e.align import BACKENDS, FFHQ_SIZES, align_files, load_detector
    from e4e.imageio import iter_image_paths
    from e4e.outputs import writable_dir
    if args.size < 8:
        raise E4EError("--size must be at least 8")
    if args.backend not in BACKENDS:
        raise E4EError(f"--backend: unknown {args.backend!r} (available: {', '.join(BACKENDS)})")
    paths = list(iter_image_paths(args.images))
    if not paths:
        raise E4EError("no input images")
    writable_dir(args.output)  # before the detector loads
    detector = load_detector(args.backend, args.landmarks)
    transform = args.size * FFHQ_SIZES[1] // FFHQ_SIZES[0] if args.supersample else args.size
    from e4e.pasteback import save_alignment
    done = missed = skipped = 0
    records: dict = {}
    for path, written, reason in align_files(paths, args.output, detector, args.size, transform,
                                             None if args.all_faces else 1, records=records):
        if reason:
            skipped += 1
            print(f"e4e: warning: skipped {reason}", file=sys.stderr)
        elif written:
            done += 1
            print(f"{path} -> {', '.join(map(str, written))}")
        else:
            missed += 1
            print(f"e4e: warning: no face found in {path}, skipped", file=sys.stderr)
    if not done:
        raise E4EError(f"no face found in any of the {len(paths)} input image(s)"
                       + (f" ({skipped} unreadable)" if skipped else ""))
    record = save_alignment(args.output, records)
    print(f"aligned {done} image(s) into {args.output}" + (f"; {missed} without a face" if missed else "")
          + (f"; {skipped} unreadable, skipped" if skipped else "")
          + f"; face positions in {record} (for e4e edit --paste-back)")
    return 0


def register(sub):
    from e4e.cli import add_threads
    p = sub.add_parser("align", help="detect faces and align them FFHQ-style (for face models)")
    p.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("-o", "--output", required=True, help="output folder (one <name>.png per image)")
    p.add_argument("--size", type=int, default=256, help="output size in pixels (default 256, as e4e)")
    p.add_argument("--backend", default="mtcnn", help="landmark detector (default mtcnn)")
    p.add_argument("--landmarks", metavar="PATH", default=None,
                   help="landmark model; mtcnn: a folder with pnet.pt, rnet.pt, onet.pt "
                        "(default: the files of an installed facenet-pytorch)")
    p.add_argument("--all-faces", action="store_true", help="align every face found, not just the largest")
    p.add_argument("--supersample", action="store_true",
                   help="resample at 4x the size then downscale, as FFHQ (1024 from 4096); e4e resamples at 256")
    add_threads(p)
    p.set_defaults(func=run)
