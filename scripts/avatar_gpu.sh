#!/usr/bin/env bash
# The GPU run that makes the embedded avatar model (docs/model_card_avatar.md) in one device lease.
# A device call may last 10 minutes, so the work runs in a detached driver that outlives each call while
# the machine stays warm, and short calls watch it and bring its exports back:
#   start      install the carried wheels, launch the driver (setsid), then `watch` until WATCH_S
#   watch      wait until WATCH_S seconds have passed since this call began, or the driver is done, then
#              copy runs/export/* (every file <= 16 MiB) to $OUT and print where the run stands
#   pairs      issue #18's benchmark alone (PAIRS_S, PAIRS_ARGS), e.g. again on a warm machine
#   gpu-tests FILE...  each file's GPU tests in its own pytest process (TRAIN_TESTS_S, GPU_TESTS_LOG)
#   driver     (internal) build the avatar set (63,200: 60,040 train, issue #17's >= 60k, 3,160 test);
#              train the 128 px generator for GEN_MIN minutes (compile included); then the e4e and pSp
#              encoders side by side for ENC_MIN minutes;
#              after each stage write fp16 safetensors parts of its weights to runs/export/
# Env: GEN_MIN, ENC_MIN, WATCH_S; BENCH=1 first runs the GPU tests and bench/official_bench.py (BENCH_S);
# GPU_TESTS=1 runs the ops' GPU tests (tests/test_ops.py -m gpu) beside the dataset build; MEM_PROBE=1
# runs bench/memory_probe.py there (issue #16's fp32 batch-8 peak); GPU_TESTS_FILES, GPU_TESTS_S choose them;
# BENCH_BATCHES, BENCH_ARGS (default: the compiled rows at 64) shape the bench; TRAIN_TESTS=1 runs the
# trainers' GPU tests after the encoders, one pytest process per file (TRAIN_TESTS_FILES, TRAIN_TESTS_S);
# SMOKE=0 skips the encoder smoke run beside the generator (it shares the GPU and CPUs with it);
# ENC_MIN=0 trains no encoders; ENC_INIT=1 starts the encoders from the shipped ones (e4e: its progressive
# stages reopen within 220 steps, not 1,300); GEN_MIN=0 trains no generator (the encoders train on the
# embedded one); E4E_BENCH=1 times the e4e trainer (bench/train_bench.py, its e4e rows) after the
# encoders; METRICS=1 then assembles the new models on the device and runs bench/avatar_model_metrics.py
# there (model_metrics.* exported);
# GAN_PROFILE=1 first times the GAN step eager with the regulariser and main-step ops (ref, gradfix, fold;
# bench/train_profile.py) and trains with what scripts/choose_gan_settings.py picks from it (GAN_GRAPHS=1
# adds compiled rows: the default compile and compile_mode=reduce-overhead, GAN_GRAPHS_S); RESUME=1
# continues the GAN run kept in models/avatar/state (g, d) and the embedded generator (g_ema); PAIRS=1 last
# runs issue #18's benchmark (bench/avatar_pairs.sh, PAIRS_S, PAIRS_ARGS) on the models this lease made, or
# the shipped ones (resuming .carry/pairs_bench.tgz, an earlier lease's export), and exports
# runs/export/pairs_bench.tgz; COUNT, GEN_SET, ENC_SET, PSP_SET (extra settings; PSP_SET: pSp's only,
# e.g. "--w_norm_lambda 5e-4"; CPU smoke tests).
# BUDGET_S (budget_left_s before the start call; START_S, LAST_CALL_S) cuts the time limit of every test,
# bench, metrics and pairs step to the lease's end (GEN_MIN and ENC_MIN stay as given). A compile cache
# brought back by an earlier lease (.carry/compile_cache.bin.NN, carried) is loaded first.
set -euo pipefail
PHASE=${1:?phase: start, watch or driver}
export PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/e4e-inductor}
export PYTHONPATH=/tmp/site:$PWD/src
OUT=${OUT:-out/gpu}
E4E="python3 -m e4e.cli"
# EfficientNet-Lite0 (perceptual loss and metric, FID proxy), carried: the device's torch has no
# efficientnet-lite0 package for the CLI to fall back to
EFFNET=.carry/effnet/efficientnet-lite0-57934424.pth
mkdir -p "$OUT" runs/export runs/keep

