#!/usr/bin/env bash
# Usage: launch/local_gpu.sh [MAIN ARGS...]
#
# Train on a local NVIDIA GPU (install with the cuda extra), for debugging. Runs
# `python -m stackgan_jax.main MAIN ARGS` ($PYTHON, default python3) from the repository root with
# JAX_PLATFORMS=cuda (fail rather than fall back to the CPU) and XLA_PYTHON_CLIENT_PREALLOCATE=false
# (allocate as needed instead of 75% of GPU memory up front, so nvidia-smi shows the memory in use
# and other processes fit). JAX uses every visible GPU; pick one with CUDA_VISIBLE_DEVICES=0. Every
# argument but --dry-run and --help goes to main (after --, those too: -- --helpfull lists main's
# flags).
#
# Example: CUDA_VISIBLE_DEVICES=0 launch/local_gpu.sh --config=configs/stage1.py:birds --workdir=runs/gpu
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

parse_flags "*" "$@"
run cd "$REPO_DIR"
run env JAX_PLATFORMS=cuda XLA_PYTHON_CLIENT_PREALLOCATE=false \
  "${PYTHON:-python3}" -m stackgan_jax.main ${ARGS[@]+"${ARGS[@]}"}
