"""e4e train-generator: train a small StyleGAN2 on an image folder (rosinality-format output).

The trainer and its option checks live in e4e.train.stylegan (GANTrainConfig checks its values when built,
so a bad value is one line before any model or data is touched)."""
def run(args) -> int:
    from e4e.cli.options import overrides
    from e4e.errors import E4EError
    from e4e.train.config import build_config, to_yaml
    from e4e.train.stylegan import GANTrainConfig, train_gan
    cfg = build_config(GANTrainConfig, args.config, overrides(args))
    if args.dry_run:
        print(to_yaml(cfg), end="")
        return 0
    if not cfg.data:
        raise E4EError("no training data: pass --data DIR (an image folder, e.g. from 'e4e data avatars')")
    from e4e.outputs import writable_dir
    writable_dir(cfg.out)  # before the data and models load
    train_gan(cfg)
    return 0


def register(sub):
    from e4e.cli import add_threads
    from e4e.cli.options import add_config_flags
    from e4e.train.stylegan import GANTrainConfig
    p = sub.add_parser("train-generator", help="train a StyleGAN2 generator on an image folder",
                       description="Every option of e4e.train.stylegan.GANTrainConfig is a flag (dashes or "
                                   "underscores; e4e train's names exp_dir, max_steps, batch_size... also work). "
                                   "Options resolve as: defaults <- --config FILE <- flags <- --set KEY=VALUE.")
    p.add_argument("--config", help="YAML or JSON file of GANTrainConfig options")
    p.add_argument("--dry-run", action="store_true", help="print the resolved options as YAML and exit")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override any config option")
    add_threads(p)
    add_config_flags(p, GANTrainConfig, "training options (defaults shown)")
    p.set_defaults(func=run)