export_encoder() {  # export_encoder RUN: its encoder as fp16 parts, latent_avg (fp32) and opts beside them
  python3 - "$1" <<'PY'
import json, sys, torch
from safetensors.torch import save_file
from e4e.checkpoints.parts import save_parts
run = sys.argv[1]
ck = torch.load(f"runs/{run}/checkpoints/last.pt", map_location="cpu", weights_only=True)
enc = {k[len("encoder."):]: v for k, v in ck["state_dict"].items() if k.startswith("encoder.")}
save_parts(enc, f"runs/export/{run}_encoder", dtype=torch.float16)
save_file({"latent_avg": ck["latent_avg"].float().contiguous()}, f"runs/keep/{run}_latent_avg.safetensors")
json.dump(ck["opts"], open(f"runs/keep/{run}_opts.json", "w"), indent=1, default=str)
print("exported", run, "step", ck["global_step"])
PY
}

encoder_flags() {  # encoder_flags GENERATOR KIND EXP_DIR MINUTES
  local common=(--dataset_type avatar_encode --train_data data/avatars --stylegan_weights "$1"
    --encoder_mode ir_se --encoder_widths 32,48,64,128 --encoder_units 2,2,3,2 --encoder_head_width 64
    --perceptual efficientnet --perceptual_weights "$EFFNET"
    --lpips_lambda 0.8 --l2_lambda 1.0 --id_lambda 0.5 --sim_weights models/avatar/sim_resnet_A.safetensors
    --learning_rate 3e-4 --batch_size 32 --test_batch_size 64 --val_batches 8 --workers 6 --bf16 true
    --max_steps 1000000 --val_interval 1000 --image_interval 500 --board_interval 50 --save_interval 500
    --exp_dir "$3" --time_limit_min "$4")
  # ENC_INIT=1: warm start from the shipped encoder of this kind (the generator trained on from theirs)
  if [ "$2" = e4e ]; then
    echo "${common[@]}" --encoder_type Encoder4Editing --w_discriminator_lambda 0.1 --use_w_pool true \
      --progressive_start 300 --progressive_step_every 100 --delta_norm_lambda 2e-4 \
      ${ENC_INIT:+--encoder_init src/e4e/assets/e4e_avatar128.safetensors --progressive_start 0 --progressive_step_every 20} \
      ${ENC_SET:-}
  else
    echo "${common[@]}" ${ENC_INIT:+--encoder_init models/avatar/psp_avatar128.safetensors} \
      --encoder_type GradualStyleEncoder --w_discriminator_lambda 0 --delta_norm_lambda 0 ${ENC_SET:-} ${PSP_SET:-}
  fi
}

encoder_files() {  # what the encoder stage reads beside the code: it may come with a later call (the tree
  # that travels is capped at 64 MiB), so the stage and its smoke run wait for these paths
  echo "$EFFNET" models/avatar/sim_resnet_A.safetensors
  [ -z "${ENC_INIT:-}" ] || echo models/avatar/psp_avatar128.safetensors
  [ -z "${METRICS:-}" ] || echo models/avatar/eval_convnet_B.safetensors
}

encoder_smoke() {
  python3 - <<'PY'
from e4e.checkpoints.io import seeded_mean_latent
from e4e.checkpoints.rosinality import save_rosinality
from e4e.nets.stylegan2 import Generator, GeneratorConfig
g = Generator(GeneratorConfig(size=128, style_dim=512, n_mlp=8, channel_multiplier=1, channel_max=256))
save_rosinality("runs/smoke_g.pt", g, seeded_mean_latent(g))
PY
  for k in e4e psp; do
    $E4E train $(encoder_flags runs/smoke_g.pt $k runs/smoke_$k 0.7) --max_steps 40 --save_interval 20 --val_interval 20 \
      --progressive_start 5 --progressive_step_every 2 2>&1 | tr '\r' '\n' | grep -v "it/s]$" | tail -n 4 || echo "$k smoke FAILED"
  done
}

