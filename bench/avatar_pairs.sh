#!/usr/bin/env bash
# The ground-truth editing benchmark (issue #18) on the trained avatar models, on one GPU, then
# docs/results.md regenerated from it.
# Usage: [DEVICE=cpu] bench/avatar_pairs.sh DATA E4E PSP EVAL_NET SIM_NET OUT [extra e4e eval flags]
#   DATA: the `e4e data avatars` folder; E4E / PSP: inverter checkpoints sharing one generator;
#   EVAL_NET: the evaluation classifier (judge); SIM_NET: the similarity network (labels generator samples).
# Sizes: 500 test images (every attribute's pairs), optimisation methods on 64 images, PTI on 8 with the
# official 350 steps. Each finished method is cached in OUT/pairs/.cache: if the time limit cuts the run,
# the same command resumes where it stopped. Raise --limit / --method-limits for the full test split.
# The CPU run of docs/results.md (2026-12-02) used much smaller limits and --kinds ifg_samples
# --attributes smile,glasses,facial_hair,hat --calib-grid 0,1,2,3,4,6: its exact command is on that page.
set -euo pipefail
data=$1 e4e=$2 psp=$3 judge=$4 sim=$5 out=$6
shift 6
python3 -m e4e.cli eval --pairs "$data" -o "$out/pairs" --checkpoint "$e4e" --psp "$psp" \
    --classifier "$judge" --labeller "$sim" --methods e4e,psp,optimize_w,optimize,pti --device "${DEVICE:-cuda}" \
    --batch-size 64 --limit 500 --method-limits optimize_w=64,optimize=64,pti=8 --reference-limit 3000 \
    --direction-samples 10000 --direction-images 2000 --calib-samples 256 --edit-strengths 0,1,2,3 "$@"
# the page and its figures land in OUT/docs (copy results.md and eval/pairs/ into docs/ to commit them)
# (where docs/ travelled: a device call may leave it behind to keep the tree small; then run
# results_doc.py where the repo is whole)
if [ -f docs/results.md ]; then
  mkdir -p "$out/docs" && cp docs/results.md "$out/docs/results.md"
  python3 bench/results_doc.py "$out/pairs" --docs "$out/docs"
fi
