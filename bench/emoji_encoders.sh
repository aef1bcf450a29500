#!/usr/bin/env bash
# Train the emoji-domain e4e encoder and the pSp baseline with the same budget, side by side on one GPU.
# Usage: bench/emoji_encoders.sh DATA GENERATOR EFFICIENTNET_WEIGHTS OUT_ROOT MINUTES [extra --set items]
set -euo pipefail
data=$1 gen=$2 enet=$3 root=$4 minutes=$5
shift 5
common=(--dataset-type emoji_encode --train-data "$data" --generator "$gen" --perceptual-weights "$enet"
        --max-steps 100000 --batch-size 32)
sets=(perceptual=efficientnet lpips_lambda=0.8 id_lambda=0 l2_lambda=1.0 encoder_widths=[32,48,64,128]
      encoder_units=[2,2,3,2] encoder_mode=ir_se learning_rate=3e-4 workers=6 time_limit_min="$minutes"
      val_interval=500 image_interval=500 board_interval=50 test_batch_size=32 val_batches=12 "$@")
python3 -m e4e.cli train "${common[@]}" --exp-dir "$root/e4e" --set "${sets[@]}" encoder_type=Encoder4Editing \
    progressive_start=300 progressive_step_every=100 w_discriminator_lambda=0.1 use_w_pool=true \
    > "$root/e4e.out" 2>&1 &
python3 -m e4e.cli train "${common[@]}" --exp-dir "$root/psp" --set "${sets[@]}" encoder_type=GradualStyleEncoder \
    > "$root/psp.out" 2>&1 &
wait
