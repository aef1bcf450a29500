"""`e4e` command line. Each subcommand lives in its own module here and exposes
`register(subparsers)`, which adds its parser and sets `func(args) -> int | None`."""
import argparse
import importlib
import sys

from e4e.errors import E4EError

# Order = order in --help.
COMMANDS = ["demo", "generate", "data", "train-generator", "convert", "train", "train-classifier", "invert", "edit",
            "directions", "align", "eval", "serve"]


def add_threads(parser: argparse.ArgumentParser) -> None:
    """--threads N, for every command that runs torch on the CPU (`main` applies it before the command)."""
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads for torch (default: torch's choice, all cores; 1 for reproducible timing)")


def set_threads(n: int | None) -> int | None:
    """torch's CPU thread count -> n; returns the count it had (None when n is None: nothing changed)."""
    if n is None:
        return None
    if n < 1:
        raise E4EError("--threads must be at least 1")
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    return before


def check_batch_and_size(batch_size: int, size: int | None = None) -> None:
    """The shared checks of the image commands (generate, invert, edit): --batch-size >= 1 and --size, when
    given, a positive number of pixels; a one-line E4EError otherwise."""
    if batch_size < 1:
        raise E4EError(f"--batch-size must be at least 1, got {batch_size}")
    if size is not None and size < 1:
        raise E4EError(f"--size must be a positive number of pixels, got {size}")


def summary(name: str) -> str:
    """A command's one-line description: its module docstring's first line, read without importing
    the module (importing means importing torch: seconds, for a --help)."""
    import ast
    from importlib.util import find_spec
    spec = find_spec(f"e4e.cli.{name.replace('-', '_')}")
    try:
        with open(spec.origin, encoding="utf-8") as f:
            doc = ast.get_docstring(ast.parse(f.read())) or ""
    except (OSError, SyntaxError, AttributeError, TypeError):
        return ""
    first = doc.strip().splitlines()[0] if doc.strip() else ""
    return first.split(": ", 1)[1] if ": " in first else first


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser. Only the command named in argv (all, when argv is None) is imported and registered
    in full; the others are listed by name and summary, so `e4e --help` imports no torch."""
    parser = argparse.ArgumentParser(prog="e4e", description="Encode real images into editable StyleGAN latents.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    for name in COMMANDS:
        if argv is None or name == chosen:
            importlib.import_module(f"e4e.cli.{name.replace('-', '_')}").register(sub)
        else:
            sub.add_parser(name, help=summary(name), add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    threads_before = None
    try:
        threads_before = set_threads(getattr(args, "threads", None))
        return int(args.func(args) or 0)
    except E4EError as e:
        print(f"e4e: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except OSError as e:  # a file system refusal the command did not foresee (disk full, permissions...)
        where = f"{e.filename}: " if e.filename else ""
        print(f"e4e: error: {where}{e.strerror or ' '.join(str(e).split()) or type(e).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("e4e: interrupted", file=sys.stderr)
        return 130
    finally:
        if threads_before is not None:  # main() called in-process (tests, scripts): leave torch as it was
            import torch
            torch.set_num_threads(threads_before)


if __name__ == "__main__":
    sys.exit(main())
