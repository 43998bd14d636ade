#!/usr/bin/env bash
# The trial comparison of benchmarks/trial_vs_pyvene.py on a 7B-shaped Llama (random init, bf16) on one
# CUDA GPU, sized to finish inside one 10-minute run on an H100 (layers 0, 16 and 31; 10 timed steps):
# pyvene, align-search's suffix path (the default: keys and values of the tokens before the site kept
# from the first epoch of 2 batches) and its all-tokens step (train.suffix_only off), and the floor.
#
#   benchmarks/gpu.sh --fetch-wheels   # here, with the package registries: pyvene 0.1.8 and what the GPU image lacks, into .whl/
#   benchmarks/gpu.sh                  # on the GPU machine (no network): installs .whl/ into /tmp/site, runs, writes
#                                      # benchmarks/results/gpu-llama-7b.{json,txt}
#   benchmarks/gpu.sh --dry-run        # the same path on this CPU with a 3-layer llama-tiny (checks the script, not speed)
#
# Environment overrides: SHAPE (llama-7b), LAYERS (0,16,31), STEPS (10), PYTHON (python3).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--fetch-wheels" ]; then
  # The GPU image has torch, transformers, numpy, pandas, pyarrow, huggingface-hub, tokenizers, safetensors,
  # matplotlib, scipy, networkx; pyvene and datasets (with the two it needs beyond those) must travel.
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl pyvene==0.1.8 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
  grep -qxF '/.whl/' .git/info/exclude || echo '/.whl/' >> .git/info/exclude
  echo "wheels in .whl/: carry '.whl' with the device run"
  exit 0
fi

PY=${PYTHON:-python3}
SHAPE=${SHAPE:-llama-7b}
LAYERS=${LAYERS:-0,16,31}
STEPS=${STEPS:-10}
DEVICE=cuda
DTYPE=bfloat16
if [ "${1:-}" = "--dry-run" ]; then
  SHAPE=llama-tiny LAYERS=0,1,2 STEPS=2 DEVICE=cpu DTYPE=float32
fi
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
mkdir -p benchmarks/results
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no GPU"; \
  "$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'; } \
  | tee "benchmarks/results/gpu-$SHAPE.env.txt"
timeout 540 "$PY" -m benchmarks.trial_vs_pyvene --models "$SHAPE" --device "$DEVICE" --dtype "$DTYPE" \
  --layers "$LAYERS" --steps "$STEPS" --warmup 2 --batches-per-epoch 2 --threads 8 --out "benchmarks/results/gpu-$SHAPE.json" \
  | tee "benchmarks/results/gpu-$SHAPE.txt"
