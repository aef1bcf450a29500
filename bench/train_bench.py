"""Training throughput of both trainers against the hardware floor, old and new in one run. One table.

    python bench/train_bench.py --json rows.json                       # GPU: every row below
    python bench/train_bench.py --device cpu --configs tiny --steps 4  # a smoke run

GAN rows (`e4e train-generator`): config x trainer, where trainer is
  - old: the trainer as it was before this round (a copy of its file given with --old-trainer, run
    through its own train_gan on the same random images; its rate is read back from its log),
  - reference: impl="reference" (eager steps, images decoded from disk every step, plain Adam),
  - fast: impl="fast" (dataset resident on the GPU as uint8, compiled main steps, fused Adam).
Each times whole lazy-regularisation cycles (d_reg_every steps: R1 and path-length steps included)
after a warm-up that compiles every graph. Columns: images/s, ms/step, peak memory, FLOPs per step
(counted with FlopCounterMode over one eager cycle: the same arithmetic for every trainer), achieved
TFLOP/s and its share of the bf16 matmul rate measured in the same run, and the first-step (compile) time.
`--second-process` also starts a fresh process for the fast rows and reports its first-step time, which
shows what the on-disk compile caches save.

e4e rows (`e4e train`, --e4e-configs): E4ETrainer.train_step, one whole training step (latent
discriminator step with lazy R1 every d_reg_every=16 steps, then the encoder step: encoder, generator,
L2 + perceptual + similarity + adversarial losses), fed by the trainer's own batches(). Per config three
rows: impl=reference in fp32 (TF32 on CUDA: today's default), reference in bf16, fast in bf16 (compiled
on CUDA). Configs: ffhq (the official one: IR-SE50 at 256 px, 1024 px generator, LPIPS alex + ArcFace ID
loss, batch 8), avatar128 (scripts/avatar_gpu.sh's encoder: small IR-SE at 128 px, EfficientNet-Lite0
perceptual, attribute-network L_sim, batch 32), tiny (CPU smoke). Every offset is open
(progressive_start=None). FLOPs per step as for the GAN rows, over one eager reference cycle.
--e4e-warmup/--e4e-steps override --warmup/--steps for these rows (FFHQ steps are slow):

    python bench/train_bench.py --configs --e4e-configs ffhq avatar128 --e4e-warmup 32 --e4e-steps 64

Weights and images are random: speed does not depend on their values.
"""
import argparse
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from bench import matmul_peak, sync  # noqa: E402

GAN_CONFIGS = {
    # the avatar-128 generator (issue #15's config)
    "avatar128": dict(size=128, style_dim=512, n_mlp=8, channel_multiplier=1, channel_max=256, batch=64),
    # the embedded emoji-64 generator's config (docs/model_card.md)
    "emoji64": dict(size=64, style_dim=128, n_mlp=4, channel_multiplier=1, channel_max=128, batch=64),
    "tiny": dict(size=16, style_dim=16, n_mlp=2, channel_multiplier=1, channel_max=8, batch=4),
}


def write_images(folder: Path, n: int, size: int) -> None:
    from e4e.imageio import to_pil
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for i in range(0, n, 64):
        for j, im in enumerate(to_pil(torch.rand(min(64, n - i), 3, size, size, generator=g) * 2 - 1)):
            im.save(folder / f"{i + j:06d}.png", compress_level=1)


def gan_config(name, data, out, device, impl, **kw):
    from e4e.train.stylegan import GANTrainConfig
    c = {**GAN_CONFIGS[name], "bf16": device != "cpu", "workers": 8, **kw}
    return GANTrainConfig(data=str(data), out=str(out), device=device, impl=impl, **c)


