#!/usr/bin/env bash
# Usage: launch/local_cpu8.sh [MAIN ARGS...]
#
# Train on the host CPU split into 8 virtual JAX devices: the data-parallel path on a laptop, the
# global batch (which must divide by 8) split 8 ways exactly as on 8 accelerators. Runs
# `python -m stackgan_jax.main MAIN ARGS` ($PYTHON, default python3) from the repository root;
# every argument but --dry-run and --help goes to main (after --, those too: -- --helpfull lists
# main's flags).
#
# Example: launch/local_cpu8.sh --config=configs/stage1.py:debug --workdir=runs/cpu8
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

parse_flags "*" "$@"
run cd "$REPO_DIR"
run env JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES=8 \
  "${PYTHON:-python3}" -m stackgan_jax.main ${ARGS[@]+"${ARGS[@]}"}
