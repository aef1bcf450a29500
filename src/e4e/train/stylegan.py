"""Compact StyleGAN2 training (Karras et al. 2020) for small custom datasets.

Non-saturating logistic loss, lazy R1 on reals, lazy path-length regularisation, style mixing, an EMA
generator with ramp-up, and DiffAugment on everything the discriminator sees. Writes rosinality-format
checkpoints ({g, d, g_ema, latent_avg, ...}) that the rest of e4e loads; resumes bit-identically from its
own checkpoint (`resume=True`); runs under torchrun with DistributedDataParallel.

One step is four pure functions of their inputs (`d_main_loss`, `d_r1_loss`, `g_main_loss`,
`g_path_loss`): every random number (latents, mixing cut-off, augmentation parameters) is drawn outside
them from one seeded generator, so the two implementations compute the same losses from the same draws:

- impl="reference": images decoded from disk for every batch, every step eager, plain Adam.
- impl="fast": the whole dataset resident on the device as uint8 (`e4e.train.data.DeviceImages`), the two
  main steps under torch.compile (their backward is compiled too), fused Adam and foreach EMA on CUDA,
  no host synchronisation inside a step (scalars are read only when a log row is written). The lazy R1
  and path-length steps stay eager: they differentiate a gradient, which torch.compile cannot.
  tests/test_train_stylegan.py checks both give the same losses and gradients.
"""
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from e4e.checkpoints.io import seeded_mean_latent
from e4e.checkpoints.rosinality import load_gan_state, save_gan_state, save_rosinality
from e4e.errors import E4EError, first_line
from e4e.losses import d_logistic_loss, g_nonsaturating_loss, r1_penalty
from e4e.nets.stylegan2 import Generator, GeneratorConfig
from e4e.train import dist as D
from e4e.train.augment import apply_augment, sample_augment
from e4e.train.data import BatchPlan, DeviceImages, prefetch_batches
from e4e.train.phases import NO_PHASES
from e4e.train.runs import COMPILE_MODES, Deadline, JsonlLog, claim_run_dir, graphed

IMPLS = ("fast", "reference")


