#!/usr/bin/env bash
# Issue 9: the e4e trainer on 2 GPUs (torchrun, DDP) against 1 GPU with the same global batch and seed.
# A second 1-GPU run with another seed measures run-to-run noise. Prints the comparison table last.
# Usage: bench/multigpu.sh DATA GENERATOR EFFICIENTNET_WEIGHTS OUT [STEPS] [GLOBAL_BATCH]
set -euo pipefail
data=$1 gen=$2 enet=$3 out=$4 steps=${5:-300} batch=${6:-128}
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
common=(--dataset-type emoji_encode --train-data "$data" --generator "$gen" --perceptual-weights "$enet"
        --max-steps "$steps" --batch-size "$batch")
sets=(perceptual=efficientnet lpips_lambda=0.8 id_lambda=0 l2_lambda=1.0 encoder_widths=[32,48,64,128]
      encoder_units=[2,2,3,2] encoder_mode=ir_se learning_rate=3e-4 workers=6 board_interval=10
      val_interval=1000000 image_interval=1000000 encoder_type=Encoder4Editing progressive_start=100
      progressive_step_every=20 w_discriminator_lambda=0.1 use_w_pool=true)
# The two 1-GPU runs side by side, one GPU each.
CUDA_VISIBLE_DEVICES=0 python3 -m e4e.cli train "${common[@]}" --exp-dir "$out/gpu1_seed0" --set "${sets[@]}" seed=0 \
    > "$out/gpu1_seed0.out" 2>&1 &
CUDA_VISIBLE_DEVICES=1 python3 -m e4e.cli train "${common[@]}" --exp-dir "$out/gpu1_seed1" --set "${sets[@]}" seed=1 \
    > "$out/gpu1_seed1.out" 2>&1 &
wait
python3 -m torch.distributed.run --standalone --nproc_per_node 2 -m e4e.cli train "${common[@]}" \
    --exp-dir "$out/gpu2_seed0" --set "${sets[@]}" seed=0 > "$out/gpu2_seed0.out" 2>&1
python3 bench/compare_runs.py "$out/gpu1_seed0" "$out/gpu2_seed0" "$out/gpu1_seed1"
