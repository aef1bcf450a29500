"""e4e train-generator: train a small StyleGAN2 on an image folder (rosinality-format output).

The trainer and its option checks live in e4e.train.stylegan (GANTrainConfig checks its values when built,
so a bad value is one line before any model or data is touched)."""
def run(args) -> int:
    from e4e.errors import E4EError
    from e4e.train.config import build_config
    from e4e.train.stylegan import GANTrainConfig, train_gan
    overrides = list(args.set or [])
    for name in ("data", "out", "steps", "size", "batch", "impl", "device"):
        v = getattr(args, name)
        if v is not None:
            overrides.append(f"{name}={v}")
    if args.time_limit_min is not None:
        overrides.append(f"time_limit_min={args.time_limit_min}")
    if args.resume:
        overrides.append("resume=true")
    cfg = build_config(GANTrainConfig, args.config, overrides)
    if not cfg.data:
        raise E4EError("no training data: pass --data DIR (an image folder, e.g. from 'e4e data avatars')")
    from e4e.outputs import writable_dir
    writable_dir(cfg.out)  # before the data and models load
    train_gan(cfg)
    return 0


def register(sub):
    from e4e.cli import add_threads
    p = sub.add_parser("train-generator", help="train a StyleGAN2 generator on an image folder")
    p.add_argument("--config", help="YAML or JSON file of GANTrainConfig options")
    p.add_argument("--data", help="image folder (a labels.csv there selects its train split)")
    p.add_argument("--out", help="run folder (checkpoints, samples, log)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint.pt")
    p.add_argument("--steps", type=int)
    p.add_argument("--size", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--impl", choices=["fast", "reference"],
                   help="fast (default): data on the device, compiled steps on CUDA; reference: eager, from disk")
    p.add_argument("--device")
    p.add_argument("--time-limit-min", type=float, help="stop cleanly (checkpoint + generator) after this long")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override any config option")
    add_threads(p)
    p.set_defaults(func=run)