seed_from_state() {  # runs/g128/checkpoint.pt from models/avatar/state (g, d) + the embedded generator (g_ema)
  python3 - <<'PY'
import json
from pathlib import Path
from e4e.checkpoints.native import load_native
from e4e.checkpoints.parts import load_parts
from e4e.checkpoints.rosinality import save_gan_state
from e4e.train.stylegan import GANTrainConfig, GANTrainer
st = Path("models/avatar/state")
gan = json.loads((st / "config.json").read_text())
step = json.loads((st / "state.json").read_text())["step"]
cfg = GANTrainConfig(**{k: v for k, v in gan.items() if k in GANTrainConfig.__dataclass_fields__})
cfg.device, cfg.compile, cfg.resume = "cuda", "off", False
tr = GANTrainer(cfg)
parts, _, _, _ = load_native("src/e4e/assets/e4e_avatar128.safetensors")
for m, sd in ((tr.g, load_parts(st / "g128_g")), (tr.d, load_parts(st / "g128_d")), (tr.g_ema, parts["generator"])):
    m.load_state_dict({k: v.float() for k, v in sd.items()})
tr.step_count = step
Path("runs/g128").mkdir(parents=True, exist_ok=True)
save_gan_state("runs/g128/checkpoint.pt", **tr.state())
print("seeded runs/g128 at step", step, "(Adam moments start afresh)")
PY
}

cap() {  # cap SECONDS: a step's time limit, cut to what is left of the lease where that is less
  # (runs/end_at, epoch seconds, written by `start` from BUDGET_S), and never under 30 s
  local s=$1 end left; end=$(cat runs/end_at 2>/dev/null || true)
  if [ -n "$end" ]; then left=$(( end - $(date +%s) )); [ "$left" -ge "$s" ] || s=$left; fi
  [ "$s" -ge 30 ] || s=30
  echo "$s"
}

effnet_flag() {  # the e4e eval / metrics flag for the carried weights, where they were carried
  [ ! -f "$EFFNET" ] || echo --perceptual-weights "$EFFNET"
}

gpu_test_files() {  # gpu_test_files SECONDS LOG FILE...: each file's GPU tests in a pytest process of its own
  # (a crash in one, a segfault, loses only that file's summary), appended to LOG with its exit status;
  # failing tests are reported, never fatal to the driver (set -e would end it at the first failure)
  local limit=$1 log=$2 f rc; shift 2
  for f in "$@"; do
    rc=0; echo "== $f" >> "$log"
    # -k: a process that outlives SIGTERM at the time limit is killed 15 s later
    timeout -k 15 "$(cap "$limit")" python3 -m pytest -q -m gpu -p no:cacheprovider -rf --tb=short "$f" >> "$log" 2>&1 || rc=$?
    echo "exit $rc" >> "$log"
  done
}

