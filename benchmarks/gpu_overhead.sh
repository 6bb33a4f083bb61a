#!/usr/bin/env bash
# Prepared GPU run of the issue-5 adaptation-overhead figures (one H100/H200; about 3-5 minutes):
# a random-weight Qwen2-VL-7B-sized model (8.29B params, built on the GPU, nothing downloaded) in bf16,
# 8 windows x 1224 prompt tokens (8 frames of 364x560 -> 1040 vision tokens + 184 text tokens of the built-in
# tokenizer; the anchor is 8 x 1226), rank 8 on q,k,v,o,gate,up,down of all 28 layers, 64 new tokens.
# Then the issue-6 static test-time cost (merged LoRA and soft prompt against frozen) on the same model, and the
# gpu-marked tests (bf16 injection vs the naive loop; bf16 static adaptations train and merge on CUDA).
# Then (issue 13) one GRPO step of the paper config at full depth: COPRA on the random Qwen2-VL-7B (28 LM layers,
# 32 ViT layers, bf16), 8 UCF-sized clips (8 frames of 320x240 at the shipped pixel budget) x G = 8, 64 new
# tokens, the shipped loss_micro_batch: peak memory and the step split (generator / rollout / reference / loss /
# backward / optimiser) beside benchmarks/grpo_memory.py's prediction. About 1-2 minutes; all under 8 on an H200.
#   usage: PYTHON=.venv/bin/python OUT=/tmp/gpu bash benchmarks/gpu_overhead.sh
#   TINY=1 bash benchmarks/gpu_overhead.sh   # no GPU: only the GRPO step on the tiny model and the prediction (CPU)
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-/tmp/copra_gpu}
mkdir -p "$OUT"
export MLFLOW_DISABLE_TELEMETRY=true
if [ "${TINY:-0}" = 1 ]; then
    "$PY" benchmarks/grpo_memory.py step --tiny --device cpu --dtype float32 --inputs 2 --frames 4 \
        --frame-size 48 64 --max-new-tokens 8 --micro 4 --checkpointing off --json "$OUT/grpo_step_tiny.json" \
        2>&1 | tee "$OUT/grpo_step_tiny.log"
    "$PY" benchmarks/grpo_memory.py count --json "$OUT/grpo_memory_prediction.json" 2>&1 \
        | tee "$OUT/grpo_memory_prediction.log"
    exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
"$PY" benchmarks/adaptation_overhead.py --size 7b --device cuda --dtype bfloat16 --frame-size 364 560 \
    --iters 3 --warmup 1 --skip naive --json "$OUT/overhead_7b.json" 2>&1 | tee "$OUT/overhead_7b.log"
"$PY" benchmarks/static_test_cost.py --size 7b --device cuda --dtype bfloat16 --frame-size 364 560 \
    --iters 3 --warmup 1 --new-tokens 64 --json "$OUT/static_7b.json" 2>&1 | tee "$OUT/static_7b.log"
"$PY" -m pytest tests/test_injection.py tests/test_baselines.py -m gpu -q 2>&1 | tee "$OUT/gpu_tests.log"
"$PY" benchmarks/grpo_memory.py count --json "$OUT/grpo_memory_prediction.json" 2>&1 \
    | tee "$OUT/grpo_memory_prediction.log"
timeout 420 "$PY" benchmarks/grpo_memory.py step --device cuda --dtype bfloat16 --lm-layers 28 --vision-depth 32 \
    --inputs 8 --frames 8 --frame-size 240 320 --max-new-tokens 64 --config configs/model/copra_qwen2vl_7b.yaml \
    --warmup 1 --json "$OUT/grpo_step_7b.json" 2>&1 | tee "$OUT/grpo_step_7b.log"
nvidia-smi --query-gpu=memory.used,memory.total --format=csv | tee -a "$OUT/gpu.txt"
