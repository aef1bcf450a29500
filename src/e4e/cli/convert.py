"""e4e convert: show what a checkpoint holds and rewrite it in another format (logic: e4e.checkpoints.convert)."""


def run(args) -> int:
    from e4e.checkpoints.convert import convert
    for line in convert(args.input, args.output, to=args.to, generator=args.generator, overwrite=args.overwrite):
        print(line)
    return 0


def register(sub):
    from e4e.cli import add_threads
    from e4e.checkpoints.convert import WRITABLE
    p = sub.add_parser("convert", help="describe a checkpoint; convert between NVIDIA .pkl, rosinality .pt, "
                       "official e4e .pt and e4e .safetensors",
                       description="Reads IN (NVIDIA stylegan2-ada-pytorch .pkl, rosinality .pt, official e4e/pSp .pt "
                       "or e4e .safetensors, recognised by content), prints what it holds, and writes OUT. "
                       "Without OUT it only describes IN.")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT", nargs="?",
                   help="output file; the format follows its suffix (.safetensors; .pt: official for an inverter, "
                   "rosinality for a generator) or --to")
    p.add_argument("--to", choices=WRITABLE, help="output format (rosinality: a generator only, even from an inverter)")
    p.add_argument("--generator", metavar="PATH",
                   help="replace the decoder of an inverter IN with this generator (any generator format)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    add_threads(p)
    p.set_defaults(func=run)
