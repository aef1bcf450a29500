"""e4e train-classifier: train an avatar attribute network and report its test accuracy.
It learns on one half of a labelled folder's train split and reports per-attribute test accuracy
(e4e.train.classifier)."""


def run(args) -> int:
    from e4e.cli.options import overrides
    from e4e.errors import E4EError
    from e4e.train.classifier import ClassifierTrainConfig, train_classifier
    from e4e.train.config import build_config, to_yaml
    cfg = build_config(ClassifierTrainConfig, args.config, overrides(args))
    if args.dry_run:
        print(to_yaml(cfg), end="")
        return 0
    for name, what in (("data", "a folder with labels.csv (from 'e4e data avatars')"),
                       ("out", "PATH.safetensors for the weights")):
        if not getattr(cfg, name):
            raise E4EError(f"train-classifier: pass --{name} ({what})")
    train_classifier(cfg)
    return 0


def register(sub):
    from e4e.cli import add_threads
    from e4e.cli.options import add_config_flags
    from e4e.train.classifier import ClassifierTrainConfig
    p = sub.add_parser("train-classifier", help="train an avatar attribute network (similarity net / evaluation "
                                                "classifier) and report its test accuracy",
                       description="Every option of e4e.train.classifier.ClassifierTrainConfig is a flag. --out "
                                   "PATH.safetensors: PATH.json (accuracies), PATH.log.jsonl and PATH.state.pt "
                                   "(resume) are written beside it.")
    p.add_argument("--config", help="YAML or JSON file of ClassifierTrainConfig options")
    p.add_argument("--dry-run", action="store_true", help="print the resolved options as YAML and exit")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override any config option")
    add_threads(p)
    add_config_flags(p, ClassifierTrainConfig, "training options (defaults shown)")
    p.set_defaults(func=run)
