"""`e4e` command line. Each subcommand lives in its own module here and exposes
`register(subparsers)`, which adds its parser and sets `func(args) -> int | None`."""
import argparse
import importlib
import sys

from e4e.errors import E4EError

# Order = order in --help.
COMMANDS = ["demo", "generate", "data", "train-generator", "convert", "train", "invert", "edit", "directions", "align", "eval"]


def add_threads(parser: argparse.ArgumentParser) -> None:
    """--threads N, for every command that runs torch on the CPU (`main` applies it before the command)."""
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads for torch (default: torch's choice, all cores; 1 for reproducible timing)")


def set_threads(n: int | None) -> None:
    if n is None:
        return
    if n < 1:
        raise E4EError("--threads must be at least 1")
    import torch
    torch.set_num_threads(n)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="e4e", description="Encode real images into editable StyleGAN latents.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"e4e.cli.{name.replace('-', '_')}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        set_threads(getattr(args, "threads", None))
        return int(args.func(args) or 0)
    except E4EError as e:
        print(f"e4e: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("e4e: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
