"""Training the e4e encoder (and the pSp baseline) against a frozen StyleGAN2, as the official coach does.

Per step: (1) if the latent discriminator is on, one D_W step on real w = mapping(z) vs encoder codes,
plus lazy R1 every d_reg_every steps; (2) one encoder step on
    L = l2 * L2 + lpips * LPIPS + id * (1 - cos) + w_discriminator_lambda * L_adv + delta_norm_lambda * L_d-reg
        (+ w_norm_lambda * ||codes - latent_avg||, pSp's optional W-norm loss; off by default).
The progressive stage is a function of the step alone (w0 only until progressive_start, then one more
offset every progressive_step_every steps), so resuming recomputes it. Everything random (data order,
flips, z, noise, the W pools) is derived from the seed or saved, so a resumed CPU run is bit-identical to
an uninterrupted one. Checkpoints use the official layout ({state_dict: encoder./decoder., opts,
latent_avg, global_step, optimizer, discriminator_*}) plus our own resume state, written atomically.

Two implementations of the same step (cfg.impl; `train_step` runs either):
- "reference": the official structure. The encoder forward computes only the open offsets' heads, so
  every progressive stage is another graph; Ranger loops over parameters; images are decoded from disk.
- "fast": the e4e encoder computes every head and masks the closed offsets (Encoder4Editing.masked_codes,
  the stage is a tensor), so one graph serves all stages and the encoder objective (encoder, generator,
  every loss) and the D step's no-grad encoder forward run under torch.compile (compile=auto: on CUDA,
  one process); the closed heads' zero gradients are dropped so Ranger skips them exactly as it does
  after the reference forward; Ranger runs in foreach kernels; on CUDA the training images sit on the GPU
  as uint8 (when they fit). The losses are the same arithmetic: the adversarial loss as a masked mean over
  the open styles, L_d-reg as a masked sum. tests/test_train_e4e_fast.py compares the two on CPU.
  Several processes (DDP) keep the reference forward (DDP needs forward()) with the other fast parts.
The W pools keep their codes on the training device in both (their draws come from their own CPU
generator, so no step waits for the GPU); logged scalars are read back every board_interval steps only.
"""
import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from e4e.checkpoints.io import seeded_mean_latent
from e4e.checkpoints.official import save_e4e_state
from e4e.errors import E4EError
from e4e.train import dist as D
from e4e.train.data import BatchPlan, prefetch_batches  # noqa: F401 (BatchPlan re-exported)
from e4e.train.phases import NO_PHASES
# the options and presets live in e4e.train.options (no torch there, so `e4e train --help` is instant)
from e4e.train.options import DERIVED_OPTS, PRESET_DEFAULTS, PRESETS, E4ETrainConfig, resolve_config  # noqa: F401
from e4e.train.runs import Deadline, JsonlLog, existing_run, graphed