@dataclass
class GANTrainConfig:
    data: str = ""
    out: str = "runs/stylegan"
    size: int = 64
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    channel_max: int = 512
    steps: int = 10_000
    batch: int = 32  # global batch, split over processes
    lr: float = 0.0025
    r1: float = 0.2
    d_reg_every: int = 16
    g_reg_every: int = 4
    path_regularize: float = 2.0
    path_batch_shrink: int = 2
    mixing: float = 0.9
    ema_kimg: float = 10.0
    ema_rampup: float = 0.05
    augment: str = "color,translation,cutout"
    hflip: bool = True
    seed: int = 0
    save_every: int = 1000
    sample_every: int = 500
    log_every: int = 50
    bf16: bool = False  # bf16 autocast for the main D and G steps
    reg_bf16: bool = False  # with bf16: the lazy R1 and path-length steps under autocast too (else fp32)
    channels_last: bool = False  # NHWC activations in G and D: the same function, cuDNN's preferred layout
    reg_impl: str = "auto"  # the lazy R1 and path-length steps' ops: auto (fold on CUDA, else ref) | ref |
    # gradfix | fold (e4e.ops.impl; on the H100 gradfix and fold cut R1 + path length 3.6x, docs/benchmarks.md)
    main_impl: str = "auto"  # the main D and G steps' ops: auto (taps when compiled, else ref) | ref | taps | fold
    time_limit_min: float = 0.0  # > 0: stop cleanly (checkpoint + final generator) after this many minutes
    device: str | None = None
    workers: int = 4  # reference impl: decoding threads; fast impl: threads that load the dataset once
    impl: str = "fast"  # fast | reference (see the module docstring)
    compile: str = "auto"  # auto (on for impl=fast on CUDA, single process) | on | off
    # torch.compile mode of the main steps: default | reduce-overhead (CUDA graphs: no launch gaps, the
    # compiled step was host-bound, docs/benchmarks.md) | max-autotune | max-autotune-no-cudagraphs
    compile_mode: str = "default"
    compile_cache: str = ""  # portable compile cache to load first (each compiled run writes OUT/compile_cache.bin)
    resume: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        """One-line E4EError for option values the trainer cannot run with."""
        def fail(msg):
            raise E4EError(f"train-generator: {msg}")
        for name in ("batch", "steps", "style_dim", "n_mlp", "channel_multiplier", "channel_max", "save_every",
                     "sample_every", "log_every", "d_reg_every", "g_reg_every", "path_batch_shrink"):
            if getattr(self, name) < 1:
                fail(f"{name}={getattr(self, name)} must be >= 1")
        if self.size < 4 or self.size & (self.size - 1):
            fail(f"size={self.size} must be a power of 2 >= 4")
        if self.workers < 0:
            fail(f"workers={self.workers} must be >= 0")
        if not (math.isfinite(self.lr) and self.lr > 0):
            fail(f"lr={self.lr} must be a positive number")
        for name in ("r1", "path_regularize", "ema_kimg", "ema_rampup", "time_limit_min"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                fail(f"{name}={getattr(self, name)} must be a number >= 0")
        if not 0 <= self.mixing <= 1:
            fail(f"mixing={self.mixing} must be in [0, 1]")
        if self.impl not in IMPLS:
            fail(f"impl={self.impl!r} must be one of {', '.join(IMPLS)}")
        if self.reg_impl not in ("auto", "ref", "gradfix", "fold"):
            fail(f"reg_impl={self.reg_impl!r} must be auto, ref, gradfix or fold")
        if self.main_impl not in ("auto", "ref", "taps", "fold"):
            fail(f"main_impl={self.main_impl!r} must be auto, ref, taps or fold")
        if self.compile not in ("auto", "on", "off"):
            fail(f"compile={self.compile!r} must be auto, on or off")
        if self.compile_mode not in COMPILE_MODES:
            fail(f"compile_mode={self.compile_mode!r} must be one of {', '.join(COMPILE_MODES)}")
        bad = [p for p in filter(None, self.augment.split(",")) if p not in ("color", "translation", "cutout")]
        if bad:
            fail(f"unknown augment policy {', '.join(bad)} (use color,translation,cutout)")

    def generator_config(self) -> GeneratorConfig:
        return GeneratorConfig(size=self.size, style_dim=self.style_dim, n_mlp=self.n_mlp,
                               channel_multiplier=self.channel_multiplier, channel_max=self.channel_max)


def build_discriminator(cfg: GANTrainConfig):
    from e4e.nets.discriminators import Discriminator, DiscriminatorConfig
    return Discriminator(DiscriminatorConfig.from_generator(cfg.generator_config()))


def requires_grad(model, flag: bool) -> None:
    for p in model.parameters():
        p.requires_grad_(flag)


class MixingGenerator(nn.Module):
    """Training-time forward: two latent batches z (2, B, D) and a cut-off c -> (image, W+ latent).

    Layers below c take mapping(z[0]), the rest mapping(z[1]); c = n_latent means no mixing. The cut-off
    is a tensor, so one compiled graph serves every value (rosinality draws it as a Python int).
    """

    def __init__(self, g: Generator):
        super().__init__()
        self.g = g

    def forward(self, z, cutoff, noise=None):
        _, b, dim = z.shape
        w = self.g.mapping(z.reshape(2 * b, dim)).view(2, b, dim)
        layer = torch.arange(self.g.n_latent, device=z.device)
        latent = torch.where((layer < cutoff)[None, :, None], w[0][:, None], w[1][:, None])
        return self.g.synthesis(latent, noise=noise, randomize_noise=noise is None), latent


def sample_latents(batch: int, dim: int, n_latent: int, mixing: float, gen, device):
    """-> z (2, B, D), cut-off (0-d int64): mixing with probability `mixing` at a uniform layer in [1, n)."""
    z = torch.randn(2, batch, dim, generator=gen, device=device)
    cut = torch.randint(1, n_latent, (), generator=gen, device=device)
    mix = torch.rand((), generator=gen, device=device) < mixing
    return z, torch.where(mix, cut, torch.full_like(cut, n_latent))


# -- the four losses of one step: pure functions of modules and drawn inputs ------------------------------

def d_main_loss(gm, d, real, z, cutoff, aug_fake, aug_real, policy: str, bf16: bool, noise=None):
    with torch.autocast(real.device.type, dtype=torch.bfloat16, enabled=bf16):
        fake, _ = gm(z, cutoff, noise)
        fake_pred = d(apply_augment(fake.detach(), policy, aug_fake))
        real_pred = d(apply_augment(real, policy, aug_real))
    fake_pred, real_pred = fake_pred.float(), real_pred.float()
    return d_logistic_loss(real_pred, fake_pred), real_pred.mean(), fake_pred.mean()


def d_r1_loss(d, real, aug, policy: str, gamma: float, every: int, bf16: bool = False):
    """R1: gamma/2 * every * ||dD/dx||^2 on reals. bf16: D's forward (so its double backward too) under
    bf16 autocast, as StyleGAN2-ADA runs R1 through its fp16 layers; the gradient and its norm stay fp32
    (the input is an fp32 leaf). (+0 * pred keeps DDP's hooks fed.)"""
    real = real.detach().requires_grad_(True)
    with torch.autocast(real.device.type, dtype=torch.bfloat16, enabled=bf16):
        pred = d(apply_augment(real, policy, aug))
    pred = pred.to(torch.promote_types(pred.dtype, torch.float32))
    r1 = r1_penalty(pred, real, gamma=gamma, every=every)
    return r1 + 0 * pred[0, 0], r1


def g_main_loss(gm, d, z, cutoff, aug, policy: str, bf16: bool, noise=None):
    with torch.autocast(z.device.type, dtype=torch.bfloat16, enabled=bf16):
        fake, _ = gm(z, cutoff, noise)
        pred = d(apply_augment(fake, policy, aug))
    return g_nonsaturating_loss(pred.float())


def path_length_penalty(fake_img, latents, mean_path_length, decay=0.01, noise=None):
    """(E_y ||J_w^T y|| - a)^2 with y ~ N(0, I)/sqrt(HW) and a the running mean of the lengths."""
    acc = torch.promote_types(fake_img.dtype, torch.float32)  # fp32 at least (bf16 autocast: reg_bf16)
    if noise is None:  # drawn in (N, C, H, W) order whatever the image's layout (randn_like follows it)
        noise = torch.randn(fake_img.shape, device=fake_img.device, dtype=acc)
    noise = noise / math.sqrt(fake_img.shape[2] * fake_img.shape[3])
    (grad,) = torch.autograd.grad((fake_img.to(acc) * noise).sum(), latents, create_graph=True)
    lengths = grad.to(acc).pow(2).sum(2).mean(1).sqrt()
    mean = mean_path_length + decay * (lengths.mean().detach() - mean_path_length)
    return (lengths - mean).pow(2).mean(), mean.detach(), lengths.mean().detach()


def g_path_loss(gm, z, cutoff, mean_path_length, weight: float, every: int, noise=None, y=None, bf16=False):
    """noise: the synthesis noise (None: random); y: the path-length probe image (None: random).
    bf16: G's forward (and so the double backward) under bf16 autocast; lengths are summed in fp32."""
    with torch.autocast(z.device.type, dtype=torch.bfloat16, enabled=bf16):
        fake, latent = gm(z, cutoff, noise)
    pl, mean, length = path_length_penalty(fake, latent, mean_path_length, noise=y)
    return weight * every * pl + 0 * fake[0, 0, 0, 0], pl, mean, length


@torch.no_grad()
def accumulate(ema, model, beta):
    ep, mp = list(ema.parameters()), [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ep, mp, 1 - beta)
    eb, mb = list(ema.buffers()), list(model.buffers())
    if eb:
        torch._foreach_copy_(eb, mb)


def ema_beta(cfg: GANTrainConfig, step: int) -> float:
    """StyleGAN2-ADA's EMA half-life of ema_kimg thousand images, ramped up over the first images."""
    nimg = (step + 1) * cfg.batch
    ema_nimg = min(cfg.ema_kimg * 1000, nimg * cfg.ema_rampup) if cfg.ema_rampup else cfg.ema_kimg * 1000
    return 0.5 ** (cfg.batch / max(ema_nimg, 1e-8))


# -- the run --------------------------------------------------------------------------------------------------

class GANTrainer:
    """Builds models, optimisers and data from a config; `step()` runs one training step."""

    def __init__(self, cfg: GANTrainConfig, info: D.DistInfo | None = None):
        self.cfg, self.info = cfg, info or D.DistInfo(device=torch.device(cfg.device or "cpu"))
        info, dev = self.info, self.info.device
        if cfg.batch % info.world:
            raise E4EError(f"batch {cfg.batch} is not divisible by {info.world} processes")
        self.batch = cfg.batch // info.world
        fast = cfg.impl == "fast"
        torch.manual_seed(cfg.seed + info.rank)
        self.gen = torch.Generator(device=dev).manual_seed(cfg.seed * 1000 + info.rank)
        gcfg = cfg.generator_config()
        self.g, self.g_ema = Generator(gcfg).to(dev), Generator(gcfg).to(dev).eval()
        if dev.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
            self.g.use_grouped_conv(False), self.g_ema.use_grouped_conv(False)
        elif fast:
            self.g.use_grouped_conv(False)
        self.d = build_discriminator(cfg).to(dev)
        if cfg.channels_last:
            self.g.configure(channels_last=True)
            self.d.channels_last = True
        self.reg_bf16 = cfg.bf16 and cfg.reg_bf16
        self.g_ema.load_state_dict(self.g.state_dict())
        requires_grad(self.g_ema, False)
        g_ratio = cfg.g_reg_every / (cfg.g_reg_every + 1)
        d_ratio = cfg.d_reg_every / (cfg.d_reg_every + 1)
        fused = fast and dev.type == "cuda"
        self.g_opt = torch.optim.Adam(self.g.parameters(), lr=cfg.lr * g_ratio, betas=(0.0, 0.99 ** g_ratio),
                                      fused=fused or None)
        self.d_opt = torch.optim.Adam(self.d.parameters(), lr=cfg.lr * d_ratio, betas=(0.0, 0.99 ** d_ratio),
                                      fused=fused or None)
        self.step_count, self.mean_path_length = 0, torch.zeros((), device=dev)
        self.clock = NO_PHASES  # bench/train_profile.py times the phases marked in step()
        ddp = dict(device_ids=[dev.index] if dev.type == "cuda" else None)
        gm = MixingGenerator(self.g)
        self.gm = DDP(gm, **ddp) if info.world > 1 else gm
        self.d_train = DDP(self.d, **ddp) if info.world > 1 else self.d
        use_compile = {"on": True, "off": False}.get(cfg.compile, fast and dev.type == "cuda" and info.world == 1)
        self.compiled = use_compile
        self._d_main = torch.compile(d_main_loss, mode=cfg.compile_mode) if use_compile else d_main_loss
        self._g_main = torch.compile(g_main_loss, mode=cfg.compile_mode) if use_compile else g_main_loss
        # CUDA graphs replay into fixed buffers: each step starts a new generation of them, and what a step
        # keeps (its stats) is copied out of them
        self.graphed = use_compile and dev.type == "cuda" and graphed(cfg.compile_mode)
        # ops of G and D (e4e.ops.impl): the FIR filters run as taps inside the compiled main steps
        # (inductor fuses them; measured 420 img/s on the H200 against a depthwise conv per blur); the eager
        # R1 and path-length steps run reg_impl ("ref": the depthwise conv, where taps would be 16 separate
        # kernels; "gradfix": every conv through e4e.ops.conv, whose backward is made of plain convs;
        # "fold": gradfix with each blur folded into the convolution beside it, e4e.ops.fir_conv)
        self._ops = [m for m in (*self.g.modules(), *self.d.modules()) if hasattr(m, "impl")]
        self.main_impl = ("taps" if use_compile else "ref") if cfg.main_impl == "auto" else cfg.main_impl
        self.reg_impl = ("fold" if dev.type == "cuda" else "ref") if cfg.reg_impl == "auto" else cfg.reg_impl

    def _ops_impl(self, impl: str) -> None:
        for m in self._ops:
            m.impl = impl

    # one step, from drawn inputs -------------------------------------------------------------------------
    def draw(self, b: int, h: int, w: int) -> dict:
        """Every random number of one step, in a fixed order from the run's generator."""
        cfg, gen, dev, n = self.cfg, self.gen, self.info.device, self.g.n_latent
        pol = cfg.augment
        r = {"d_z": sample_latents(b, cfg.style_dim, n, cfg.mixing, gen, dev),
             "aug_fake": sample_augment(pol, b, h, w, gen, dev), "aug_real": sample_augment(pol, b, h, w, gen, dev)}
        if self.step_count % cfg.d_reg_every == 0:
            r["aug_r1"] = sample_augment(pol, b, h, w, gen, dev)
        r["g_z"] = sample_latents(b, cfg.style_dim, n, cfg.mixing, gen, dev)
        r["aug_g"] = sample_augment(pol, b, h, w, gen, dev)
        if cfg.path_regularize > 0 and self.step_count % cfg.g_reg_every == 0:
            r["pl_z"] = sample_latents(max(1, b // cfg.path_batch_shrink), cfg.style_dim, n, cfg.mixing, gen, dev)
        return r

    def step(self, real: torch.Tensor, r: dict | None = None) -> dict:
        cfg, s = self.cfg, self.step_count
        if r is None:
            r = self.draw(real.shape[0], real.shape[2], real.shape[3])
        pol = cfg.augment
        stats, clock = {}, self.clock
        if self.graphed:
            torch.compiler.cudagraph_mark_step_begin()
        clock.start()
        # discriminator
        requires_grad(self.g, False), requires_grad(self.d, True)
        noise = r.get("noise")  # explicit synthesis noise (tests); None: drawn inside the generator
        self._ops_impl(self.main_impl)
        loss, real_score, fake_score = self._d_main(self.gm, self.d_train, real, *r["d_z"], r["aug_fake"],
                                                    r["aug_real"], pol, cfg.bf16, noise)
        self._ops_impl(self.reg_impl)
        clock.mark("D main: forward")
        self.d_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.d_opt.step()
        clock.mark("D main: backward + Adam")
        keep = (lambda t: t.detach().clone()) if self.graphed else (lambda t: t.detach())
        stats.update(d_loss=keep(loss), real_score=keep(real_score), fake_score=keep(fake_score))
        if "aug_r1" in r:
            total, r1 = d_r1_loss(self.d_train, real, r["aug_r1"], pol, cfg.r1, cfg.d_reg_every, self.reg_bf16)
            self.d_opt.zero_grad(set_to_none=True)
            total.backward()
            self.d_opt.step()
            stats["r1"] = r1.detach()
            clock.mark("D R1 (eager)")
        # generator
        requires_grad(self.g, True), requires_grad(self.d, False)
        self._ops_impl(self.main_impl)
        loss = self._g_main(self.gm, self.d_train, *r["g_z"], r["aug_g"], pol, cfg.bf16, noise)
        self._ops_impl(self.reg_impl)
        clock.mark("G main: forward")
        self.g_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.g_opt.step()
        stats["g_loss"] = keep(loss)
        clock.mark("G main: backward + Adam")
        if "pl_z" in r:
            total, pl, self.mean_path_length, length = g_path_loss(
                self.gm, *r["pl_z"], self.mean_path_length, cfg.path_regularize, cfg.g_reg_every,
                r.get("pl_noise"), r.get("pl_y"), self.reg_bf16)
            self.g_opt.zero_grad(set_to_none=True)
            total.backward()
            self.g_opt.step()
            self.mean_path_length = D.all_reduce_mean(self.mean_path_length, self.info)
            stats["path"], stats["path_length"] = pl.detach(), length
            clock.mark("G path length (eager)")
        accumulate(self.g_ema, self.g, ema_beta(cfg, s))
        clock.mark("EMA")
        self.step_count += 1
        return stats

    # state -------------------------------------------------------------------------------------------------
    def state(self) -> dict:
        rng = {"torch": torch.get_rng_state(), "gen": self.gen.get_state()}
        if self.info.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.info.device)
        return dict(g=self.g.state_dict(), d=self.d.state_dict(), g_ema=self.g_ema.state_dict(),
                    g_optim=self.g_opt.state_dict(), d_optim=self.d_opt.state_dict(), step=self.step_count,
                    mean_path_length=self.mean_path_length.cpu(), rng=rng, args=asdict(self.cfg))

    def load_state(self, ck: dict, where) -> None:
        try:
            self.g.load_state_dict(ck["g"]), self.d.load_state_dict(ck["d"]), self.g_ema.load_state_dict(ck["g_ema"])
            self.g_opt.load_state_dict(ck["g_optim"]), self.d_opt.load_state_dict(ck["d_optim"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise E4EError(f"{where}: does not fit this configuration ({first_line(e)})") from None
        self.step_count = int(ck["step"])
        self.mean_path_length = ck["mean_path_length"].to(self.info.device)
        rng = ck.get("rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            self.gen.set_state(rng["gen"])
            if "cuda" in rng and self.info.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.info.device)


def load_training_data(cfg: GANTrainConfig, dev):
    """-> (images: DeviceImages (impl=fast) or the ImageFolderDataset (reference), BatchPlan)."""
    from e4e.data.folder import ImageFolderDataset
    ds = ImageFolderDataset(cfg.data, cfg.size, hflip=False)
    if len(ds) == 0:
        raise E4EError(f"{cfg.data}: no readable images")
    if cfg.impl == "fast":
        images = DeviceImages(ds, dev, threads=max(cfg.workers, 1))
        n = len(images)
    else:
        images, n = ds, len(ds)
    return images, BatchPlan(n, cfg.batch, cfg.seed, hflip=cfg.hflip, source=cfg.data)


def training_batches(cfg: GANTrainConfig, images, plan: BatchPlan, start: int, stop: int, info):
    """Yields (step, this rank's real batch) for steps start..stop-1: gathered on the device (impl=fast) or
    decoded from disk ahead of the model in a thread pool (reference)."""
    if cfg.impl == "fast":
        return ((s, images.batch(plan, s, info.rank, info.world)) for s in range(start, stop))
    return prefetch_batches(images, plan, start, stop, info.rank, info.world, cfg.workers)


def train_gan(cfg: GANTrainConfig) -> Path:
    info = D.init(cfg.device)
    dev = info.device
    out = Path(cfg.out)
    ckpt_path = out / "checkpoint.pt"
    resume_from = claim_run_dir(out, "checkpoint.pt", cfg.resume, info.main)
    D.barrier(info)
    images, plan = load_training_data(cfg, dev)
    tr = GANTrainer(cfg, info)
    cache_saved = not (tr.compiled and info.main)
    if tr.compiled and cfg.compile_cache:
        from e4e.fast import load_portable_cache
        if load_portable_cache(cfg.compile_cache) and info.main:
            print(f"loaded the compile cache {cfg.compile_cache}")
    if resume_from is not None:
        tr.load_state(load_gan_state(resume_from), resume_from)
        if info.main:
            print(f"resumed from {resume_from} at step {tr.step_count}")
    if info.main:
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    log = JsonlLog(out / "log.jsonl", resume_step=tr.step_count if resume_from else None, enabled=info.main)
    sample_z = torch.randn(16, cfg.style_dim, generator=torch.Generator().manual_seed(1234)).to(dev)
    bar = tqdm(total=cfg.steps, initial=tr.step_count, desc="train-generator", disable=not info.main,
               dynamic_ncols=True)
    deadline = Deadline(cfg.time_limit_min)
    t0, s0 = time.time(), tr.step_count

    def save():
        if info.main:
            save_gan_state(ckpt_path, **tr.state())
        D.barrier(info)

    batches = training_batches(cfg, images, plan, tr.step_count, cfg.steps, info)
    stopped_early = False
    for s, real in batches:
        if deadline.passed(s, info):
            if info.main:
                print(f"time limit of {cfg.time_limit_min} min reached at step {s}")
            stopped_early = True
            break
        stats = tr.step(real.to(dev, non_blocking=True))
        step = tr.step_count
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            stats = {k: D.all_reduce_mean(v, info) for k, v in stats.items()}
            values = torch.stack([v.float() for v in stats.values()]).tolist()  # the one host sync
            if info.main:
                el = time.time() - t0
                row = {k: round(v, 5) for k, v in zip(stats, values)}
                row.update(step=step, time_s=round(el, 2), steps_per_s=round((step - s0) / el, 3),
                           images_per_s=round((step - s0) * cfg.batch / el, 1))
                log.write(row)
                bar.set_postfix(d=row["d_loss"], g=row["g_loss"])
            if not cache_saved:  # every graph has compiled by the first log: keep them for a fresh machine
                from e4e.fast import save_portable_cache
                cache_saved = True
                n = save_portable_cache(out / "compile_cache.bin")
                if n:
                    print(f"wrote {out / 'compile_cache.bin'} ({n / 2**20:.1f} MiB)")
        if info.main and (step % cfg.sample_every == 0 or step == cfg.steps):
            from e4e.imageio import save_grid
            with torch.no_grad():
                img, _ = tr.g_ema(sample_z, randomize_noise=False)
            save_grid(img.float().cpu(), out / f"sample_{step:06d}.png", nrow=4)
        if step % cfg.save_every == 0 or step == cfg.steps:
            save()
    bar.close()
    if stopped_early or tr.step_count % cfg.save_every:
        save()
    final = out / "generator.pt"
    if info.main:
        g_ema = tr.g_ema.cpu().use_grouped_conv(True)
        save_rosinality(final, g_ema, seeded_mean_latent(g_ema), args=asdict(cfg), step=tr.step_count)
        print(f"wrote {final}")
    log.close()
    D.cleanup(info)
    return final
