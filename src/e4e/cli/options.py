"""Command-line flags generated from a training config dataclass (one home for the three trainers).

In: a parser and a config class (e4e.train.options.E4ETrainConfig, e4e.train.stylegan.GANTrainConfig,
e4e.train.classifier.ClassifierTrainConfig). Out: one flag per field, `--name` and `--name-with-dashes`,
plus the class's aliases (e4e.train.config.aliases_of: the shared vocabulary), with the field's default
and the comment beside it as the help; `overrides(args)` turns the flags given into KEY=VALUE overrides
for e4e.train.config.build_config, so flags, --set and config files resolve one way.
"""
import dataclasses


def _metavar(f) -> str:
    text = str(f.type).lower()
    for word in ("list", "bool", "int", "float"):
        if word in text:
            return {"bool": "BOOL", "int": "N", "float": "X", "list": "[A,B,...]"}[word]
    return "VALUE"


def add_config_flags(parser, cls, title: str, skip: tuple = ()) -> None:
    from e4e.train.config import aliases_of, field_help
    docs = field_help(cls)
    by_field = {}
    for alias, name in aliases_of(cls).items():
        by_field.setdefault(name, []).append(alias)
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(cls):
        if f.name in skip or f.type in (dict, "dict"):
            continue
        names = []
        for n in [f.name, *sorted(by_field.get(f.name, []))]:
            names += [f"--{n}"] + ([f"--{n.replace('_', '-')}"] if "_" in n else [])
        flag = {"nargs": "?", "const": "true"} if f.type in (bool, "bool") else {}
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        group.add_argument(*names, dest=f"opt__{f.name}", metavar=_metavar(f), default=None, **flag,
                           help=f"{docs.get(f.name, '')} (default: {default!r})".replace("%", "%%"))


def overrides(args) -> list[str]:
    """The config flags given on the command line, then --set's, as KEY=VALUE strings."""
    out = [f"{k[5:]}={v}" for k, v in vars(args).items() if k.startswith("opt__") and v is not None]
    return out + list(getattr(args, "set", None) or [])


def add_trainer_args(parser, cls, title: str) -> None:
    """What every trainer command takes: --config FILE, --dry-run, --set KEY=VALUE, --threads, and one
    flag per option of cls."""
    from e4e.cli import add_threads
    parser.add_argument("--config", metavar="FILE", help=f"YAML or JSON file of {cls.__name__} options")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved options as YAML and exit")
    parser.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override any option, e.g. --set lr=1e-3")
    add_threads(parser)
    add_config_flags(parser, cls, title)


def resolve(args, cls):
    """-> the config of defaults <- --config <- flags <- --set, or None after printing it for --dry-run."""
    from e4e.train.config import build_config
    return dry_run(args, build_config(cls, args.config, overrides(args)))


def dry_run(args, cfg):
    """--dry-run: print cfg as YAML and -> None; otherwise -> cfg."""
    if not args.dry_run:
        return cfg
    from e4e.train.config import to_yaml
    print(to_yaml(cfg), end="")
    return None
