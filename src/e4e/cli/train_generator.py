"""e4e train-generator: train a small StyleGAN2 on an image folder (rosinality-format output).

The trainer lives in e4e.train.stylegan; here the options are checked first, so a bad value is one
line before any model or data is touched."""
import math

from e4e.errors import E4EError


def check_config(cfg) -> None:
    """One-line E4EError for option values the trainer cannot run with. Options the config does not
    have are passed over, so this stays valid while the trainer gains or drops options."""
    def value(name):
        return getattr(cfg, name, None)

    for name in ("batch", "steps", "style_dim", "n_mlp", "channel_multiplier", "channel_max", "save_every",
                 "sample_every", "log_every", "d_reg_every", "g_reg_every", "path_batch_shrink"):
        if value(name) is not None and value(name) < 1:
            raise E4EError(f"{name}={value(name)} must be >= 1")
    size = value("size")
    if size is not None and (size < 4 or size & (size - 1)):
        raise E4EError(f"size={size} must be a power of 2 >= 4")
    if value("workers") is not None and value("workers") < 0:
        raise E4EError(f"workers={value('workers')} must be >= 0")
    if value("lr") is not None and not (math.isfinite(value("lr")) and value("lr") > 0):
        raise E4EError(f"lr={value('lr')} must be a positive number")
    for name in ("r1", "path_regularize", "ema_kimg", "ema_rampup", "time_limit_min"):
        if value(name) is not None and not (math.isfinite(value(name)) and value(name) >= 0):
            raise E4EError(f"{name}={value(name)} must be a number >= 0")
    if value("mixing") is not None and not 0 <= value("mixing") <= 1:
        raise E4EError(f"mixing={value('mixing')} must be in [0, 1]")


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
        raise E4EError("no training data: pass --data DIR (an image folder, e.g. from 'e4e data emoji')")
    check_config(cfg)
    from e4e.outputs import writable_dir
    writable_dir(cfg.out)  # before the data and models load
    train_gan(cfg)
    return 0


def register(sub):
    p = sub.add_parser("train-generator", help="train a StyleGAN2 generator on an image folder")
    p.add_argument("--config", help="YAML or JSON file of GANTrainConfig options")
    p.add_argument("--data", help="image folder")
    p.add_argument("--out", help="run folder (checkpoints, samples, log); an existing run resumes")
    p.add_argument("--steps", type=int)
    p.add_argument("--size", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override any config option")
    p.set_defaults(func=run)
