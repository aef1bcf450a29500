"""e4e train-generator: train a small StyleGAN2 on an image folder (rosinality-format output)."""


def run(args) -> int:
    from e4e.train.config import build_config
    from e4e.train.stylegan import GANTrainConfig, train_gan
    overrides = list(args.set or [])
    for name in ("data", "out", "steps", "size", "batch"):
        v = getattr(args, name)
        if v is not None:
            overrides.append(f"{name}={v}")
    cfg = build_config(GANTrainConfig, args.config, overrides)
    if not cfg.data:
        from e4e.errors import E4EError
        raise E4EError("no training data: pass --data DIR (an image folder, e.g. from 'e4e data emoji')")
    train_gan(cfg)
    return 0


def register(sub):
    from e4e.cli import add_threads
    p = sub.add_parser("train-generator", help="train a StyleGAN2 generator on an image folder")
    p.add_argument("--config", help="YAML or JSON file of GANTrainConfig options")
    p.add_argument("--data", help="image folder")
    p.add_argument("--out", help="run folder (checkpoints, samples, log); an existing run resumes")
    p.add_argument("--steps", type=int)
    p.add_argument("--size", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override any config option")
    add_threads(p)
    p.set_defaults(func=run)
