#!/usr/bin/env bash
# The GPU runs that made the embedded avatar model (docs/model_card.md), one phase per device call of at
# most 10 minutes. Run from the repository root on the GPU machine; results go to $OUT (files <= 16 MiB).
#   a: build the 60k avatar set, train the two attribute networks (background), train the generator
#   b: continue the generator (needs phase a's run folder on the same machine)
#   c: e4e and pSp encoders side by side on the trained generator
# Env: GEN_MIN (generator minutes in this phase), ENC_MIN (encoder minutes).
set -euo pipefail
PHASE=${1:?phase a, b or c}
export PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/e4e-inductor}
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src
fi
OUT=${OUT:-out/gpu}
mkdir -p "$OUT" runs
E4E="python3 -m e4e.cli"
GEN=(--data data/avatars --out runs/g128 --size 128 --batch 64
     --set style_dim=512 n_mlp=8 channel_multiplier=1 channel_max=256 bf16=true workers=16 log_every=100
           sample_every=2000 save_every=2000 steps=10000000)

export_gen() {
  python3 - "$OUT" <<'PY'
import sys, torch
from e4e.checkpoints.parts import save_parts
out = sys.argv[1]
ck = torch.load("runs/g128/checkpoint.pt", map_location="cpu", weights_only=True)
print("step", ck["step"])
for k in ("g_ema", "g", "d"):
    save_parts(ck[k], f"{out}/g128_{k}", dtype=torch.float16)
PY
  tar czf "$OUT/g128_logs.tgz" runs/g128/log.jsonl runs/g128/config.json $(ls runs/g128/sample_*.png | tail -3) \
      $(ls runs/attr/*.json runs/attr/*.safetensors 2>/dev/null || true)
}

case $PHASE in
a)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__)"
  t=$(date +%s)
  $E4E data avatars data/avatars --size 128 --count 60000 --workers 16 -q
  echo "dataset built in $(( $(date +%s) - t )) s"; du -sh data/avatars
  (PY=python3 MINUTES=1.0 bench/train_attribute_nets.sh data/avatars runs/attr > runs/attr.log 2>&1 || echo "attribute nets failed" >> runs/attr.log) &
  $E4E train-generator "${GEN[@]}" --time-limit-min "${GEN_MIN:-5}" 2>&1 | grep -v "it/s]$" | tail -20 \
    || { echo "compiled run failed: eager fallback"; rm -rf runs/g128;
         $E4E train-generator "${GEN[@]}" compile=off --time-limit-min "${GEN_MIN:-5}" 2>&1 | tail -20; }
  wait
  tail -5 runs/attr.log
  export_gen
  ;;
b)  # a fresh machine: rebuild the set, train the generator from scratch (phase a's 509 steps were a trial)
  t=$(date +%s)
  $E4E data avatars data/avatars --size 128 --count 60000 --workers 16 -q
  echo "dataset built in $(( $(date +%s) - t )) s"
  mkdir -p runs/attr
  $E4E train-generator "${GEN[@]}" --time-limit-min "${GEN_MIN:-7}" > runs/g128.out 2>&1 \
    || { tail -c 3000 runs/g128.out; echo "compiled run failed: eager fallback"; rm -rf runs/g128;
         $E4E train-generator "${GEN[@]}" compile=off --time-limit-min "${GEN_MIN:-7}" > runs/g128.out 2>&1; }
  tr '\r' '\n' < runs/g128.out | grep -v "it/s" | tail -8
  export_gen
  ;;
c)  # a fresh machine: rebuild the set; old vs reference trainer rows; continue the generator (eager) from
    # phase b's weights (RESUME_PARTS: g128_{g,d,g_ema} parts; Adam moments restart), RESUME_STEP steps done
  t=$(date +%s)
  $E4E data avatars data/avatars --size 128 --count 60000 --workers 16 -q
  echo "dataset built in $(( $(date +%s) - t )) s"
  python3 bench/train_bench.py --configs avatar128 --impls old reference --old-trainer .carry/old_stylegan.py \
      --warmup 8 --steps 32 --images 512 --json "$OUT/train_bench.json" 2>&1 | grep -v "it/s" | tail -8
  python3 - "${RESUME_PARTS:?}" "${RESUME_STEP:?}" <<'PY'
import sys, torch
from e4e.checkpoints.parts import load_parts
from e4e.checkpoints.rosinality import save_gan_state
from e4e.train.config import build_config
from e4e.train.stylegan import GANTrainConfig, GANTrainer
from pathlib import Path
parts, step = sys.argv[1], int(sys.argv[2])
cfg = build_config(GANTrainConfig, None, ["size=128", "batch=64", "style_dim=512", "n_mlp=8", "channel_multiplier=1",
                                          "channel_max=256", "bf16=true", "device=cuda", "compile=off"])
tr = GANTrainer(cfg)
for k, m in (("g", tr.g), ("d", tr.d), ("g_ema", tr.g_ema)):
    sd = load_parts(f"{parts}/g128_{k}")
    m.load_state_dict({n: v.float() for n, v in sd.items()})
tr.step_count = step
Path("runs/g128").mkdir(parents=True, exist_ok=True)
save_gan_state("runs/g128/checkpoint.pt", **tr.state())
print("seeded runs/g128 at step", step)
PY
  $E4E train-generator "${GEN[@]}" compile=off --resume --time-limit-min "${GEN_MIN:-4.5}" > runs/g128.out 2>&1 || true
  tr '\r' '\n' < runs/g128.out | grep -v "it/s" | tail -6
  export_gen
  ;;
esac
ls -la "$OUT"
