#!/usr/bin/env bash
# Follows the training log that launch/tpu_train.sh writes on a worker of a Cloud TPU VM.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

USAGE="Print the last --lines of the training log on one worker (worker 0 by default) and follow it
(tail -F, which also picks up the next run's log). Ctrl-C stops following; training goes on.
--worker=all follows every worker's log, interleaved.

Example:
  launch/tpu_logs.sh --name=sg --zone=us-central2-b --worker=3"

tpu_flags
remote_dir_flag
value_flag worker TPU_WORKER N "worker index; or all, a list 1,3 or a range 0-3" 0
value_flag log TRAIN_LOG PATH "log file, relative to --remote-dir" logs/latest.log
value_flag lines LOG_LINES N "lines of history to print first" 100
switch_flag no-follow NO_FOLLOW "print the last --lines and exit"
parse_flags "$@"
require_flags name zone
[[ $TPU_WORKER =~ ^(all|[0-9]+([,-][0-9]+)*)$ ]] ||
  usage_error "--worker must be N, all, N,M or N-M"
[[ $LOG_LINES =~ ^[0-9]+$ ]] || usage_error "--lines must be a number"

if [[ $TRAIN_LOG == /* ]]; then
  path=$TRAIN_LOG
else
  path="${REMOTE_DIR%/}/$TRAIN_LOG"
fi
tail=(tail -n "$LOG_LINES")
if ((!NO_FOLLOW)); then
  tail+=(-F)
fi
tpu_ssh "$TPU_WORKER" "$(quote "${tail[@]}" "$path")"
