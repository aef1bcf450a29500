"""The e4e trainer's options (`E4ETrainConfig`), dataset presets, and how `e4e train` resolves them.

No torch here: `e4e train --help` lists every option (with its default and the comment beside it) by
importing only this module. The trainer itself is e4e.train.e4e.
"""
import json
import math
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

from e4e.errors import E4EError
from e4e.train.runs import COMPILE_MODES

# Official dataset presets (configs/data_configs.py + transforms_config.py of the official code), plus our
# our emoji and avatar domains. size = (H, W) the images are resized to; crop = rows of the 256x256 output compared with
# the target (cars are 192x256 inside a square generator); similarity = what id_lambda weighs.
PRESETS = {
    "ffhq_encode": dict(size=(256, 256), crop=None, similarity="id", stylegan_size=1024),
    "cars_encode": dict(size=(192, 256), crop=(32, 224), similarity="moco", stylegan_size=512),
    "church_encode": dict(size=(256, 256), crop=None, similarity="moco", stylegan_size=256),
    "horse_encode": dict(size=(256, 256), crop=None, similarity="moco", stylegan_size=256),
    "emoji_encode": dict(size=(64, 64), crop=None, similarity="none", stylegan_size=64),
    # 128 px avatars at their native size; L_sim on our attribute network (sim_weights, docs/attributes.md)
    "avatar_encode": dict(size=(128, 128), crop=None, similarity="attr", stylegan_size=128),
}
# Other names accepted for a preset (dataset_type is stored under the preset's own name).
PRESET_ALIASES = {"avatars_encode": "avatar_encode"}
# Options a preset changes from the dataclass defaults (a config file or flag still overrides them): the
# emoji domain has no identity/similarity network.
PRESET_DEFAULTS = {"emoji_encode": {"id_lambda": 0.0}}
# Keys opts.json holds that are derived from the options rather than options themselves.
DERIVED_OPTS = ("progressive_steps",)


