#!/usr/bin/env bash
# One command for an accelerator (GPU or TPU VM with this repository installed): at SD-2.1 size with random weights,
#   1. the trainer's step (configs/sd21_256.py: paper trainable set, bf16, full remat) -> step time, MFU, HFU, memory;
#   2. one 8-frame 256x256 clip: text encoder + 50 DDIM steps with classifier-free guidance + temporal VAE decode.
#
#   bash benchmarks/accelerator.sh [RESULTS_DIR]        # default: benchmark_results/
#   TRAIN_BATCHES="8 16" SAMPLE_BATCHES=1,4 STEP_TIMEOUT=600 bash benchmarks/accelerator.sh
#   SIZE=tiny bash benchmarks/accelerator.sh /tmp/smoke    # the same commands on tiny models (a CPU smoke run)
#
# Each measurement runs in its own process under `timeout`, so one that fails or runs out of memory still leaves the
# others; results are appended to RESULTS_DIR/accelerator.jsonl and the console output to RESULTS_DIR/accelerator.log.
set -uo pipefail
cd "$(dirname "$0")/.."
results=${1:-benchmark_results}
mkdir -p "$results"
log="$results/accelerator.log"
json="$results/accelerator.jsonl"
timeout_s=${STEP_TIMEOUT:-600}
export PYTHONUNBUFFERED=1
status=0

run() {
  echo "+ $*" | tee -a "$log"
  timeout "$timeout_s" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then echo "! exit $rc: $*" | tee -a "$log"; status=1; fi
}

{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null; } | tee -a "$log"
python3 -c "import jax; print('jax', jax.__version__, jax.devices())" 2>&1 | tee -a "$log"
if [ "${SIZE:-sd21}" = tiny ]; then
  train_config=tiny; sample_args=(--preset tiny --resolution 64 --steps 2 --repeats 1)
else
  train_config=sd21_256; sample_args=(--preset sd21 --resolution 256 --steps 50 --repeats 3)
fi
run python3 benchmarks/sample_clip.py "${sample_args[@]}" --dtype bfloat16 --frames 8 --guidance 7.5 \
  --batch "${SAMPLE_BATCHES:-1,4}" --json "$json"
for batch in ${TRAIN_BATCHES:-8 16}; do
  run python3 benchmarks/train_step.py --configs "$train_config" --batch-per-device "$batch" --steps 10 --warmup 2 \
    --json "$json"
done
exit $status
