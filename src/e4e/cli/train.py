"""e4e train: train an e4e (or pSp baseline) encoder for a frozen generator.

Every option of `e4e.train.options.E4ETrainConfig` is a flag here, generated from the dataclass (its
default and the comment beside it are the --help text), under its official name (--stylegan_weights)
and with dashes (--stylegan-weights). Options resolve as: defaults <- dataset preset <- --config FILE
(YAML/JSON; configs/*.yaml ship as examples) <- flags <- --set KEY=VALUE. `--resume RUN_DIR` needs
nothing else: the run's own opts.json is its config. `--dry-run` prints the resolved config and stops.
"""
import argparse


def run(args) -> int:
    from e4e.cli.options import dry_run, overrides
    from e4e.train.options import resolve_config
    resume_dir = args.resume if isinstance(args.resume, str) else None
    cfg = dry_run(args, resolve_config(args.config, overrides(args), run_dir=resume_dir))
    if cfg is None:
        return 0
    from e4e.train.e4e import train_e4e
    train_e4e(cfg, resume=bool(args.resume))
    return 0


def register(sub):
    from e4e.cli.options import add_trainer_args
    from e4e.train.options import E4ETrainConfig
    p = sub.add_parser("train", help="train an e4e / pSp encoder (official recipe; see docs/training.md)",
                       description=__doc__.split("\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resume", nargs="?", const=True, metavar="RUN_DIR",
                   help="continue RUN_DIR (its opts.json and checkpoints/last.pt; flags still override), or "
                        "without RUN_DIR the exp_dir of the options given")
    add_trainer_args(p, E4ETrainConfig, "training options (defaults shown; official e4e names, dashes and the "
                                        "short names of train-generator also accepted)")
    p.set_defaults(func=run)