@dataclass
class E4ETrainConfig:
    ALIASES: ClassVar[dict] = {"generator": "stylegan_weights"}  # older flag names, kept working
    # Every field is an option of `e4e train` (--name or --name-with-dashes) and of its config files; the
    # comment after each is its --help text. Names are the official e4e options where it has them.
    # data and models
    dataset_type: str = "ffhq_encode"  # preset: image size, similarity loss, defaults (ffhq_encode, avatar_encode, ...)
    train_data: str = ""  # training image folder (with a labels.csv: its 'train' split)
    test_data: str = ""  # validation folder; empty: the 'test' split of train_data when it has a labels.csv
    stylegan_weights: str = ""  # frozen generator: rosinality .pt, NVIDIA .pkl or e4e .safetensors
    stylegan_size: int = 0  # generator resolution; 0: read from the generator file
    encoder_type: str = "Encoder4Editing"  # Encoder4Editing (e4e) or GradualStyleEncoder (the pSp baseline)
    num_layers: int = 50  # IR-SE backbone depth: 50, 100 or 152
    encoder_mode: str = "ir_se"  # backbone blocks: ir_se (official) or ir
    encoder_widths: list[int] | None = None  # small models: the 4 stage widths, e.g. [32,48,64,128]
    encoder_units: list[int] | None = None  # small models: blocks per stage, e.g. [2,2,3,2]
    encoder_head_width: int = 0  # small models: style-head conv width (0: the style dimension, official)
    input_size: int = 0  # encoder input size; 0: the preset's
    start_from_latent_avg: bool = True  # add the generator's mean W to the encoder's codes
    checkpoint_path: str = ""  # initialise from an e4e checkpoint (official .pt or ours)
    encoder_init: str = ""  # start the encoder from this checkpoint's encoder, with stylegan_weights' generator
    train_decoder: bool = False  # also fine-tune the generator (official default: frozen)
    # losses
    l2_lambda: float = 1.0  # weight of the pixel L2 loss
    lpips_lambda: float = 0.8  # weight of the perceptual loss (0: off, and no perceptual weights needed)
    lpips_type: str = "alex"  # LPIPS backbone: alex or vgg
    perceptual: str = "lpips"  # perceptual loss: lpips (needs lpips_backbone + lpips_weights) or efficientnet
    lpips_backbone: str = ""  # torchvision alexnet/vgg16 ImageNet weights (.pth) for LPIPS
    lpips_weights: str = ""  # LPIPS lin-layer weights (alex.pth / vgg.pth)
    perceptual_weights: str = ""  # EfficientNet-Lite0 .pth for perceptual=efficientnet (default: the pip package's)
    id_lambda: float = 0.1  # weight of the identity / similarity loss (ArcFace for faces, MoCo otherwise)
    id_weights: str = ""  # model_ir_se50.pth (faces, ffhq_encode)
    moco_weights: str = ""  # moco_v2_800ep_pretrain.pt (cars, church, horse)
    sim_weights: str = ""  # avatar similarity network .safetensors (avatar_encode; e4e train-classifier, part A)
    w_discriminator_lambda: float = 0.0  # weight of the latent discriminator's adversarial loss (official e4e: 0.1)
    w_discriminator_lr: float = 2e-5  # latent discriminator learning rate
    r1: float = 10.0  # R1 penalty weight of the latent discriminator
    d_reg_every: int = 16  # apply R1 every this many steps (lazy regularisation)
    use_w_pool: bool = False  # feed the discriminator from a pool of past codes
    w_pool_size: int = 50  # size of that pool
    delta_norm: int = 2  # norm of the offset regulariser (L_d-reg)
    delta_norm_lambda: float = 2e-4  # weight of the offset regulariser
    # (w_norm_lambda bounds styles whose scale the generator ignores, its demodulated layers, which an
    # unregularised pSp lets run away: docs/model_card_avatar.md)
    w_norm_lambda: float = 0.0  # weight of pSp's W-norm loss, mean over the batch of ||codes - latent_avg|| (0: off, as the official FFHQ recipes)
    progressive_start: int | None = None  # step that opens the first offset (official e4e: 20000); none: all open
    progressive_step_every: int = 2000  # steps between opening further offsets
    # optimisation and schedule
    optim_name: str = "ranger"  # ranger (official) or adam
    learning_rate: float = 1e-4  # encoder learning rate
    batch_size: int = 4  # global batch, split over torchrun processes
    test_batch_size: int = 2  # validation batch
    workers: int = 4  # image-loading threads
    max_steps: int = 500_000  # training steps
    image_interval: int = 100  # write an input|reconstruction grid every this many steps
    board_interval: int = 50  # log scalars every this many steps
    val_interval: int = 1000  # validate every this many steps (a checkpoint is written first)
    val_batches: int = 50  # validation batches (of test_batch_size images)
    save_interval: int = 0  # write checkpoints/last.pt every this many steps; 0: at the end only, as the official coach
    # run
    exp_dir: str = "runs/e4e"  # run folder: checkpoints/, images/, opts.json, log.jsonl, tb/
    seed: int = 0  # seed of everything random (data order, flips, noise, pools)
    device: str | None = None  # cpu, cuda, cuda:1 ... (default: cuda if available)
    bf16: bool = False  # bfloat16 autocast on CUDA
    impl: str = "fast"  # fast (masked stages, compiled step, foreach Ranger, images on the GPU) | reference
    compile: str = "auto"  # auto (on for impl=fast on CUDA, single process) | on | off
    compile_mode: str = "default"  # torch.compile mode: default | reduce-overhead (CUDA graphs) | max-autotune | ...-no-cudagraphs
    time_limit_min: float = 0.0  # stop (and save) after this many minutes; 0: no limit

    def __post_init__(self):
        self.dataset_type = PRESET_ALIASES.get(self.dataset_type, self.dataset_type)

    def preset(self) -> dict:
        if self.dataset_type not in PRESETS:
            raise E4EError(f"dataset_type {self.dataset_type!r} unknown (choose from {', '.join(PRESETS)})")
        return PRESETS[self.dataset_type]

    def validate(self) -> None:
        self.preset()
        if self.encoder_type not in ("Encoder4Editing", "GradualStyleEncoder"):
            raise E4EError(f"encoder_type {self.encoder_type!r}: use Encoder4Editing or GradualStyleEncoder")
        if self.optim_name not in ("ranger", "adam"):
            raise E4EError(f"optim_name {self.optim_name!r}: use ranger or adam")
        if self.impl not in ("fast", "reference"):
            raise E4EError(f"impl {self.impl!r}: use fast or reference")
        if self.compile not in ("auto", "on", "off"):
            raise E4EError(f"compile {self.compile!r}: use auto, on or off")
        if self.compile_mode not in COMPILE_MODES:
            raise E4EError(f"compile_mode {self.compile_mode!r}: use one of {', '.join(COMPILE_MODES)}")
        if self.perceptual not in ("lpips", "efficientnet"):
            raise E4EError(f"perceptual {self.perceptual!r}: use lpips or efficientnet")
        if self.checkpoint_path and self.encoder_init:
            raise E4EError("checkpoint_path and encoder_init both given: checkpoint_path loads a whole inverter "
                           "(encoder and generator), encoder_init only an encoder for stylegan_weights; pass one")
        if not self.train_data:
            raise E4EError("no training data: set train_data (an image folder)")
        if not self.stylegan_weights:
            raise E4EError("no generator: set stylegan_weights (rosinality .pt, NVIDIA .pkl or e4e .safetensors)")
        positive = ("batch_size", "max_steps", "progressive_step_every", "d_reg_every", "test_batch_size",
                    "image_interval", "board_interval", "val_interval", "val_batches", "num_layers")
        for name in positive:
            if getattr(self, name) < 1:
                raise E4EError(f"config: {name}={getattr(self, name)} must be >= 1")
        for name in ("save_interval", "workers", "stylegan_size", "input_size", "w_pool_size", "delta_norm"):
            if getattr(self, name) < 0:
                raise E4EError(f"config: {name}={getattr(self, name)} must be >= 0"
                               + (" (0: save at max_steps only)" if name == "save_interval" else ""))
        if self.progressive_start is not None and self.progressive_start < 0:
            raise E4EError(f"config: progressive_start={self.progressive_start} must be >= 0 (or null: off)")
        for name in ("learning_rate", "w_discriminator_lr"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise E4EError(f"config: {name}={value} must be a positive number")
        for name in ("l2_lambda", "lpips_lambda", "id_lambda", "w_discriminator_lambda", "delta_norm_lambda", "w_norm_lambda",
                     "r1", "time_limit_min"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise E4EError(f"config: {name}={value} must be a number >= 0")


def resolve_config(config=None, overrides=(), run_dir=None) -> E4ETrainConfig:
    """What `e4e train` trains with: defaults <- the preset's defaults (PRESET_DEFAULTS) <- the config
    file <- overrides (KEY=VALUE). run_dir: resume that run, whose own opts.json is the config file and
    whose folder is exp_dir, so nothing else is needed."""
    from e4e.train.config import build_config
    overrides = list(overrides)
    if run_dir is not None:
        run = Path(run_dir)
        if not (run / "opts.json").is_file():
            raise E4EError(f"{run}: not a run folder (no opts.json); --resume takes the exp_dir of an earlier "
                           "e4e train run")
        if config:
            raise E4EError("--resume RUN_DIR reads the run's own opts.json: leave out --config (options given "
                           "as flags still override it)")
        config = run / "opts.json"
        overrides.append(f"exp_dir={json.dumps(str(run))}")
    first = build_config(E4ETrainConfig, config, overrides, ignore=DERIVED_OPTS)
    base = PRESET_DEFAULTS.get(first.dataset_type)
    return build_config(E4ETrainConfig, config, overrides, base=base, ignore=DERIVED_OPTS) if base else first
