"""e4e train: train an e4e (or pSp baseline) encoder for a frozen generator."""


def run(args) -> int:
    from e4e.train.config import build_config
    from e4e.train.e4e import E4ETrainConfig, train_e4e
    overrides = list(args.set or [])
    for flag, key in (("train_data", "train_data"), ("test_data", "test_data"), ("generator", "stylegan_weights"),
                      ("exp_dir", "exp_dir"), ("max_steps", "max_steps"), ("batch_size", "batch_size"),
                      ("dataset_type", "dataset_type"), ("lpips_backbone", "lpips_backbone"),
                      ("lpips_weights", "lpips_weights"), ("perceptual_weights", "perceptual_weights"),
                      ("id_weights", "id_weights"), ("moco_weights", "moco_weights"), ("sim_weights", "sim_weights"), ("device", "device")):
        v = getattr(args, flag)
        if v is not None:
            overrides.append(f"{key}={v}")
    cfg = build_config(E4ETrainConfig, args.config, overrides)
    train_e4e(cfg, resume=args.resume)
    return 0


def register(sub):
    p = sub.add_parser("train", help="train an e4e / pSp encoder (official recipe; see docs/training.md)")
    p.add_argument("--config", help="YAML or JSON file of E4ETrainConfig options (official option names)")
    p.add_argument("--dataset-type", help="ffhq_encode | cars_encode | church_encode | horse_encode | emoji_encode | avatar_encode")
    p.add_argument("--train-data", help="image folder")
    p.add_argument("--test-data", help="image folder for validation (default: the test split of --train-data)")
    p.add_argument("--generator", help="StyleGAN2 generator: rosinality .pt, NVIDIA .pkl or e4e .safetensors")
    p.add_argument("--exp-dir", help="run folder (checkpoints/, images/, log.jsonl, tb/)")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--batch-size", type=int, help="global batch, split over torchrun processes")
    p.add_argument("--lpips-backbone", help="torchvision alexnet/vgg16 weights (.pth) for LPIPS")
    p.add_argument("--lpips-weights", help="LPIPS lin-layer weights (alex.pth / vgg.pth)")
    p.add_argument("--perceptual-weights", help="EfficientNet-Lite0 weights for perceptual=efficientnet")
    p.add_argument("--id-weights", help="ArcFace model_ir_se50.pth (faces)")
    p.add_argument("--moco-weights", help="moco_v2_800ep_pretrain.pt (other domains)")
    p.add_argument("--sim-weights", help="avatar similarity network .safetensors (avatar_encode; e4e train-classifier)")
    p.add_argument("--device")
    p.add_argument("--resume", action="store_true", help="continue from EXP_DIR/checkpoints/last.pt")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override any option, e.g. --set lpips_lambda=0")
    p.set_defaults(func=run)