def gan_flops_per_step(cfg) -> float:
    """FLOPs of one lazy-regularisation cycle of eager steps, divided by its length."""
    from torch.utils.flop_counter import FlopCounterMode

    from e4e.train.stylegan import GANTrainer
    tr = GANTrainer(dataclasses.replace(cfg, impl="reference", compile="off"), _info(cfg.device))
    real = torch.rand(cfg.batch, 3, cfg.size, cfg.size, device=cfg.device) * 2 - 1
    cycle = cfg.d_reg_every
    with FlopCounterMode(display=False) as fc:
        for _ in range(cycle):
            tr.step(real)
    return fc.get_total_flops() / cycle


def _info(device):
    from e4e.train import dist as D
    return D.DistInfo(device=torch.device(device))


def time_gan(cfg, warmup: int, steps: int) -> dict:
    """Steps of the new trainer (either impl) fed as train_gan feeds them; -> rates and memory."""
    from e4e.train.stylegan import GANTrainer, load_training_data, training_batches
    dev = torch.device(cfg.device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    images, plan = load_training_data(cfg, dev)
    tr = GANTrainer(cfg, _info(cfg.device))
    batches = training_batches(cfg, images, plan, 0, warmup + steps, tr.info)
    t = time.perf_counter()
    first = None
    for s, real in batches:
        if s == warmup:
            sync(dev)
            t = time.perf_counter()
        tr.step(real.to(dev, non_blocking=True))
        if s == 0:
            sync(dev)
            first = time.perf_counter() - t
    sync(dev)
    el = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated(dev) / 2 ** 30 if dev.type == "cuda" else float("nan")
    return dict(steps_per_s=steps / el, images_per_s=steps * cfg.batch / el, ms_per_step=1e3 * el / steps,
                peak_gib=peak, first_step_s=first)


def time_old_gan(path: Path, cfg, steps: int) -> dict:
    """The pre-round trainer file, run through its own train_gan; its rate from its log (steady state)."""
    spec = importlib.util.spec_from_file_location("e4e_old_stylegan", path)
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    ocfg = old.GANTrainConfig(**{k: v for k, v in cfg.__dict__.items() if k in old.GANTrainConfig.__dataclass_fields__})
    ocfg.steps, ocfg.log_every, ocfg.sample_every, ocfg.save_every = steps, cfg.d_reg_every, 10 ** 9, 10 ** 9
    dev = torch.device(cfg.device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    old.train_gan(ocfg)
    rows = [json.loads(x) for x in open(Path(ocfg.out) / "log.jsonl")]
    # each row's steps_per_s is cumulative since the start: recover times, rate over the later rows
    times = [r["step"] / r["steps_per_s"] for r in rows]
    a, b = len(rows) // 3, len(rows) - 1
    sps = (rows[b]["step"] - rows[a]["step"]) / (times[b] - times[a])
    peak = torch.cuda.max_memory_allocated(dev) / 2 ** 30 if dev.type == "cuda" else float("nan")
    # its log has no per-step time, so the first step's (compile-free) wait is not known: left empty
    return dict(steps_per_s=sps, images_per_s=sps * cfg.batch, ms_per_step=1e3 / sps, peak_gib=peak,
                first_step_s=None)


# -- e4e rows -----------------------------------------------------------------------------------------
# Each config: the generator (GeneratorConfig fields), the frozen networks its losses need (written with
# random weights in the format their loaders read), the image size written, and E4ETrainConfig fields.
E4E_CONFIGS = {
    # the official FFHQ encoder: IR-SE50 at 256 px (official widths), the 1024 px StyleGAN2 (config-f),
    # LPIPS alex + the ArcFace ID loss, latent discriminator with a W pool; progressive_start=None: every
    # offset open (the long-run regime, one graph throughout)
    "ffhq": dict(
        generator=dict(size=1024, style_dim=512, n_mlp=8, channel_multiplier=2),
        nets=("lpips", "id"), image_size=256, images=256,
        train=dict(dataset_type="ffhq_encode", encoder_type="Encoder4Editing", num_layers=50, encoder_mode="ir_se",
                   input_size=256, lpips_lambda=0.8, lpips_type="alex", id_lambda=0.1, w_discriminator_lambda=0.1,
                   use_w_pool=True, progressive_start=None, batch_size=8)),
    # the embedded avatar encoder (scripts/avatar_gpu.sh, encoder_flags ... e4e): the small IR-SE at 128 px,
    # EfficientNet-Lite0 perceptual, L_sim on the attribute network, batch 32 (bf16 there: the rows set it)
    "avatar128": dict(
        generator=dict(size=128, style_dim=512, n_mlp=8, channel_multiplier=1, channel_max=256),
        nets=("efficientnet", "sim"), image_size=128, images=512,
        train=dict(dataset_type="avatar_encode", encoder_type="Encoder4Editing", encoder_mode="ir_se",
                   encoder_widths=[32, 48, 64, 128], encoder_units=[2, 2, 3, 2], encoder_head_width=64,
                   perceptual="efficientnet", lpips_lambda=0.8, l2_lambda=1.0, id_lambda=0.5, learning_rate=3e-4,
                   w_discriminator_lambda=0.1, use_w_pool=True, delta_norm_lambda=2e-4, progressive_start=None,
                   batch_size=32)),
    # CPU smoke: a 16 px generator, a tiny encoder, LPIPS alex, the discriminator on, R1 every 2 steps
    "tiny": dict(
        generator=dict(size=16, style_dim=32, n_mlp=2, channel_max=16),
        nets=("lpips",), image_size=64, images=8,
        train=dict(dataset_type="emoji_encode", encoder_widths=[8, 16, 24, 32], encoder_units=[1, 1, 1, 1],
                   input_size=64, encoder_mode="ir", lpips_lambda=0.8, lpips_type="alex", id_lambda=0.0,
                   w_discriminator_lambda=0.1, use_w_pool=True, progressive_start=None, batch_size=2,
                   d_reg_every=2)),
}
# the avatar similarity network's architecture (models/avatar/sim_resnet_A.safetensors); its heads do not
# enter L_sim (the pooled embedding does), so a few stand in for its 18
SIM_NET = dict(arch="resnet", size=64, width=32, blocks=1, binary=["smile", "glasses", "facial_hair", "hat"])


def e4e_world(name: str, root: Path) -> dict:
    """Random generator, loss-network weight files and images for config `name` under root/name
    (written once) -> the E4ETrainConfig fields that point at them, with the config's own."""
    from e4e.checkpoints import save_rosinality
    from e4e.nets.stylegan2 import Generator, GeneratorConfig
    spec = E4E_CONFIGS[name]
    d = root / f"e4e_{name}"
    d.mkdir(parents=True, exist_ok=True)
    kw = dict(spec["train"], train_data=str(d / "data"), stylegan_weights=str(d / "g.pt"))
    torch.manual_seed(0)
    if not (d / "g.pt").is_file():
        g = Generator(GeneratorConfig(**spec["generator"])).eval()
        with torch.no_grad():
            save_rosinality(d / "g.pt", g, latent_avg=g.mean_latent(4096))
        del g
    if "lpips" in spec["nets"]:  # torchvision alexnet.features + LPIPS lin layers (tests/test_train_e4e_step.py)
        from e4e.nets.perceptual import lpips_backbone
        if not (d / "lin.pth").is_file():
            backbone = lpips_backbone("alex")
            torch.save({f"features.{k}": v for k, v in backbone.features.state_dict().items()}, d / "alex.pth")
            torch.save({f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(backbone.channels)},
                       d / "lin.pth")
        kw.update(lpips_backbone=str(d / "alex.pth"), lpips_weights=str(d / "lin.pth"))
    if "id" in spec["nets"]:  # model_ir_se50.pth: the plain ArcFace Backbone state dict (load_ir_se50)
        from e4e.nets.identity import Backbone
        if not (d / "model_ir_se50.pth").is_file():
            torch.save(Backbone(input_size=112, num_layers=50, drop_ratio=0.6, mode="ir_se").state_dict(),
                       d / "model_ir_se50.pth")
        kw.update(id_weights=str(d / "model_ir_se50.pth"))
    if "efficientnet" in spec["nets"]:  # efficientnet-lite0-57934424.pth: the EfficientNetLite state dict
        from e4e.nets.efficientnet import EfficientNetLite
        if not (d / "efficientnet-lite0.pth").is_file():
            torch.save(EfficientNetLite().state_dict(), d / "efficientnet-lite0.pth")
        kw.update(perceptual_weights=str(d / "efficientnet-lite0.pth"))
    if "sim" in spec["nets"]:  # an attribute network in e4e's safetensors format (e4e train-classifier's)
        from e4e.checkpoints.attributes import save_attribute_net
        from e4e.nets.attributes import AttributeNet, AttributeNetConfig
        if not (d / "sim.safetensors").is_file():
            save_attribute_net(d / "sim.safetensors", AttributeNet(AttributeNetConfig(**SIM_NET)))
        kw.update(sim_weights=str(d / "sim.safetensors"))
    # no labels.csv: split="train" then reads every image in the folder (and the test split, the same
    # files, is dropped: no validation set, which timing does not use)
    if not (d / "data").is_dir():
        write_images(d / "data", max(spec["images"], 2 * spec["train"]["batch_size"]), spec["image_size"])
    return kw


def e4e_config(kw: dict, device: str, out: Path, impl: str, bf16: bool, compile: str = "auto", max_steps: int = 1):
    from e4e.train.e4e import E4ETrainConfig
    return E4ETrainConfig(**kw, device=device, exp_dir=str(out), impl=impl, bf16=bf16, compile=compile,
                          workers=8, max_steps=max(1, max_steps))


def e4e_trainer(cfg):
    """E4ETrainer in the modes its train() loop sets before the first step (encoder training, frozen
    generator in eval)."""
    from e4e.train.e4e import E4ETrainer
    tr = E4ETrainer(cfg, _info(cfg.device), log=lambda *_: None)
    tr.inverter.encoder.train()
    if not cfg.train_decoder:
        tr.inverter.decoder.eval()
    return tr


def _free(dev):
    import gc
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


class _NoModuleTracker:
    """FlopCounterMode's module tracker, reduced to its 'Global' total. Its real one hooks the backward of
    every module input, which breaks autograd.grad with respect to a leaf fed straight to a module
    ("A leaf node was passed to _will_engine_execute_node"): the latent R1 does exactly that."""
    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def e4e_flops_per_step(cfg) -> float:
    """FLOPs of one lazy-R1 cycle (d_reg_every steps from step 0) of eager reference steps, per step:
    FlopCounterMode's total, with the module tracker left out (see _NoModuleTracker)."""
    from torch.utils.flop_counter import FlopCounterMode

    cycle = cfg.d_reg_every
    cfg = dataclasses.replace(cfg, impl="reference", compile="off", max_steps=cycle)
    tr = e4e_trainer(cfg)
    batches = list(tr.batches(0, cycle))
    fc = FlopCounterMode(display=False)
    fc.mod_tracker = _NoModuleTracker()
    with fc:
        for step, x in batches:
            tr.train_step(step, x)
    del tr, batches
    _free(torch.device(cfg.device))
    return fc.get_total_flops() / cycle


def time_e4e(cfg, warmup: int, steps: int) -> dict:
    """`warmup` then `steps` whole training steps of the e4e trainer, fed by its own batches(); -> rates,
    memory, first_step_s: step 0 from the first batch request to its synced end (its graphs' compiles
    included: nothing before it runs the step), warmup_s: every warm-up step so (step 1 compiles the
    steps without R1), build_s: the trainer's construction (models, losses, data)."""
    dev = torch.device(cfg.device)
    torch._dynamo.reset()  # no graph compiled for an earlier row serves this one: its step 0 compiles afresh
    _free(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t = time.perf_counter()
    tr = e4e_trainer(cfg)
    sync(dev)
    build = time.perf_counter() - t
    logs, first = None, None
    t = t0 = time.perf_counter()
    for step, x in tr.batches(0, warmup + steps):
        if step == warmup:
            sync(dev)
            t = time.perf_counter()
            warm = t - t0
        logs = tr.train_step(step, x)
        if step == 0:
            sync(dev)
            first = time.perf_counter() - t0
    sync(dev)
    el = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated(dev) / 2 ** 30 if dev.type == "cuda" else float("nan")
    loss = float(logs["loss"]) if logs and "loss" in logs else None
    del tr, logs
    _free(dev)
    return dict(steps_per_s=steps / el, images_per_s=steps * cfg.batch_size / el, ms_per_step=1e3 * el / steps,
                peak_gib=peak, first_step_s=first, warmup_s=warm, build_s=build, last_loss=loss)


# (impl, bf16) of the rows of every e4e config: today's default trainer (fp32, TF32 on CUDA), the same in
# bf16 autocast, and the fast path in bf16 (compiled where compile allows)
E4E_ROWS = (("reference", False), ("reference", True), ("fast", True))


def e4e_rows(device, configs, warmup, steps, peak, root, compile="auto"):
    """Rows of the e4e encoder trainer (E4ETrainer.train_step), E4E_ROWS per config. Timed steps are
    rounded up to whole lazy-R1 cycles (d_reg_every); warmup >= 1 keeps step 0 (compiles) out of them.
    compile: the fast rows' setting (auto: on for CUDA). Files go under root."""
    from e4e.train.e4e import E4ETrainConfig
    dev = torch.device(device)
    rows = []
    for name in configs:
        kw = e4e_world(name, Path(root))
        cycle = kw.get("d_reg_every", E4ETrainConfig.d_reg_every)
        n = max(1, -(-steps // cycle)) * cycle
        w = max(1, warmup)
        flops = e4e_flops_per_step(e4e_config(kw, device, Path(root) / f"e4e_{name}_flops", "reference", False))
        for impl, bf16 in E4E_ROWS:
            cfg = e4e_config(kw, device, Path(root) / f"e4e_{name}_{impl}_{'bf16' if bf16 else 'fp32'}", impl, bf16,
                             compile if impl == "fast" else "off", max_steps=w + n)
            r = time_e4e(cfg, w, n)
            precision = ("bf16" if bf16 else "tf32") if dev.type == "cuda" else "fp32"  # bf16: CUDA autocast only
            r.update(trainer="e4e", config=name, impl=impl, precision=precision, bf16=bf16, compile=cfg.compile,
                     batch=cfg.batch_size, warmup=w, steps=n, flops_per_step=flops,
                     tflops=flops * r["steps_per_s"] / 1e12, floor_share=flops * r["steps_per_s"] / peak)
            rows.append(r)
            print(json.dumps(r), flush=True)
    return rows


def fmt(v, spec):
    return "" if v is None or v != v else format(v, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--configs", nargs="*", default=["avatar128", "emoji64"], choices=list(GAN_CONFIGS),
                    help="GAN trainer rows (--configs with no names: none)")
    ap.add_argument("--impls", nargs="+", default=["old", "reference", "fast"])
    ap.add_argument("--old-trainer", type=Path, help="the pre-round src/e4e/train/stylegan.py (for the old rows)")
    ap.add_argument("--warmup", type=int, default=32, help="steps before timing (compiles every graph)")
    ap.add_argument("--steps", type=int, default=64, help="timed steps (a multiple of d_reg_every)")
    ap.add_argument("--images", type=int, default=2048, help="random training images written per size")
    ap.add_argument("--e4e-configs", nargs="*", default=[], choices=list(E4E_CONFIGS),
                    help="e4e trainer rows: ffhq avatar128 tiny")
    ap.add_argument("--e4e-warmup", type=int, help="e4e rows: steps before timing (default: --warmup)")
    ap.add_argument("--e4e-steps", type=int, help="e4e rows: timed steps, rounded up to whole d_reg_every cycles "
                    "(default: --steps)")
    ap.add_argument("--second-process", action="store_true", help="fast rows: time a fresh process's first step")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: one fast row in this process, JSON to stdout
    args = ap.parse_args()
    dev = torch.device(args.device)
    if args.one:
        name, data, out = args.one.split(",")
        r = time_gan(gan_config(name, data, out, args.device, "fast"), warmup=1, steps=max(1, args.steps))
        print("ROW " + json.dumps(r))
        return
    peak = matmul_peak(dev, "bf16") if dev.type == "cuda" else matmul_peak(dev, "fp32")
    print(f"device {torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}, torch {torch.__version__}, "
          f"measured matmul peak {peak / 1e12:.0f} TFLOP/s ({'bf16' if dev.type == 'cuda' else 'fp32'})", flush=True)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="train_bench_"))
    for name in args.configs:
        c = GAN_CONFIGS[name]
        data = tmp / f"data{c['size']}"
        if not data.is_dir():
            write_images(data, max(args.images, 4 * c["batch"]), c["size"])
        flops = gan_flops_per_step(gan_config(name, data, tmp / "flops", args.device, "reference"))
        for impl in args.impls:
            out = tmp / f"{name}_{impl}"
            if impl == "old":
                if not args.old_trainer:
                    continue
                r = time_old_gan(args.old_trainer, gan_config(name, data, out, args.device, "reference"),
                                 args.warmup + args.steps)
            else:
                r = time_gan(gan_config(name, data, out, args.device, impl), args.warmup, args.steps)
            r.update(trainer="gan", config=name, impl=impl, batch=c["batch"], flops_per_step=flops,
                     tflops=flops * r["steps_per_s"] / 1e12, floor_share=flops * r["steps_per_s"] / peak)
            if impl == "fast" and args.second_process:
                cmd = [sys.executable, __file__, "--device", args.device, "--steps", "2",
                       "--one", f"{name},{data},{tmp / (name + '_second')}"]
                t = time.perf_counter()
                res = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
                line = [x for x in res.stdout.splitlines() if x.startswith("ROW ")]
                r["second_process_first_step_s"] = json.loads(line[-1][4:])["first_step_s"] if line else None
                r["second_process_wall_s"] = time.perf_counter() - t
            rows.append(r)
            print(json.dumps(r), flush=True)
    if args.e4e_configs:
        rows += e4e_rows(args.device, args.e4e_configs,
                         args.warmup if args.e4e_warmup is None else args.e4e_warmup,
                         args.steps if args.e4e_steps is None else args.e4e_steps, peak, tmp)
    print()
    print("| trainer | config | impl | batch | images/s | ms/step | peak GiB | GFLOP/step | TFLOP/s | share of peak "
          "| first step s | 2nd process first step s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        impl = f"{r['impl']} {r['precision']}" if r.get("precision") else r["impl"]
        print(f"| {r['trainer']} | {r['config']} | {impl} | {r.get('batch', '')} | {fmt(r['images_per_s'], '.1f')} "
              f"| {fmt(r['ms_per_step'], '.1f')} | {fmt(r['peak_gib'], '.1f')} "
              f"| {fmt((r.get('flops_per_step') or float('nan')) / 1e9, '.0f')} | {fmt(r.get('tflops'), '.1f')} "
              f"| {fmt(100 * r['floor_share'] if r.get('floor_share') else None, '.1f')}% "
              f"| {fmt(r.get('first_step_s'), '.1f')} | {fmt(r.get('second_process_first_step_s'), '.1f')} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