def progressive_stage(step: int, cfg: E4ETrainConfig, n_styles: int) -> int | str:
    """Official schedule [0, start, start+every, ...]: stage K opens offsets 1..K; no start: all open."""
    if cfg.progressive_start is None:
        return "inference"
    if step < cfg.progressive_start:
        return 0
    return min(1 + (step - cfg.progressive_start) // cfg.progressive_step_every, n_styles - 1)


def progressive_steps(cfg: E4ETrainConfig, n_styles: int) -> list[int] | None:
    """The list the official train script saves in opts."""
    if cfg.progressive_start is None:
        return None
    return [0] + [cfg.progressive_start + i * cfg.progressive_step_every for i in range(n_styles - 1)]


class E4ETrainer:
    def __init__(self, cfg: E4ETrainConfig, info: D.DistInfo | None = None, log=print):
        cfg.validate()
        self.cfg, self.log = cfg, log
        self.preset = cfg.preset()  # resolved once: image size, crop, similarity network
        self.info = info or D.init(cfg.device)
        self.dev = self.info.device
        self.exp = Path(cfg.exp_dir)
        torch.manual_seed(cfg.seed + self.info.rank)
        random.seed(cfg.seed + self.info.rank)
        self._build_models()
        self._build_losses()
        self._build_data()
        self.step = 0
        self.best_val = None
        self.warned_runaway = False  # _warn_runaway logs once per run
        self.ckpt_dir = self.exp / "checkpoints"

    # -- set-up ----------------------------------------------------------------------------------
    def _build_models(self):
        from e4e.checkpoints import load_generator, load_inverter
        from e4e.inverter import Inverter
        from e4e.nets.discriminators import LatentCodesDiscriminator
        from e4e.nets.encoders import EncoderConfig, build_encoder
        cfg, preset = self.cfg, self.preset
        if cfg.checkpoint_path:
            inv = load_inverter(cfg.checkpoint_path, log=self.log)
        else:
            g, avg = load_generator(cfg.stylegan_weights)
            if cfg.stylegan_size and cfg.stylegan_size != g.size:
                raise E4EError(f"stylegan_size={cfg.stylegan_size} but {cfg.stylegan_weights} is {g.size}px")
            if cfg.start_from_latent_avg and avg is None:
                self.log(f"{cfg.stylegan_weights}: no latent_avg; computing it (mean of mapping(z) over 1e5 z)")
                avg = seeded_mean_latent(g)
            kw = {}
            if cfg.encoder_widths:
                kw["widths"] = tuple(cfg.encoder_widths)
            if cfg.encoder_units:
                kw["units"] = tuple(cfg.encoder_units)
            if cfg.encoder_head_width:
                kw["head_width"] = cfg.encoder_head_width
            ecfg = EncoderConfig(kind="e4e" if cfg.encoder_type == "Encoder4Editing" else "psp",
                                 num_layers=cfg.num_layers, mode=cfg.encoder_mode, stylegan_size=g.size,
                                 style_dim=g.style_dim, input_size=cfg.input_size or max(preset["size"]), **kw)
            inv = Inverter(build_encoder(ecfg), g, avg if cfg.start_from_latent_avg else None,
                           output_size=None if g.size == max(preset["size"]) else max(preset["size"]))
            if cfg.encoder_init:  # warm start: a trained encoder, fine-tuned for a further-trained generator
                init_encoder_from(inv.encoder, cfg.encoder_init, self.log)
        self.inverter = inv.to(self.dev)
        self.n_styles = inv.decoder.n_latent
        fast = cfg.impl == "fast"
        self.masked = fast and self.info.world == 1 and hasattr(inv.encoder, "masked_codes")
        inv.decoder.requires_grad_(cfg.train_decoder)
        if self.dev.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
            inv.decoder.use_grouped_conv(False)
        params = list(inv.encoder.parameters()) + (list(inv.decoder.parameters()) if cfg.train_decoder else [])
        from e4e.train.optim import build_optimizer
        self.opt = build_optimizer(cfg.optim_name, params, cfg.learning_rate, foreach=fast)
        self.disc = None
        if cfg.w_discriminator_lambda > 0:
            from e4e.losses import WPool
            self.disc = LatentCodesDiscriminator(inv.decoder.style_dim).to(self.dev)
            self.d_opt = torch.optim.Adam(self.disc.parameters(), lr=cfg.w_discriminator_lr)
            n = cfg.w_pool_size if cfg.use_w_pool else 0
            self.real_pool = WPool(n, seed=cfg.seed * 2 + 1)
            self.fake_pool = WPool(n, seed=cfg.seed * 2 + 2)
        w = self.info.world > 1
        ids = [self.dev.index] if self.dev.type == "cuda" else None
        # closed offsets' heads get no gradient during progressive training
        self.enc = DDP(inv.encoder, device_ids=ids, find_unused_parameters=True) if w else inv.encoder
        self.dec = DDP(inv.decoder, device_ids=ids) if (w and cfg.train_decoder) else inv.decoder
        self.d_train = DDP(self.disc, device_ids=ids) if (w and self.disc is not None) else self.disc
        use_compile = {"on": True, "off": False}.get(cfg.compile, fast and self.dev.type == "cuda" and not w)
        self.compiled = use_compile and self.masked
        mode = cfg.compile_mode  # torch.compile's own names ("default" included)
        self._objective = torch.compile(self.masked_objective, mode=mode) if self.compiled else self.masked_objective
        self._fake_codes = torch.compile(self.masked_codes, mode=mode) if self.compiled else self.masked_codes
        # CUDA graphs: each step starts a new generation; what outlives it (codes for the pools, logs, the
        # last images) is copied out of the graphs' memory
        self.graphed = self.compiled and self.dev.type == "cuda" and graphed(cfg.compile_mode)
        self._masks = {}
        self.clock = NO_PHASES  # bench/train_profile.py times the phases marked in train_step()

    def _build_losses(self):
        cfg, preset = self.cfg, self.preset
        self.lpips = None
        if cfg.lpips_lambda > 0:
            if cfg.perceptual == "lpips":
                from e4e.losses import LPIPS
                if not cfg.lpips_backbone or not cfg.lpips_weights:
                    raise E4EError(f"LPIPS needs the {cfg.lpips_type} backbone and lin weights: pass "
                                   "--lpips-backbone PATH --lpips-weights PATH, or set lpips_lambda=0")
                self.lpips = LPIPS(cfg.lpips_type, cfg.lpips_backbone, cfg.lpips_weights)
            else:
                from e4e.losses import EfficientNetPerceptual
                path = cfg.perceptual_weights
                if not path:
                    from e4e.nets.efficientnet import find_efficientnet_lite0_weights
                    path = find_efficientnet_lite0_weights()
                if not path:
                    raise E4EError("perceptual=efficientnet needs EfficientNet-Lite0 weights: pass "
                                   "--perceptual-weights PATH, or set lpips_lambda=0")
                self.lpips = EfficientNetPerceptual(path)
            self.lpips = self.lpips.to(self.dev)
        self.sim = None
        if cfg.id_lambda > 0:
            if preset["similarity"] == "id":
                from e4e.losses import IDLoss
                if not cfg.id_weights:
                    raise E4EError("the ID loss needs model_ir_se50.pth: pass --id-weights PATH, or set id_lambda=0")
                self.sim = IDLoss.from_weights(cfg.id_weights)
            elif preset["similarity"] == "moco":
                from e4e.losses import MocoLoss
                if not cfg.moco_weights:
                    raise E4EError("the similarity loss needs moco_v2_800ep_pretrain.pt: pass --moco-weights PATH, "
                                   "or set id_lambda=0")
                self.sim = MocoLoss.from_weights(cfg.moco_weights)
            elif preset["similarity"] == "attr":
                from e4e.losses import AttributeSimilarityLoss
                if not cfg.sim_weights:
                    raise E4EError("the similarity loss needs the avatar similarity network: pass --sim-weights "
                                   "PATH, or set id_lambda=0")
                self.sim = AttributeSimilarityLoss.from_weights(cfg.sim_weights)
            else:
                raise E4EError(f"dataset_type {cfg.dataset_type} has no similarity network: set id_lambda=0")
            self.sim = self.sim.to(self.dev)

    def _build_data(self):
        from e4e.data.folder import ImageFolderDataset
        cfg, size = self.cfg, self.preset["size"]
        hw = size if size[0] != size[1] else size[0]
        self.train_set = ImageFolderDataset(cfg.train_data, hw, split="train", fit="stretch")
        test_root = cfg.test_data or cfg.train_data
        try:
            self.test_set = ImageFolderDataset(test_root, hw, split="test", fit="stretch")
        except E4EError:
            self.test_set = None
        if self.test_set is not None and (len(self.test_set) == 0 or (
                not cfg.test_data and self.test_set.paths == self.train_set.paths)):
            self.test_set = None
        if len(self.train_set) == 0:
            raise E4EError(f"{cfg.train_data}: no readable training images")
        if cfg.batch_size % self.info.world:
            raise E4EError(f"batch_size {cfg.batch_size} is not divisible by {self.info.world} processes")
        self.plan = BatchPlan(len(self.train_set), cfg.batch_size, cfg.seed)
        self.device_images = None
        if cfg.impl == "fast" and self.dev.type == "cuda":
            h, w = (size, size) if isinstance(size, int) else size
            need = len(self.train_set) * 3 * h * w
            free, _ = torch.cuda.mem_get_info(self.dev)
            if need < free // 4:  # the models and activations keep the rest
                from e4e.train.data import DeviceImages
                self.device_images = DeviceImages(self.train_set, self.dev, threads=max(1, cfg.workers),
                                                  desc="load training images")
            else:
                self.log(f"{cfg.train_data}: {need / 2**30:.1f} GiB of images do not fit a quarter of the free "
                         "GPU memory; decoding them per batch instead")

    def batches(self, start: int, stop: int):
        """Yields (step, this rank's batch on the device) for steps start..stop-1: gathered on the GPU
        when the images are resident there, else decoded ahead by `workers` threads (the same images)."""
        info = self.info
        if self.device_images is not None:
            for s in range(start, stop):
                yield s, self.device_images.batch(self.plan, s, info.rank, info.world)
            return
        for s, x in prefetch_batches(self.train_set, self.plan, start, stop, info.rank, info.world,
                                     self.cfg.workers):
            yield s, x.to(self.dev, non_blocking=True)

    # -- losses ----------------------------------------------------------------------------------
    def forward(self, x, stage, randomize_noise: bool = True, ddp: bool = True):
        """ddp=False bypasses the DDP wrappers: rank 0 alone validates, and a wrapped forward would wait
        for the other ranks in its buffer broadcast."""
        self.inverter.encoder.set_stage(stage) if hasattr(self.inverter.encoder, "set_stage") else None
        enc, dec = (self.enc, self.dec) if ddp else (self.inverter.encoder, self.inverter.decoder)
        codes = enc(self.inverter.resize_input(x))
        if self.inverter.latent_avg is not None:
            codes = codes + self.inverter.latent_avg.unsqueeze(0)
        y_hat, _ = dec(codes, input_is_latent=True, randomize_noise=randomize_noise)
        return self._to_target(y_hat), codes

    def _to_target(self, y_hat):
        """Generator output -> the target's size and crop."""
        if self.inverter.output_size and y_hat.shape[-1] != self.inverter.output_size:
            y_hat = F.adaptive_avg_pool2d(y_hat, (self.inverter.output_size,) * 2)
        crop = self.preset["crop"]
        if crop:
            y_hat = y_hat[:, :, crop[0]:crop[1], :]
        return y_hat

    def offset_mask(self, stage) -> torch.Tensor:
        """The stage as the (n_styles,) 0/1 tensor masked_codes takes (one per stage, kept on the device)."""
        if stage not in self._masks:
            self._masks[stage] = self.inverter.encoder.offset_mask(stage, self.dev)
        return self._masks[stage]

    def masked_codes(self, x, mask):
        """impl=fast: encoder codes for x at the stage `mask` encodes, latent_avg added (as forward's)."""
        codes = self.inverter.encoder.masked_codes(self.inverter.resize_input(x), mask)
        if self.inverter.latent_avg is not None:
            codes = codes + self.inverter.latent_avg.unsqueeze(0)
        return codes

    def masked_objective(self, x, mask, progressive: bool, randomize_noise: bool = True):
        """impl=fast: forward + encoder_loss in one function (compiled whole): -> (loss, logs, y_hat, codes).
        `progressive` (a Python bool: the stage is not "inference") switches L_d-reg on."""
        codes = self.masked_codes(x, mask)
        y_hat, _ = self.inverter.decoder(codes, input_is_latent=True, randomize_noise=randomize_noise)
        y_hat = self._to_target(y_hat)
        loss, logs = self.encoder_loss(x, x, y_hat, codes, "masked" if progressive else "inference", mask=mask)
        return loss, logs, y_hat, codes

    def _warn_runaway(self, codes) -> None:
        """Log once when a style's code grows past 100x the median style's size (see e4e.metrics.runaway_styles)."""
        from e4e.metrics import runaway_styles, style_norms
        if self.warned_runaway or self.inverter.latent_avg is None:
            return
        norms = style_norms(codes, self.inverter.latent_avg).cpu()
        styles = runaway_styles(norms)
        if styles:
            self.warned_runaway = True
            self.log(f"step {self.step}: style(s) {styles} run away ({', '.join(f'{float(norms[i]):.3g}' for i in styles)}"
                     f" against a median of {float(norms.median()):.3g}): the generator ignores their scale; "
                     "bound them with --w_norm_lambda (scripts/rescale_style_heads.py first, if already far)")

    def encoder_loss(self, x, y, y_hat, codes, stage, mask=None):
        """The encoder objective. With `mask` (impl=fast; stage is then "masked" or "inference") the open
        styles come from the mask: the adversarial loss is the mean over styles 0..K of D's loss on every
        style, weighted 1 on open rows and 0 elsewhere, and L_d-reg sums the norms of the open offsets
        only (closed offsets are exactly 0 there; their norms are taken of a constant, so no 0/0 gradient)."""
        from e4e.losses import delta_norms, g_nonsaturating_loss
        cfg, logs = self.cfg, {}
        loss = 0.0
        if self.disc is not None:
            if mask is None:
                dims = self.n_styles if stage == "inference" else stage + 1
                adv = g_nonsaturating_loss(self.disc(codes[:, :dims].reshape(-1, codes.shape[-1])).float())
            else:
                rows = torch.ones_like(mask) if stage == "inference" else torch.cat([mask.new_ones(1), mask[1:]])
                per = F.softplus(-self.disc(codes.reshape(-1, codes.shape[-1])).float()).view(codes.shape[0], -1)
                adv = (per * rows).sum() / (codes.shape[0] * rows.sum())
            logs["encoder_discriminator_loss"] = adv.detach()
            loss = loss + cfg.w_discriminator_lambda * adv
        if stage != "inference":
            if mask is None:
                d_reg = delta_norms(codes.float(), stage, cfg.delta_norm).sum()
            else:
                c = codes.float()
                open_ = mask[1:, None] > 0
                deltas = torch.where(open_, c[:, 1:] - c[:, :1], torch.ones_like(c[:, 1:]))
                d_reg = (torch.linalg.vector_norm(deltas, ord=cfg.delta_norm, dim=2).mean(dim=0) * mask[1:]).sum()
            logs["total_delta_loss"] = d_reg.detach()
            loss = loss + cfg.delta_norm_lambda * d_reg
        if cfg.w_norm_lambda > 0:
            c = codes.float()
            if self.inverter.latent_avg is not None:
                c = c - self.inverter.latent_avg.float().unsqueeze(0)
            w_norm = torch.linalg.vector_norm(c.flatten(1), dim=1).mean()
            logs["loss_w_norm"] = w_norm.detach()
            loss = loss + cfg.w_norm_lambda * w_norm
        if self.sim is not None:
            sim = self.sim(y_hat.float(), y, x)
            logs["loss_id"], logs["id_improve"] = sim.loss.detach(), sim.improvement
            loss = loss + cfg.id_lambda * sim[0]
        l2 = F.mse_loss(y_hat.float(), y)
        logs["loss_l2"] = l2.detach()
        loss = loss + cfg.l2_lambda * l2
        if self.lpips is not None:
            lp = self.lpips(y_hat.float(), y)
            logs["loss_lpips"] = lp.detach()
            loss = loss + cfg.lpips_lambda * lp
        logs["loss"] = loss.detach()
        return loss, logs

    @torch.no_grad()
    def discriminator_inputs(self, x, stage, z):
        """What the latent discriminator sees this step (official sample_real_and_fake_latents): real codes
        mapping(z) (B, D) and fake codes = encoder codes for x + latent_avg (the codes fed to the generator),
        open styles only, through the W pools, one style per sample (B, D)."""
        real_w = self.inverter.decoder.mapping(z)
        if self.masked:
            fake_w = self._fake_codes(x, self.offset_mask(stage))
            if self.graphed:
                fake_w = fake_w.clone()
        else:
            self.inverter.encoder.set_stage(stage) if hasattr(self.inverter.encoder, "set_stage") else None
            fake_w = self.inverter.encoder(self.inverter.resize_input(x))
            if self.inverter.latent_avg is not None:
                fake_w = fake_w + self.inverter.latent_avg.unsqueeze(0)
        if stage != "inference":
            fake_w = fake_w[:, :stage + 1]
        if self.cfg.use_w_pool:
            real_w = self.real_pool.query(real_w)
            fake_w = self.fake_pool.query(fake_w)
        if fake_w.ndim == 3:
            fake_w = fake_w[:, 0]
        return real_w, fake_w

    def discriminator_loss(self, real_w, fake_w):
        """Logistic loss of the latent discriminator on given codes -> (loss, real logits, fake logits)."""
        from e4e.losses import d_logistic_loss
        real_pred, fake_pred = self.d_train(real_w), self.d_train(fake_w)
        return d_logistic_loss(real_pred, fake_pred), real_pred, fake_pred

    def discriminator_r1(self, real_w):
        """Lazy R1 on given real codes (r1/2 * d_reg_every * E||dD/dw||^2), with the 0 * pred term that
        keeps every parameter in the graph (DDP)."""
        from e4e.losses import r1_penalty
        real_w = real_w.detach().requires_grad_(True)
        real_pred = self.d_train(real_w)
        r1 = r1_penalty(real_pred, real_w, gamma=self.cfg.r1, every=self.cfg.d_reg_every)
        return r1, (r1 + 0 * real_pred[0]).sum()

    def discriminator_step(self, x, stage):
        self.disc.requires_grad_(True)
        z = torch.randn(x.shape[0], self.inverter.decoder.style_dim, device=self.dev)
        real_w, fake_w = self.discriminator_inputs(x, stage, z)
        self.clock.mark("latent D: codes (mapping, encoder, pools)")
        loss, real_pred, fake_pred = self.discriminator_loss(real_w, fake_w)
        self.d_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.d_opt.step()
        self.clock.mark("latent D: loss + Adam")
        logs = {"discriminator_loss": loss.detach(),
                "discriminator_accuracy": ((real_pred > 0).float().mean() + (fake_pred < 0).float().mean()) / 2,
                "discriminator_real_score": real_pred.mean().detach(),
                "discriminator_fake_score": fake_pred.mean().detach()}
        if self.step % self.cfg.d_reg_every == 0:
            r1, r1_objective = self.discriminator_r1(real_w)
            self.d_opt.zero_grad(set_to_none=True)
            r1_objective.backward()
            self.d_opt.step()
            logs["discriminator_r1_loss"] = r1.detach()
            self.clock.mark("latent D: R1")
        self.disc.requires_grad_(False)  # the encoder step needs D's input gradient only
        return logs

    # -- checkpoints -----------------------------------------------------------------------------
    def opts(self) -> dict:
        o = asdict(self.cfg)
        o["stylegan_size"] = self.inverter.decoder.size
        o["progressive_steps"] = progressive_steps(self.cfg, self.n_styles)
        o["save_interval"] = self.cfg.save_interval or self.cfg.max_steps
        return o

    def state(self) -> dict:
        from e4e.checkpoints.official import e4e_training_state
        rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if self.dev.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.dev)
        disc = None
        if self.disc is not None:
            disc = {"model": self.disc.state_dict(), "optimizer": self.d_opt.state_dict(),
                    "pools": {"real": self.real_pool.state_dict(), "fake": self.fake_pool.state_dict()}}
        return e4e_training_state(self.inverter, self.opts(), self.step, self.opt.state_dict(), self.best_val,
                                  rng, disc)

    def save(self, name: str = "last.pt") -> Path:
        """Write the checkpoint (once per step: a second call at the same step returns the same file)."""
        path = self.ckpt_dir / name
        if getattr(self, "_saved", None) == (name, self.step) and path.is_file():
            return path
        save_e4e_state(path, self.state())
        self._saved = (name, self.step)
        return path

    def mark_best(self, last: Path) -> Path:
        """best_model.pt = the checkpoint just written, as a hard link (no second copy on disk; a later
        last.pt replaces its own name only, so the link keeps the best weights), a copy where the
        filesystem has no links."""
        import os
        import shutil
        best = self.ckpt_dir / "best_model.pt"
        tmp = best.with_name(best.name + ".tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(last, tmp)
        except OSError:
            shutil.copyfile(last, tmp)
        tmp.replace(best)
        # last.pt was written before this validation, so it records the previous best loss: the new one
        # goes beside it (read back by resume)
        from e4e.outputs import atomic_write
        rec = json.dumps({"step": self.step, "loss": self.best_val})
        atomic_write(self.ckpt_dir / "best.json", lambda f: f.write(rec), mode="w")
        return best

    def resume(self, path=None) -> bool:
        path = Path(path) if path else self.ckpt_dir / "last.pt"
        if not path.is_file():
            return False
        from e4e.checkpoints.io import load_state_dict_checked
        from e4e.checkpoints.official import load_e4e_state, load_inverter_state
        st = load_e4e_state(path, with_discriminator=self.disc is not None)
        try:
            load_inverter_state(self.inverter, st, path)
            self.opt.load_state_dict(st["optimizer"])
            if self.disc is not None:
                load_state_dict_checked(self.disc, st["discriminator_state_dict"], f"{path}: discriminator")
                self.d_opt.load_state_dict(st["discriminator_optimizer_state_dict"])
                self.real_pool.load_state_dict(st["w_pools"]["real"])
                self.fake_pool.load_state_dict(st["w_pools"]["fake"])
            self.step, self.best_val = int(st["global_step"]), st.get("best_val_loss")
            best = self.ckpt_dir / "best.json"
            if best.is_file():
                rec = json.loads(best.read_text())
                if rec.get("step", 1 << 62) <= self.step:
                    self.best_val = rec.get("loss", self.best_val)
            rng = st["rng"]
            torch.set_rng_state(rng["torch"])
            random.setstate(_as_tuple(rng["python"]))
            if "cuda" in rng and self.dev.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.dev)
        except E4EError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            msg = " ".join(str(e).split())[:200] or type(e).__name__
            raise E4EError(f"{path}: does not fit this run's models/optimizer (other options?): {msg}") from None
        self.log(f"resumed from {path} at step {self.step}")
        return True

    # -- validation ------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, stage) -> dict | None:
        if self.test_set is None:
            return None
        enc_mode = self.inverter.encoder.training
        self.inverter.encoder.eval()
        sums, n = {}, 0
        bs = self.cfg.test_batch_size
        batches = min(self.cfg.val_batches, math.ceil(len(self.test_set) / bs))
        for b in tqdm(range(batches), desc=f"validate @{self.step}", unit="batch", leave=False,
                      disable=not self.info.main, dynamic_ncols=True):
            idx = range(b * bs, min((b + 1) * bs, len(self.test_set)))
            x = torch.stack([self.test_set[i] for i in idx]).to(self.dev)
            y_hat, codes = self.forward(x, stage, randomize_noise=False, ddp=False)
            _, logs = self.encoder_loss(x, x, y_hat, codes, stage)
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
            n += len(idx)
            if b == 0:  # the validation grid: test images | reconstructions
                self.save_images(x, y_hat, f"val_{self.step:06d}.png")
        self.inverter.encoder.train(enc_mode)
        return {k: v / n for k, v in sums.items()}

    @torch.no_grad()
    def save_images(self, x, y_hat, name):
        from e4e.imageio import save_grid
        k = min(8, x.shape[0])
        pairs = torch.stack([x[:k].float().cpu(), y_hat[:k].float().cpu()], 1).flatten(0, 1)
        save_grid(pairs.clamp(-1, 1), self.exp / "images" / name, nrow=2)

    # -- one step --------------------------------------------------------------------------------
    def train_step(self, step: int, x: torch.Tensor) -> dict:
        """One training step at global step `step` on this rank's batch x (on the device): the latent
        discriminator's step (lazy R1 included) if it is on, then the encoder's. -> the logged scalars
        (tensors: nothing here waits for the GPU). Sets self.step = step + 1; self.last = (y_hat, codes)."""
        cfg = self.cfg
        self.step, clock = step, self.clock
        stage = progressive_stage(step, cfg, self.n_styles)
        if self.graphed:
            torch.compiler.cudagraph_mark_step_begin()
        clock.start()
        logs = self.discriminator_step(x, stage) if self.disc is not None else {}
        amp = torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=cfg.bf16 and self.dev.type == "cuda")
        with amp:
            if self.masked:
                loss, enc_logs, y_hat, codes = self._objective(x, self.offset_mask(stage), stage != "inference")
                if self.graphed:
                    enc_logs = {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in enc_logs.items()}
                    y_hat, codes = y_hat.detach().clone(), codes.detach().clone()
            else:
                y_hat, codes = self.forward(x, stage)
                loss, enc_logs = self.encoder_loss(x, x, y_hat, codes, stage)
        clock.mark("encoder objective: forward")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        clock.mark("encoder objective: backward")
        if self.masked:  # what the reference forward leaves without a gradient, the optimizer must skip
            for p in self.inverter.encoder.closed_parameters(stage):
                p.grad = None
        self.opt.step()
        clock.mark("Ranger")
        logs.update(enc_logs)
        self.step = step + 1
        self.last = (y_hat, codes)
        return logs

    # -- main loop -------------------------------------------------------------------------------
    def _mean_over_ranks(self, logs: dict) -> dict:
        """Logged scalars are means over the global batch, not rank 0's share of it."""
        if self.info.world == 1 or not logs:
            return logs
        keys = sorted(logs)
        vals = torch.stack([torch.as_tensor(logs[k], dtype=torch.float32, device=self.dev).reshape(()) for k in keys])
        return dict(zip(keys, D.all_reduce_mean(vals, self.info)))

    def train(self) -> Path:
        cfg, info = self.cfg, self.info
        if info.main:
            self.exp.mkdir(parents=True, exist_ok=True)
            (self.exp / "opts.json").write_text(json.dumps(self.opts(), indent=2))
        writer = _tensorboard(self.exp / "tb") if info.main else None
        logf = JsonlLog(self.exp / "log.jsonl", resume_step=self.step, enabled=info.main)
        self.inverter.encoder.train()
        if not cfg.train_decoder:
            self.inverter.decoder.eval()
        save_every = cfg.save_interval or cfg.max_steps
        deadline = Deadline(cfg.time_limit_min)
        bar = tqdm(total=cfg.max_steps, initial=self.step, desc="train", disable=not info.main, dynamic_ncols=True)
        t0, s0 = time.time(), self.step
        for step, x in self.batches(self.step, cfg.max_steps):
            if deadline.passed(step, info):
                self.log(f"time limit of {cfg.time_limit_min} min reached at step {step}") if info.main else None
                break
            stage = progressive_stage(step, cfg, self.n_styles)
            logs = self.train_step(step, x)
            y_hat, codes = self.last
            bar.update(1)
            if self.step % cfg.board_interval == 0 or self.step == cfg.max_steps:
                from e4e.metrics import delta_norms as offset_stats
                logs["offset_norm_mean"] = offset_stats(codes.detach().float())["mean"]
                logs = self._mean_over_ranks(logs)  # every rank takes part; rank 0 writes
            if info.main and (self.step % cfg.board_interval == 0 or self.step == cfg.max_steps):
                self._warn_runaway(codes.detach())
                elapsed = time.time() - t0
                row = {k: round(float(v), 6) for k, v in logs.items()}
                row.update(step=self.step, stage=self.n_styles - 1 if stage == "inference" else stage,
                           steps_per_s=round((self.step - s0) / max(elapsed, 1e-9), 3), time_s=round(elapsed, 3))
                logf.write(row)
                if writer:
                    for k, v in row.items():
                        if k != "step":
                            writer.add_scalar(f"train/{k}", v, self.step)
                bar.set_postfix(loss=row["loss"], stage=row["stage"])
            if info.main and self.step % cfg.image_interval == 0:
                self.save_images(x, y_hat.detach(), f"train_{self.step:06d}.png")
            if self.step % cfg.val_interval == 0 or self.step == cfg.max_steps:
                # checkpoint first: a validation that crashes or is killed loses nothing
                last = self.save("last.pt") if info.main and self.test_set is not None else None
                val = self.validate(stage) if info.main else None
                if val is not None:
                    logf.write({"val": val, "step": self.step})
                    if writer:
                        for k, v in val.items():
                            writer.add_scalar(f"test/{k}", v, self.step)
                    if self.best_val is None or val["loss"] < self.best_val:
                        self.best_val = val["loss"]
                        self.mark_best(last)
            if self.step % save_every == 0 and info.main:
                self.save("last.pt")
            D.barrier(info) if self.step % save_every == 0 else None
        bar.close()
        final = self.ckpt_dir / "last.pt"
        if info.main:
            final = self.save("last.pt")
            self.inverter.encoder.eval()
            self.inverter.save(self.exp / "inverter.safetensors",
                               info={"steps": self.step, "encoder_type": cfg.encoder_type,
                                     "dataset_type": cfg.dataset_type})
            logf.close()
            if writer:
                writer.close()
        D.barrier(info)
        return final


