"""Compact StyleGAN2 training (Karras et al. 2020) for small custom datasets.

Non-saturating logistic loss, lazy R1 on reals, lazy path-length regularisation, style mixing, an EMA
generator with ramp-up, and DiffAugment on everything the discriminator sees (small datasets). Writes
rosinality-format checkpoints ({g, d, g_ema, latent_avg, ...}) that the rest of e4e loads; resumes from
its own checkpoint; runs under torchrun with DistributedDataParallel.
"""
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from e4e.checkpoints.rosinality import atomic_torch_save
from e4e.errors import E4EError
from e4e.losses import d_logistic_loss, g_nonsaturating_loss, r1_penalty
from e4e.nets.stylegan2 import Generator, GeneratorConfig
from e4e.train import dist as D
from e4e.train.augment import diff_augment


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
    bf16: bool = False
    time_limit_min: float = 0.0  # > 0: stop cleanly (checkpoint + final generator) after this many minutes
    device: str | None = None
    workers: int = 4
    extra: dict = field(default_factory=dict)

    def generator_config(self) -> GeneratorConfig:
        return GeneratorConfig(size=self.size, style_dim=self.style_dim, n_mlp=self.n_mlp,
                               channel_multiplier=self.channel_multiplier, channel_max=self.channel_max)


def build_discriminator(cfg: GANTrainConfig):
    from e4e.nets.discriminators import Discriminator, DiscriminatorConfig
    return Discriminator(DiscriminatorConfig.from_generator(cfg.generator_config()))


def requires_grad(model, flag: bool) -> None:
    for p in model.parameters():
        p.requires_grad_(flag)


def path_length_penalty(fake_img, latents, mean_path_length, decay=0.01):
    noise = torch.randn_like(fake_img) / math.sqrt(fake_img.shape[2] * fake_img.shape[3])
    (grad,) = torch.autograd.grad((fake_img * noise).sum(), latents, create_graph=True)
    lengths = grad.pow(2).sum(2).mean(1).sqrt()
    mean = mean_path_length + decay * (lengths.mean().detach() - mean_path_length)
    return (lengths - mean).pow(2).mean(), mean.detach(), lengths.mean().detach()


def make_noise_z(batch, dim, mixing, device, gen):
    if mixing > 0 and random.random() < mixing:
        return list(torch.randn(2, batch, dim, device=device, generator=gen).unbind(0))
    return [torch.randn(batch, dim, device=device, generator=gen)]


@torch.no_grad()
def accumulate(ema, model, beta):
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach(), 1 - beta)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


