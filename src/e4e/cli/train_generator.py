"""e4e train-generator: train a small StyleGAN2 on an image folder (rosinality-format output).

The trainer and its option checks live in e4e.train.stylegan (GANTrainConfig checks its values when built,
so a bad value is one line before any model or data is touched)."""
def run(args) -> int:
    from e4e.cli.options import resolve
    from e4e.errors import E4EError
    from e4e.train.stylegan import GANTrainConfig, train_gan
    cfg = resolve(args, GANTrainConfig)
    if cfg is None:
        return 0
    if not cfg.data:
        raise E4EError("no training data: pass --data DIR (an image folder, e.g. from 'e4e data avatars')")
    from e4e.outputs import writable_dir
    writable_dir(cfg.out)  # before the data and models load
    train_gan(cfg)
    return 0


def register(sub):
    from e4e.cli.options import add_trainer_args
    from e4e.train.stylegan import GANTrainConfig
    p = sub.add_parser("train-generator", help="train a StyleGAN2 generator on an image folder",
                       description="Every option of e4e.train.stylegan.GANTrainConfig is a flag (dashes or "
                                   "underscores; e4e train's names exp_dir, max_steps, batch_size... also work). "
                                   "Options resolve as: defaults <- --config FILE <- flags <- --set KEY=VALUE.")
    add_trainer_args(p, GANTrainConfig, "training options (defaults shown)")
    p.set_defaults(func=run)
