#!/usr/bin/env bash
# Runs training on a local NVIDIA GPU (install with the cuda extra), for debugging.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SYNOPSIS="[--dry-run] [MAIN ARGS...]"
USAGE="Run python -m stackgan_jax.main (\$PYTHON, default python3, from the active virtualenv) from
the repository root on the GPU: JAX_PLATFORMS=cuda (fail rather than fall back to the CPU) and
XLA_PYTHON_CLIENT_PREALLOCATE=false (allocate as needed instead of 75% of GPU memory up front,
so the memory in use is visible in nvidia-smi and other processes fit). JAX uses every visible
GPU; pick one with CUDA_VISIBLE_DEVICES=0. Every argument but --dry-run and --help goes to main
(after --, those too: -- --helpfull lists main's flags); relative paths are from the repository
root.

Example:
  CUDA_VISIBLE_DEVICES=0 launch/local_gpu.sh --config=configs/stage1.py:birds --workdir=runs/gpu"

local_main JAX_PLATFORMS=cuda XLA_PYTHON_CLIENT_PREALLOCATE=false -- "$@"
