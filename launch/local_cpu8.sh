#!/usr/bin/env bash
# Runs training on the CPU split into 8 virtual JAX devices: the data-parallel path on a laptop.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SYNOPSIS="[--dry-run] [MAIN ARGS...]"
USAGE="Run python -m stackgan_jax.main (\$PYTHON, default python3, from the active virtualenv) from
the repository root with JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES=8: the host CPU as 8 devices, so
the global batch is split 8 ways exactly as on 8 accelerators (it must divide by 8). Every
argument but --dry-run and --help goes to main (after --, those too: -- --helpfull lists main's
flags); relative paths are from the repository root.

Example:
  launch/local_cpu8.sh --config=configs/stage1.py:debug --workdir=runs/cpu8"

local_main JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES=8 -- "$@"