def infinite(loader, sampler=None):
    epoch = 0
    while True:
        if sampler is not None:
            sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def train_gan(cfg: GANTrainConfig) -> Path:
    info = D.init(cfg.device)
    dev = info.device
    out = Path(cfg.out)
    if info.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    if cfg.batch % info.world:
        raise E4EError(f"batch {cfg.batch} is not divisible by {info.world} processes")
    batch = cfg.batch // info.world
    torch.manual_seed(cfg.seed + info.rank)
    random.seed(cfg.seed + info.rank)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed * 1000 + info.rank)

    from e4e.data.folder import ImageFolderDataset
    ds = ImageFolderDataset(cfg.data, cfg.size, hflip=cfg.hflip)
    if len(ds) == 0:
        raise E4EError(f"{cfg.data}: no readable images")
    sampler = torch.utils.data.DistributedSampler(ds, info.world, info.rank, seed=cfg.seed) if info.world > 1 else None
    loader = torch.utils.data.DataLoader(ds, batch, sampler=sampler, shuffle=sampler is None, drop_last=True,
                                         num_workers=cfg.workers, pin_memory=dev.type == "cuda",
                                         persistent_workers=cfg.workers > 0,
                                         generator=torch.Generator().manual_seed(cfg.seed))
    data = infinite(loader, sampler)

    gcfg = cfg.generator_config()
    g, g_ema = Generator(gcfg).to(dev), Generator(gcfg).to(dev).eval()
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        g.use_grouped_conv(False), g_ema.use_grouped_conv(False)
    d = build_discriminator(cfg).to(dev)
    g_ema.load_state_dict(g.state_dict())
    requires_grad(g_ema, False)
    g_ratio = cfg.g_reg_every / (cfg.g_reg_every + 1)
    d_ratio = cfg.d_reg_every / (cfg.d_reg_every + 1)
    g_opt = torch.optim.Adam(g.parameters(), lr=cfg.lr * g_ratio, betas=(0.0, 0.99 ** g_ratio))
    d_opt = torch.optim.Adam(d.parameters(), lr=cfg.lr * d_ratio, betas=(0.0, 0.99 ** d_ratio))

    step, mean_path_length = 0, torch.zeros((), device=dev)
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        g.load_state_dict(ck["g"]), d.load_state_dict(ck["d"]), g_ema.load_state_dict(ck["g_ema"])
        g_opt.load_state_dict(ck["g_optim"]), d_opt.load_state_dict(ck["d_optim"])
        step, mean_path_length = ck["step"], ck["mean_path_length"].to(dev)
        if info.main:
            print(f"resumed from {ckpt_path} at step {step}")

    g_train = DDP(g, device_ids=[dev.index] if dev.type == "cuda" else None) if info.world > 1 else g
    d_train = DDP(d, device_ids=[dev.index] if dev.type == "cuda" else None) if info.world > 1 else d
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.bf16 and dev.type == "cuda")
    sample_z = torch.randn(16, cfg.style_dim, generator=torch.Generator().manual_seed(1234)).to(dev)
    log = open(out / "log.jsonl", "a") if info.main else None
    bar = tqdm(total=cfg.steps, initial=step, desc="train-generator", disable=not info.main, dynamic_ncols=True)
    t0, s0 = time.time(), step
    aug = lambda x: diff_augment(x, cfg.augment, gen) if cfg.augment else x  # noqa: E731
    def save_state():
        atomic_torch_save({"g": g.state_dict(), "d": d.state_dict(), "g_ema": g_ema.state_dict(),
                           "g_optim": g_opt.state_dict(), "d_optim": d_opt.state_dict(), "step": step,
                           "mean_path_length": mean_path_length.cpu(), "args": asdict(cfg)}, ckpt_path)

    deadline = time.time() + cfg.time_limit_min * 60 if cfg.time_limit_min > 0 else float("inf")
    while step < cfg.steps:
        if time.time() > deadline:  # any rank past the deadline stops them all (all-reduce below)
            stop = torch.ones((), device=dev)
        else:
            stop = torch.zeros((), device=dev)
        if D.all_reduce_mean(stop, info) > 0:
            if info.main:
                print(f"time limit of {cfg.time_limit_min} min reached at step {step}")
            break
        real = next(data).to(dev, non_blocking=True)
        # --- discriminator
        requires_grad(g, False), requires_grad(d, True)
        with amp:
            fake, _ = g_train(make_noise_z(batch, cfg.style_dim, cfg.mixing, dev, gen))
            fake_pred, real_pred = d_train(aug(fake.detach())), d_train(aug(real))
            d_loss = d_logistic_loss(real_pred.float(), fake_pred.float())
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        stats = {"d_loss": d_loss.detach(), "real_score": real_pred.float().mean().detach(),
                 "fake_score": fake_pred.float().mean().detach()}
        if step % cfg.d_reg_every == 0:
            real.requires_grad_(True)
            real_pred = d_train(aug(real))  # R1 in fp32: its gradient norm is the quantity being penalised
            r1 = r1_penalty(real_pred, real, gamma=cfg.r1, every=cfg.d_reg_every)
            d_opt.zero_grad(set_to_none=True)
            (r1 + 0 * real_pred[0]).sum().backward()
            d_opt.step()
            stats["r1"] = r1.detach()
        # --- generator
        requires_grad(g, True), requires_grad(d, False)
        with amp:
            fake, _ = g_train(make_noise_z(batch, cfg.style_dim, cfg.mixing, dev, gen))
            g_loss = g_nonsaturating_loss(d_train(aug(fake)).float())
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        stats["g_loss"] = g_loss.detach()
        if cfg.path_regularize > 0 and step % cfg.g_reg_every == 0:
            pb = max(1, batch // cfg.path_batch_shrink)
            fake, latents = g_train(make_noise_z(pb, cfg.style_dim, cfg.mixing, dev, gen), return_latents=True)
            pl, mean_path_length, path_len = path_length_penalty(fake, latents, mean_path_length)
            g_opt.zero_grad(set_to_none=True)
            (cfg.path_regularize * cfg.g_reg_every * pl + 0 * fake[0, 0, 0, 0]).backward()
            g_opt.step()
            mean_path_length = D.all_reduce_mean(mean_path_length, info)
            stats["path"], stats["path_length"] = pl.detach(), path_len
        # --- EMA with ramp-up: early on the average would be dominated by random init
        nimg = (step + 1) * cfg.batch
        ema_nimg = min(cfg.ema_kimg * 1000, nimg * cfg.ema_rampup) if cfg.ema_rampup else cfg.ema_kimg * 1000
        accumulate(g_ema, g, 0.5 ** (cfg.batch / max(ema_nimg, 1e-8)))
        step += 1
        bar.update(1)
        if info.main and (step % cfg.log_every == 0 or step == cfg.steps):
            row = {k: round(float(v), 5) for k, v in stats.items()}
            row.update(step=step, steps_per_s=round((step - s0) / (time.time() - t0), 3))
            log.write(json.dumps(row) + "\n"), log.flush()
            bar.set_postfix(d=row["d_loss"], g=row["g_loss"])
        if info.main and (step % cfg.sample_every == 0 or step == cfg.steps):
            from e4e.imageio import save_grid
            with torch.no_grad():
                img, _ = g_ema(sample_z, randomize_noise=False)
            save_grid(img.float().cpu(), out / f"sample_{step:06d}.png", nrow=4)
        if step % cfg.save_every == 0 or step == cfg.steps:
            if info.main:
                save_state()
            D.barrier(info)
    bar.close()
    if info.main and step % cfg.save_every:  # stopped early by the time limit
        save_state()
    final = out / "generator.pt"
    if info.main:
        g_ema.cpu()
        avg = g_ema.mean_latent(100_000)
        atomic_torch_save({"g_ema": g_ema.state_dict(), "latent_avg": avg.reshape(-1), "args": asdict(cfg),
                           "step": step}, final)
        print(f"wrote {final}")
        log.close()
    D.cleanup(info)
    return final
