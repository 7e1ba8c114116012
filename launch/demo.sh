#!/usr/bin/env bash
# Usage: launch/demo.sh [--workdir=DIR] [--data_dir=DIR]
#
# The offline demo, end to end on a CPU: build the synthetic_birds dataset (2,000 procedural birds,
# MiniLM embeddings), train Stage-I then Stage-II with the 'demo' configs, draw a grid for four
# sentences, and score the attribute accuracy and FID of images generated for 500 held-out-species
# captions. Each step is the command a user would type, run with $PYTHON (default python3) from
# the repository root; a finished step is not redone (training resumes from its last checkpoint).
#
#   --workdir=DIR   both stages' workdirs and the outputs go here [$WORKDIR, default runs/demo]
#   --data_dir=DIR  TFDS data directory [$DATA_DIR, default ~/tensorflow_datasets]
#
# Example: launch/demo.sh --workdir=runs/demo
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

WORKDIR=${WORKDIR:-runs/demo} DATA_DIR=${DATA_DIR:-$HOME/tensorflow_datasets}
parse_flags "workdir=WORKDIR data_dir=DATA_DIR" "$@"
python=${PYTHON:-python3}
stage1="$WORKDIR/stage1"
stage2="$WORKDIR/stage2"

run cd "$REPO_DIR"
run "$python" -m stackgan_jax.data.prepare --dataset=synthetic_birds --data_dir="$DATA_DIR"
run "$python" -m stackgan_jax.main --config=configs/stage1.py:demo --workdir="$stage1" \
  --config.data.data_dir="$DATA_DIR"
run "$python" -m stackgan_jax.main --config=configs/stage2.py:demo --workdir="$stage2" \
  --config.data.data_dir="$DATA_DIR" --config.stage1_workdir="$stage1"
run "$python" -m stackgan_jax.sample --workdir="$stage2" --output="$WORKDIR/sentences.png" \
  --text="this bird has a red body and blue wings." \
  --text="a small bird with a yellow crown and a short orange beak." \
  --text="the bird is mostly green and has a black cap on its head." \
  --text="a white bird with grey wings and a long black bill."
# XLA:CPU's YNNPACK fusions make the FID Inception network half as fast on CPU
# (benchmarks/README.md); evaluation runs without them, training (where they help) with them.
for run_dir in "$stage1" "$stage2"; do
  run env XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= \
    "$python" -m stackgan_jax.evaluate --workdir="$run_dir" --metrics=attributes,fid \
    --num_samples=500
done
