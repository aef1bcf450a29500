"""e4e train-classifier: train an avatar attribute network and report its test accuracy.
It learns on one half of a labelled folder's train split and reports per-attribute test accuracy
(e4e.train.classifier)."""


def run(args) -> int:
    from e4e.train.classifier import ClassifierTrainConfig, train_classifier
    kw = {k: getattr(args, k) for k in ("data", "out", "arch", "part", "seed", "steps", "epochs", "batch", "lr",
                                        "size", "width", "blocks", "time_limit_min", "device", "workers", "half")
          if getattr(args, k) is not None}
    if args.attributes:
        kw["attributes"] = [a for a in args.attributes.split(",") if a]
    train_classifier(ClassifierTrainConfig(**kw))
    return 0


def register(sub):
    from e4e.cli import add_threads
    p = sub.add_parser("train-classifier", help="train an avatar attribute network (similarity net / evaluation "
                                                "classifier) and report its test accuracy")
    p.add_argument("--data", required=True, help="folder with labels.csv (from 'e4e data avatars')")
    p.add_argument("--out", required=True, help="PATH.safetensors; PATH.json (accuracies), PATH.log.jsonl and "
                                                "PATH.state.pt (resume) are written beside it")
    p.add_argument("--arch", choices=("resnet", "convnet"), help="default resnet")
    p.add_argument("--part", choices=("A", "B", "all"), help="half of the train split (hash of the file name); "
                                                             "default all")
    p.add_argument("--seed", type=int)
    p.add_argument("--steps", type=int, help="optimiser steps (default 2000)")
    p.add_argument("--epochs", type=float, help="passes over the training images (replaces --steps)")
    p.add_argument("--batch", type=int, help="default 256")
    p.add_argument("--lr", type=float, help="AdamW peak learning rate (default 2e-3, cosine decay)")
    p.add_argument("--size", type=int, help="input resolution the network runs at (default 64)")
    p.add_argument("--width", type=int, help="channels of the first stage (default 32)")
    p.add_argument("--blocks", type=int, help="blocks per stage (default 1)")
    p.add_argument("--attributes", help="comma-separated label columns to learn (default: all)")
    p.add_argument("--time-limit-min", type=float, help="stop after this many minutes (checkpoint, score, write)")
    p.add_argument("--workers", type=int, help="image decoding threads (default 8)")
    p.add_argument("--half", action="store_true", default=None, help="store the weights as fp16")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    add_threads(p)
    p.set_defaults(func=run)