driver() {
  local t
  # a command that fails outside the guarded steps ends the driver (set -e): say where, in driver.log
  set -E; trap 'echo "driver stopped: exit $? at line $LINENO" >&2' ERR
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 -c "import torch; print('torch', torch.__version__)"
  t=$(date +%s)
  if [ -n "${BENCH:-}${GPU_TESTS:-}" ]; then  # GPU tests beside the dataset build (correctness only: no
    # timing shares the CPUs); GPU_TESTS=1 alone runs only the ops' GPU tests (seconds)
    timeout -k 15 "$(cap "${GPU_TESTS_S:-240}")" python3 -m pytest -q -m gpu -p no:cacheprovider \
      ${GPU_TESTS_FILES:-$([ -n "${BENCH:-}" ] && echo tests || echo tests/test_ops.py)} > runs/export/gpu_tests.txt 2>&1 &
  fi
  if [ -n "${MEM_PROBE:-}" ]; then  # issue #16's memory question beside the build (memory only: no timing)
    timeout -k 15 "$(cap 300)" python3 bench/memory_probe.py --json runs/export/memory_probe.json > runs/export/memory_probe.md 2>&1 &
  fi
  $E4E data avatars data/avatars --size 128 --count "${COUNT:-63200}" --workers "$(nproc)" -q
  echo "dataset built in $(( $(date +%s) - t )) s"
  if [ -n "${BENCH:-}${GPU_TESTS:-}${MEM_PROBE:-}" ]; then wait || true; tail -n 3 runs/export/gpu_tests.txt runs/export/memory_probe.md 2>/dev/null || true; fi
  if [ -n "${BENCH:-}" ]; then  # issue #16's table, alone on the machine, before any training
    t=$(date +%s)
    timeout -k 15 "$(cap $(( ${BENCH_S:-400} + 80 )))" python3 bench/official_bench.py --official .carry/encoder4editing \
      --batches ${BENCH_BATCHES:-8 16 64} --official-max-batch 16 ${BENCH_ARGS---compile --compile-batches 64} --budget-s "${BENCH_S:-400}" \
      --json runs/export/official_bench.json > runs/export/official_bench.md 2>&1 || echo "official_bench failed"
    echo "official bench in $(( $(date +%s) - t )) s"; tail -n 5 runs/export/official_bench.md
  fi
  if [ -n "${GAN_PROFILE:-}" ] && [ "${GEN_MIN:-14}" != 0 ]; then  # the ops to train with, timed alone
    t=$(date +%s)
    timeout -k 15 "$(cap "${GAN_PROFILE_S:-300}")" python3 bench/train_profile.py --root /tmp/tp --gan-configs avatar128 --e4e-configs \
      --modes eager --cycles 1 --warmup 17 --json runs/export/gan_profile.jsonl \
      --gan-set "" "reg_impl=gradfix" "reg_impl=fold" "reg_impl=fold main_impl=fold" "reg_impl=fold reg_bf16=true" \
      > runs/export/gan_profile.md 2>&1 || echo "train_profile failed or ran out of time"
    if [ -n "${GAN_GRAPHS:-}" ]; then  # the compiled step measured, default compile against CUDA graphs (#15);
      # its compiles warm the inductor cache the training run then loads
      timeout -k 15 "$(cap "${GAN_GRAPHS_S:-420}")" python3 bench/train_profile.py --root /tmp/tp --gan-configs avatar128 --e4e-configs \
        --modes compiled --cycles 2 --warmup 33 --json runs/export/gan_profile.jsonl \
        --gan-set "reg_impl=fold" "reg_impl=fold compile_mode=reduce-overhead" \
        >> runs/export/gan_profile.md 2>&1 || echo "compiled train_profile failed or ran out of time"
    fi
    grep "^### " runs/export/gan_profile.md || true
    GEN_SET="${GEN_SET:-} $(python3 scripts/choose_gan_settings.py runs/export/gan_profile.jsonl --minutes "${GEN_MIN:-14}" \
      2> >(tee -a runs/export/gan_choice.txt >&2) || true)"
    echo "GAN profile in $(( $(date +%s) - t )) s; training with: $GEN_SET"
  fi
  # both encoder trainers on a random generator: fail early, not at the end (once a later call has
  # carried their weights, where the tree could not hold them with the GAN state)
  [ "${GEN_MIN:-14}" = 0 ] || [ "${SMOKE:-1}" = 0 ] || ( for f in $(encoder_files); do
      while [ ! -f "$f" ]; do sleep 10; done; done; encoder_smoke ) > runs/smoke.out 2>&1 &
  local gen=runs/g128/generator.pt
  if [ "${GEN_MIN:-14}" = 0 ]; then gen=src/e4e/assets/e4e_avatar128.safetensors; echo "no generator training"
  else train_generator; fi
  for f in $(encoder_files); do
    local w=0; while [ ! -f "$f" ] && [ $w -lt 600 ]; do sleep 5; w=$((w + 5)); done
    [ -f "$f" ] || echo "still missing after 10 min: $f"
  done
  if [ "${ENC_MIN:-7}" = 0 ]; then echo "no encoder training"; else train_encoders "$gen"; fi
  if [ -n "${TRAIN_TESTS:-}" ]; then  # the trainers' GPU tests (compiled, CUDA graphs), after the training:
    # beside it their compiles slowed the GAN's (349 s instead of ~170, 2026-12-07)
    t=$(date +%s)
    gpu_test_files "${TRAIN_TESTS_S:-300}" runs/export/gpu_tests_train.txt \
      ${TRAIN_TESTS_FILES:-tests/test_train_stylegan.py tests/test_train_e4e_fast.py}
    echo "trainers' GPU tests in $(( $(date +%s) - t )) s"; grep -E "^==|passed|failed|exit" runs/export/gpu_tests_train.txt || true
  fi
  if [ -n "${E4E_BENCH:-}" ]; then  # alone on the machine: the encoders have finished
    t=$(date +%s)
    timeout -k 15 "$(cap "${E4E_BENCH_S:-420}")" python3 bench/train_bench.py --configs --e4e-configs avatar128 ffhq \
      ${E4E_BENCH_ARGS:-} --json runs/export/train_bench_e4e.json > runs/export/train_bench_e4e.md 2>&1 \
      || echo "train_bench (e4e rows) failed or ran out of time"
    echo "e4e train bench in $(( $(date +%s) - t )) s"; tail -n 12 runs/export/train_bench_e4e.md
  fi
  if [ -n "${METRICS:-}" ]; then
    t=$(date +%s)
    mkdir -p runs/assembled && cp -r runs/keep runs/assembled/ 2>/dev/null; mkdir -p runs/assembled/runs
    mv runs/assembled/keep runs/assembled/runs/keep; cp runs/export/*_encoder.part* runs/assembled/
    if [ "${GEN_MIN:-14}" = 0 ]; then
      python3 scripts/assemble_avatar.py runs/assembled --generator src/e4e/assets/e4e_avatar128.safetensors
    else
      cp runs/export/g128_g_ema.part* runs/assembled/; cp -r runs/g128 runs/assembled/runs/ 2>/dev/null || true
      python3 scripts/assemble_avatar.py runs/assembled
    fi
    timeout -k 15 "$(cap "${METRICS_S:-600}")" python3 bench/avatar_model_metrics.py --data data/avatars \
      --e4e src/e4e/assets/e4e_avatar128.safetensors --psp models/avatar/psp_avatar128.safetensors \
      --classifier models/avatar/eval_convnet_B.safetensors -o runs/metrics --device cuda \
      $(effnet_flag) ${METRICS_ARGS:-} \
      > runs/metrics.out 2>&1 || echo "metrics failed"
    tail -n 30 runs/metrics.out; cp runs/metrics/model_metrics.* runs/export/ 2>/dev/null || true
    echo "assembly and metrics in $(( $(date +%s) - t )) s"
  fi
  [ -z "${PAIRS:-}" ] || pairs_step
  echo done > runs/driver.done
}

train_generator() {
  local resume=""
  if [ -n "${RESUME:-}" ]; then seed_from_state && resume=--resume; fi
  local cache=""
  if ls .carry/compile_cache.bin* >/dev/null 2>&1; then
    cat $(ls .carry/compile_cache.bin* | sort) > /tmp/compile_cache.bin && cache="compile_cache=/tmp/compile_cache.bin"
  fi
  # the generator: avatar-128 config of docs/benchmarks.md; time limit counts compile
  $E4E train-generator --data data/avatars --out runs/g128 --size 128 --batch 64 --time-limit-min "${GEN_MIN:-14}" $resume \
      --set style_dim=512 n_mlp=8 channel_multiplier=1 channel_max=256 bf16=true workers=16 log_every=100 \
            sample_every=1000 save_every=1000 steps=10000000 $cache ${GEN_SET:-} > runs/g128.out 2>&1 \
    || { tr '\r' '\n' < runs/g128.out | tail -n 30; echo "compiled generator run failed: eager, resuming"
         $E4E train-generator --data data/avatars --out runs/g128 --size 128 --batch 64 $([ -f runs/g128/checkpoint.pt ] && echo --resume) \
           --time-limit-min "${GEN_MIN_FALLBACK:-8}" --set style_dim=512 n_mlp=8 channel_multiplier=1 channel_max=256 \
           bf16=true workers=16 log_every=100 sample_every=1000 save_every=1000 steps=10000000 compile=off ${GEN_SET:-} \
           > runs/g128.out 2>&1 || echo "generator failed"; }
  tr '\r' '\n' < runs/g128.out | grep -v "it/s" | tail -4
  python3 - <<'PY'
import json, torch
from e4e.checkpoints.parts import save_parts
ck = torch.load("runs/g128/checkpoint.pt", map_location="cpu", weights_only=True)
for k in ("g_ema", "g", "d"):
    save_parts(ck[k], f"runs/export/g128_{k}", dtype=torch.float16)
print("generator exported at step", ck["step"])
json.dump({"step": ck["step"]}, open("runs/keep/g128_state.json", "w"))
PY
  # (the compile cache stays on the machine: its parts would take the few file slots a call brings back)
  cp runs/g128/log.jsonl runs/keep/g128_log.jsonl
  tar czf runs/export/g128_logs.tgz runs/keep runs/g128.out runs/g128/config.json $(ls runs/g128/sample_*.png | tail -3)
}

train_encoder() {  # train_encoder GENERATOR KIND: the fast trainer (compiled on CUDA); if it fails, the rest of
  # its time eager (compile off), resuming what it saved
  local t0; t0=$(date +%s)
  $E4E train $(encoder_flags "$1" "$2" "runs/$2" "${ENC_MIN:-7}") > "runs/$2.out" 2>&1 && return 0
  tr '\r' '\n' < "runs/$2.out" | grep -v "it/s]$" | tail -n 20 > "runs/$2.failed"
  local left; left=$(python3 -c "print(max(0.5, ${ENC_MIN:-7} - ($(date +%s) - $t0) / 60))")
  echo "$2: compiled run failed; $left min eager" >> "runs/$2.failed"
  $E4E train $(encoder_flags "$1" "$2" "runs/$2" "$left") --compile off --resume > "runs/$2.out" 2>&1
}

train_encoders() {  # train_encoders GENERATOR: e4e and pSp side by side; same data, losses and budget (pSp
  # without the editability terms); their weights exported as fp16 parts
  local t
  train_encoder "$1" e4e &
  local pe4e=$!
  train_encoder "$1" psp &
  local ppsp=$!
  wait $pe4e || echo "e4e training failed"
  wait $ppsp || echo "pSp training failed"
  cat runs/*.failed 2>/dev/null || true
  for r in e4e psp; do
    tr '\r' '\n' < runs/$r.out | grep -v "it/s" | tail -3
    [ -f runs/$r/checkpoints/last.pt ] && { export_encoder $r || echo "export of $r failed"; }
    cp runs/$r/log.jsonl runs/keep/${r}_log.jsonl 2>/dev/null || true
  done
  tar czf runs/export/enc_logs.tgz runs/keep runs/*.out $(ls runs/e4e/images/* runs/psp/images/* 2>/dev/null | tail -6)
}

pairs_step() {  # issue #18 on the test split, with the models this lease made (or the shipped)
  local t; t=$(date +%s)
  # (METRICS=1's assembly has written this lease's models over the shipped ones at these paths)
  # an earlier lease's unfinished run, carried back as .carry/pairs_bench.tgz: its finished methods are
  # reused (e4e eval's cache; the same command, models and data path)
  if [ -f .carry/pairs_bench.tgz ]; then mkdir -p runs/pairs_bench && tar xzf .carry/pairs_bench.tgz -C runs/pairs_bench; fi
  timeout -k 15 "$(cap "${PAIRS_S:-480}")" bash bench/avatar_pairs.sh data/avatars src/e4e/assets/e4e_avatar128.safetensors \
    models/avatar/psp_avatar128.safetensors models/avatar/eval_convnet_B.safetensors \
    models/avatar/sim_resnet_A.safetensors runs/pairs_bench $(effnet_flag) \
    ${PAIRS_ARGS:-} > runs/pairs.out 2>&1 \
    || echo "pairs benchmark failed or ran out of time (rerun: its finished methods are cached)"
  tail -n 12 runs/pairs.out
  # one file: the page's inputs (CSVs, pairs.md, figures, sheets) and the method cache, to resume or to commit
  tar czf runs/export/pairs_bench.tgz -C runs/pairs_bench pairs && ls -la runs/export/pairs_bench.tgz
  echo "pairs benchmark in $(( $(date +%s) - t )) s"
}

watch() {
  local t0=$1 limit=${WATCH_S:-540}
  while [ $(( $(date +%s) - t0 )) -lt "$limit" ] && [ ! -f runs/driver.done ]; do sleep 5; done
  echo "--- $(( $(date +%s) - t0 )) s; driver log:"; tail -n 12 runs/driver.log || true
  [ ! -f runs/end_at ] || echo "--- the driver's steps end within $(( $(cat runs/end_at) - $(date +%s) )) s (BUDGET_S)"
  # while the generator trains: its EMA weights so far and newest samples (a lost lease keeps them)
  if [ ! -f runs/export/g128_g_ema.part0.safetensors ] && [ -f runs/g128/checkpoint.pt ]; then
    python3 -c "
import torch; from e4e.checkpoints.parts import save_parts
ck = torch.load('runs/g128/checkpoint.pt', map_location='cpu', weights_only=True)
save_parts(ck['g_ema'], '$OUT/g128_mid_g_ema', dtype=torch.float16); print('mid export at step', ck['step'])" || true
    # (no sample yet right after RESUME: ls fails, which pipefail would make fatal)
    s=$(ls runs/g128/sample_*.png 2>/dev/null | tail -1 || true); [ -z "$s" ] || cp "$s" "$OUT/"
  fi
  for f in runs/smoke.out runs/g128.out runs/e4e.out runs/psp.out; do
    [ -f $f ] && { echo "--- $f"; tr '\r' '\n' < $f | tail -n 2; }
  done
  tail -n 1 runs/g128/log.jsonl 2>/dev/null || true
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null || true
  # newest exports first, at most 8 files; files already brought back are not sent again
  mkdir -p runs/sent
  local n; n=$(ls "$OUT" | wc -l)
  for f in $(ls -t runs/export/ 2>/dev/null); do
    if [ $n -lt 8 ] && ! cmp -s runs/export/$f runs/sent/$f; then
      cp runs/export/$f "$OUT/" && cp runs/export/$f runs/sent/$f && n=$((n + 1))
    fi
  done
  ls -la "$OUT"
}

case $PHASE in
start)
  t0=$(date +%s)
  if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  fi
  rm -f runs/driver.done runs/end_at
  # BUDGET_S (status's budget_left_s just before this call): the driver's steps end in time for a last
  # `watch` call to bring their exports back; START_S is what the machine's start took of it (a guess)
  [ -z "${BUDGET_S:-}" ] || echo $(( t0 + BUDGET_S - ${START_S:-150} - ${LAST_CALL_S:-90} )) > runs/end_at
  setsid nohup bash "$0" driver > runs/driver.log 2>&1 < /dev/null &
  sleep 2
  watch "$t0"
  ;;
watch) watch "$(date +%s)" ;;
driver) driver ;;
smoke) encoder_smoke ;;
cap) cap "$2" ;;
pairs) pairs_step ;;
gpu-tests) shift; gpu_test_files "${TRAIN_TESTS_S:-300}" "${GPU_TESTS_LOG:-runs/export/gpu_tests_train.txt}" "$@" ;;
*) echo "unknown phase $PHASE"; exit 2 ;;
esac
