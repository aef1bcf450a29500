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
c)
  echo "phase c is defined in docs/model_card.md's commands once the encoders' settings are fixed"; exit 2
  ;;
esac
ls -la "$OUT"
