#!/usr/bin/env bash
# GPU check (docs/GPU.md): trains the voxel classifier and the 3D U-Net with AMP on phantoms, infers one whole
# 400x512x512 head, runs DDP through the training task's launcher with NCCL; prints seconds, voxels/s and peak GPU
# memory per step and the card's name, writes bench/results/gpu_check.json. About 5 minutes on one GPU.
#   bash bench/gpu_check.sh            # on a CUDA machine
#   bash bench/gpu_check.sh --dry      # the same code path on the CPU, tiny sizes (under a minute)
# Other options (--out FILE, --iterations N, --ranks N) go to bench/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3

dry=0
for arg in "$@"; do
    if [ "$arg" = "--dry" ]; then dry=1; fi
done
if [ "$dry" = 1 ]; then
    export CUDA_VISIBLE_DEVICES=""  # the CPU path even on a CUDA machine (gloo, no AMP)
elif ! { command -v nvidia-smi >/dev/null 2>&1 || [ -e /dev/nvidia0 ]; }; then
    echo "no CUDA device: run with --dry for the CPU check" >&2
    exit 2
fi
if [ "$dry" = 0 ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
fi
exec "$PYTHON" bench/gpu_check.py "$@"
