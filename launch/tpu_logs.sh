#!/usr/bin/env bash
# Usage: launch/tpu_logs.sh --name=NAME --zone=ZONE [options]
#
# Print the last --lines of the training log that tpu_train.sh writes on a worker, and follow it
# (tail -F, which also picks up the next run's log). Ctrl-C stops following; training goes on.
#
#   --name=NAME --zone=ZONE      the TPU VM [$TPU_NAME, $ZONE]
#   --project=PROJECT            Google Cloud project [$PROJECT_ID, default gcloud's]
#   --worker=N                   worker index; or all (interleaved), a list 1,3 or a range 0-3
#                                [$TPU_WORKER, default 0]
#   --log=PATH                   relative to --remote-dir [$TRAIN_LOG, default logs/latest.log]
#   --lines=N                    lines of history to print first [$LOG_LINES, default 100]
#   --no-follow                  print the last --lines and exit
#   --remote-dir=DIR             the repository on the workers, relative to home
#                                [$REMOTE_DIR, default stackgan-jax]
#
# Example: launch/tpu_logs.sh --name=sg --zone=us-central2-b --worker=3
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

TPU_WORKER=${TPU_WORKER:-0} TRAIN_LOG=${TRAIN_LOG:-logs/latest.log} LOG_LINES=${LOG_LINES:-100}
REMOTE_DIR=${REMOTE_DIR:-stackgan-jax}
parse_flags "$TPU_FLAGS worker=TPU_WORKER log=TRAIN_LOG lines=LOG_LINES no-follow
  remote-dir=REMOTE_DIR" "$@"
require_flags name zone
SCOPE=(--zone="$ZONE" ${PROJECT_ID:+"--project=$PROJECT_ID"})

if [[ $TRAIN_LOG != /* ]]; then
  TRAIN_LOG=${REMOTE_DIR%/}/$TRAIN_LOG
fi
follow=(-F)
if ((NO_FOLLOW)); then
  follow=()
fi
tpu_ssh "$TPU_WORKER" "$(quote tail -n "$LOG_LINES" ${follow[@]+"${follow[@]}"} "$TRAIN_LOG")"
