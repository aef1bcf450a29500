"""e4e train-classifier: train an avatar attribute network and report its test accuracy.
It learns on one half of a labelled folder's train split and reports per-attribute test accuracy
(e4e.train.classifier)."""


def run(args) -> int:
    from e4e.cli.options import resolve
    from e4e.errors import E4EError
    from e4e.train.classifier import ClassifierTrainConfig, train_classifier
    cfg = resolve(args, ClassifierTrainConfig)
    if cfg is None:
        return 0
    for name, what in (("data", "a folder with labels.csv (from 'e4e data avatars')"),
                       ("out", "PATH.safetensors for the weights")):
        if not getattr(cfg, name):
            raise E4EError(f"train-classifier: pass --{name} ({what})")
    train_classifier(cfg)
    return 0


def register(sub):
    from e4e.cli.options import add_trainer_args
    from e4e.train.classifier import ClassifierTrainConfig
    p = sub.add_parser("train-classifier", help="train an avatar attribute network (similarity net / evaluation "
                                                "classifier) and report its test accuracy",
                       description="Every option of e4e.train.classifier.ClassifierTrainConfig is a flag. --out "
                                   "PATH.safetensors: PATH.json (accuracies), PATH.log.jsonl and PATH.state.pt "
                                   "(resume) are written beside it.")
    add_trainer_args(p, ClassifierTrainConfig, "training options (defaults shown)")
    p.set_defaults(func=run)
