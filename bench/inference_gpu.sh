#!/usr/bin/env bash
# Issue #16's device run in one call (about 8 minutes; run it alone on the machine), most wanted first:
#   bench/memory_probe.py with PROBE=1 (where the strict-fp32 batch-8 peak goes), the AOT warm start of the FFHQ model
#   (bench/compile_warm_start.py --aot: first process compiles, second loads), the GPU tests of the fast
#   paths (tests/test_fast.py -m gpu: Triton kernels, compile, aot), then
#   bench/official_bench.py against the official checkout at .carry/encoder4editing (carried: fetch it
#   yourself) with the aot rows, as far as BENCH_S allows.
# Env: PROBE, PROBE_S, SKIP_WARM, WARM_S, WARM_BATCH, TESTS_S, TESTS_FILES (default tests/test_fast.py),
# TESTS_K, BENCH_S (unset: no official bench), BENCH_BATCHES, BENCH_ARGS. Everything lands in $OUT.
set -uo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=/tmp/e4e-inductor
OUT=${OUT:-out/gpu}; mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "--- $1: $(( $(date +%s) - t0 )) s"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
if [ -n "${PROBE:-}" ]; then  # answered on 2026-12-07 (docs/benchmarks.md): run it again with PROBE=1
  timeout ${PROBE_S:-150} python3 bench/memory_probe.py --json "$OUT/memory_probe.json" > "$OUT/memory_probe.md" 2>&1
  head -n 9 "$OUT/memory_probe.md"; stamp "memory probe"
fi
if [ -z "${SKIP_WARM:-}" ]; then
  timeout ${WARM_S:-330} python3 bench/compile_warm_start.py --device cuda --config ffhq --batch "${WARM_BATCH:-64}" --precision bf16 --aot \
    --cache-dir /tmp/e4e-aot-warm > "$OUT/warm_start_aot.txt" 2>&1
  cat "$OUT/warm_start_aot.txt"; stamp "aot warm start"
fi
timeout ${TESTS_S:-200} python3 -m pytest -q -m gpu -p no:cacheprovider ${TESTS_FILES:-tests/test_fast.py} ${TESTS_K:+-k "$TESTS_K"} > "$OUT/gpu_tests_fast.txt" 2>&1
tail -n 3 "$OUT/gpu_tests_fast.txt"; stamp "GPU tests"
if [ -d .carry/encoder4editing ] && [ -n "${BENCH_S:-}" ]; then
  timeout "$(( BENCH_S + 60 ))" python3 bench/official_bench.py --official .carry/encoder4editing --batches ${BENCH_BATCHES:-8 16 64} \
    --official-max-batch 16 ${BENCH_ARGS:-} --budget-s "$BENCH_S" --no-cpu --json "$OUT/official_bench.json" > "$OUT/official_bench.md" 2>&1
  tail -n 30 "$OUT/official_bench.md"; stamp "official bench"
fi