def init_encoder_from(encoder: torch.nn.Module, path: str, log=print) -> None:
    """Copy the encoder weights of the inverter checkpoint at `path` (any format load_inverter reads)
    into `encoder`; a different architecture is a one-line error naming the file and the flag."""
    from e4e.checkpoints import load_inverter
    src = load_inverter(path, log=log).encoder.state_dict()
    from e4e.checkpoints.strict import mismatch
    own = encoder.state_dict()
    bad = mismatch(own, src)
    if bad:
        raise E4EError(f"--encoder_init {path}: its encoder has another architecture than this run's "
                       f"({bad}); match --encoder_type/--encoder_widths/...")
    encoder.load_state_dict({k: v.to(own[k].dtype) for k, v in src.items()})
    log(f"encoder initialised from {path}")


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def _tensorboard(path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: log.jsonl always has every scalar
        return None
    return SummaryWriter(str(path))


def train_e4e(cfg: E4ETrainConfig, resume: bool = False, log=print) -> Path:
    """Train into cfg.exp_dir. An exp_dir that already holds a run is continued with resume=True and
    refused without it (restarting would overwrite its checkpoints and mix two runs in its log)."""
    cfg.validate()
    found = existing_run(Path(cfg.exp_dir))
    if found and not resume:
        raise E4EError(f"{cfg.exp_dir} already holds a run ({found}): pass --resume to continue it, or choose "
                       "another exp_dir to start a new one")
    from e4e.outputs import writable_dir
    writable_dir(cfg.exp_dir)  # before the models load: a bad exp_dir costs one line
    info = D.init(cfg.device)
    try:
        trainer = E4ETrainer(cfg, info, log=log)
        if resume and not trainer.resume():
            log(f"nothing to resume in {trainer.ckpt_dir}; starting from step 0")
        return trainer.train()
    finally:
        D.cleanup(info)
