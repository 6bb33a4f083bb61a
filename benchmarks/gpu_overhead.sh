#!/usr/bin/env bash
# Prepared GPU run of the issue-5 adaptation-overhead figures (one H100/H200; about 3-5 minutes):
# a random-weight Qwen2-VL-7B-sized model (8.29B params, built on the GPU, nothing downloaded) in bf16,
# 8 windows x 1224 prompt tokens (8 frames of 364x560 -> 1040 vision tokens + 184 text tokens of the built-in
# tokenizer; the anchor is 8 x 1226), rank 8 on q,k,v,o,gate,up,down of all 28 layers, 64 new tokens.
# Then the issue-6 static test-time cost (merged LoRA and soft prompt against frozen) on the same model, and the
# gpu-marked tests (bf16 injection vs the naive loop; bf16 static adaptations train and merge on CUDA).
#   usage: PYTHON=.venv/bin/python OUT=/tmp/gpu bash benchmarks/gpu_overhead.sh
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-/tmp/copra_gpu}
mkdir -p "$OUT"
export MLFLOW_DISABLE_TELEMETRY=true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
"$PY" benchmarks/adaptation_overhead.py --size 7b --device cuda --dtype bfloat16 --frame-size 364 560 \
    --iters 3 --warmup 1 --skip naive --json "$OUT/overhead_7b.json" 2>&1 | tee "$OUT/overhead_7b.log"
"$PY" benchmarks/static_test_cost.py --size 7b --device cuda --dtype bfloat16 --frame-size 364 560 \
    --iters 3 --warmup 1 --new-tokens 64 --json "$OUT/static_7b.json" 2>&1 | tee "$OUT/static_7b.log"
"$PY" -m pytest tests/test_injection.py tests/test_baselines.py -m gpu -q 2>&1 | tee "$OUT/gpu_tests.log"
