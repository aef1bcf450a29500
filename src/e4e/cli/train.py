"""e4e train: train an e4e (or pSp baseline) encoder for a frozen generator.

Every option of `e4e.train.options.E4ETrainConfig` is a flag here, generated from the dataclass (its
default and the comment beside it are the --help text), under its official name (--stylegan_weights)
and with dashes (--stylegan-weights). Options resolve as: defaults <- dataset preset <- --config FILE
(YAML/JSON; configs/*.yaml ship as examples) <- flags <- --set KEY=VALUE. `--resume RUN_DIR` needs
nothing else: the run's own opts.json is its config. `--dry-run` prints the resolved config and stops.
"""
import argparse


def run(args) -> int:
    from e4e.cli.options import overrides
    from e4e.train.config import to_yaml
    from e4e.train.options import resolve_config
    resume_dir = args.resume if isinstance(args.resume, str) else None
    cfg = resolve_config(args.config, overrides(args), run_dir=resume_dir)
    if args.dry_run:
        print(to_yaml(cfg), end="")
        return 0
    from e4e.train.e4e import train_e4e
    train_e4e(cfg, resume=bool(args.resume))
    return 0


def register(sub):
    from e4e.cli import add_threads
    from e4e.cli.options import add_config_flags
    from e4e.train.options import E4ETrainConfig
    p = sub.add_parser("train", help="train an e4e / pSp encoder (official recipe; see docs/training.md)",
                       description=__doc__.split("\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE", help="YAML or JSON file of the options below (e.g. configs/emoji.yaml)")
    p.add_argument("--resume", nargs="?", const=True, metavar="RUN_DIR",
                   help="continue RUN_DIR (its opts.json and checkpoints/last.pt; flags still override), or "
                        "without RUN_DIR the exp_dir of the options given")
    p.add_argument("--dry-run", action="store_true", help="print the resolved options as YAML and exit")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override any option, e.g. --set lpips_lambda=0")
    add_threads(p)
    add_config_flags(p, E4ETrainConfig, "training options (defaults shown; official e4e names, dashes and the "
                                        "short names of train-generator also accepted)")
    p.set_defaults(func=run)
