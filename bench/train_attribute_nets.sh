#!/usr/bin/env bash
# Train both avatar attribute networks on one GPU (docs/attributes.md), at most 1 minute of training each (~3 min in all):
#   sim_resnet_A   : the similarity network for e4e's L_sim (arch resnet, train half A, seed 0)
#   eval_convnet_B : the evaluation classifier (arch convnet, disjoint train half B, seed 1)
# Writes OUTDIR/<name>.safetensors (fp16 weights), OUTDIR/<name>.json (per-attribute test accuracy and
# majority baseline), OUTDIR/<name>.log.jsonl. A run stopped early resumes from OUTDIR/<name>.state.pt.
# Usage: bench/train_attribute_nets.sh DATA OUTDIR   (DATA: a folder from 'e4e data avatars')
# Env: PY (default python3), STEPS (3000), BATCH (256), SIZE (input px, 64), MINUTES (time limit per net, 1.0)
set -euo pipefail
if [ $# -ne 2 ]; then echo "usage: $0 DATA OUTDIR" >&2; exit 2; fi
DATA=$1 OUT=$2
PY=${PY:-python3} STEPS=${STEPS:-3000} BATCH=${BATCH:-256} SIZE=${SIZE:-64} MINUTES=${MINUTES:-1.0}
mkdir -p "$OUT"
common=(--data "$DATA" --steps "$STEPS" --size "$SIZE" --batch "$BATCH" --time-limit-min "$MINUTES" --half
        --workers "$(nproc)")
"$PY" -m e4e.cli train-classifier "${common[@]}" --arch resnet --part A --seed 0 --out "$OUT/sim_resnet_A.safetensors"
"$PY" -m e4e.cli train-classifier "${common[@]}" --arch convnet --part B --seed 1 --out "$OUT/eval_convnet_B.safetensors"
ls -l "$OUT"
