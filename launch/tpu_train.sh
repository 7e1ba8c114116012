#!/usr/bin/env bash
# Starts training on every worker of a Cloud TPU VM at once, detached (setsid + nohup) with a log
# file per worker, so it survives the ssh session; or stops it (--stop).
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

USAGE="Run python -m stackgan_jax.main --jax_distributed on all workers at once (the same command on
every host, as multi-host JAX needs), detached from ssh, logging on each worker to
  ~/REMOTE_DIR/logs/RUN-stageN.log  (logs/latest.log points to it; launch/tpu_logs.sh follows it).
--config=configs/stageN.py:NAME is passed through; so is every --config.a.b=value override, in
order (write them with '=': --config.train.global_batch_size=256). The workdir defaults to
gs://BUCKET/runs/RUN/stageN, the TFDS data dir to gs://BUCKET/tensorflow_datasets, and a Stage-II
run gets --config.stage1_workdir=gs://BUCKET/runs/RUN/stage1 unless you pass one. RUN defaults
to NAME. Training resumes from the latest checkpoint in the workdir, so rerunning this after a
preemption (and tpu_create + tpu_setup) continues the run.

Examples:
  launch/tpu_train.sh --name=sg --zone=us-central2-b --bucket=my-bucket \\
      --config=configs/stage1.py:birds --config.train.global_batch_size=256
  launch/tpu_train.sh --name=sg --zone=us-central2-b --bucket=my-bucket \\
      --config=configs/stage2.py:birds
  launch/tpu_train.sh --name=sg --zone=us-central2-b --stop"
ACCEPT_EXTRA="--config.*"
EXTRA_HINT="training takes --config=... and --config.a.b=value; other flags for main go after --"
AFTER_DASHDASH="more flags for stackgan_jax.main, passed through as they are"

tpu_flags
remote_dir_flag
value_flag config TRAIN_CONFIG FILE:NAME "training config, e.g. configs/stage1.py:birds (required)"
value_flag bucket BUCKET BUCKET "GCS bucket for the workdir and data dir (gs:// optional)"
value_flag run-name RUN_NAME RUN "run name in the default workdir (default: the config NAME)"
value_flag workdir TRAIN_WORKDIR GS_PATH "workdir (default gs://BUCKET/runs/RUN/stageN)"
value_flag data-dir TFDS_DATA_DIR GS_PATH "TFDS data dir (default gs://BUCKET/tensorflow_datasets)"
value_flag stage1-workdir STAGE1_WORKDIR GS_PATH \
  "Stage-II only: the Stage-I workdir (default gs://BUCKET/runs/RUN/stage1)"
switch_flag stop STOP "stop the training started by this script on all workers, and exit"
parse_flags "$@"
require_flags name zone

# has_override PREFIX: whether the pass-through arguments already set PREFIX (e.g. --config.x=).
has_override() {
  local arg
  for arg in ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}; do
    [[ $arg != "$1"* ]] || return 0
  done
  return 1
}

dir=$(quote "$REMOTE_DIR")
pid_file=logs/train.pid
# Training's process group leader is recorded in logs/train.pid; this tests whether it still runs.
running="[ -f $pid_file ] && kill -0 \"\$(cat $pid_file)\" 2>/dev/null"

if ((STOP)); then
  tpu_ssh all "cd $dir && if $running; then kill -TERM -- \"-\$(cat $pid_file)\"
&& echo \"\$(hostname): stopped\"; else echo \"\$(hostname): not running\"; fi"
  exit 0
fi

require_flags config
[[ $TRAIN_CONFIG =~ stage([12])\.py(:|$) ]] ||
  usage_error "--config must be configs/stage1.py or configs/stage2.py[:NAME]"
stage=${BASH_REMATCH[1]}
config_name=${TRAIN_CONFIG#*.py}
config_name=${config_name#:}
RUN_NAME=${RUN_NAME:-${config_name:-demo}}
[[ $RUN_NAME =~ ^[A-Za-z0-9_.-]+$ ]] || usage_error "--run-name must be letters, digits, _ . -"
BUCKET=${BUCKET#gs://}
BUCKET=${BUCKET%/}

# need_bucket FLAG: a usage error unless --bucket is set (FLAG is the alternative to name).
need_bucket() {
  [[ -n $BUCKET ]] || usage_error "pass --bucket (or \$BUCKET), or $1"
}
if [[ -z $TRAIN_WORKDIR ]]; then
  need_bucket --workdir
  TRAIN_WORKDIR="gs://$BUCKET/runs/$RUN_NAME/stage$stage"
fi
[[ $TRAIN_WORKDIR == gs://?* ]] ||
  usage_error "--workdir must be a gs:// path: every worker writes checkpoints to the same workdir"

main=(.venv/bin/python -m stackgan_jax.main --config="$TRAIN_CONFIG" --workdir="$TRAIN_WORKDIR")
if ! has_override --config.data.data_dir=; then
  if [[ -z $TFDS_DATA_DIR ]]; then
    need_bucket --data-dir
    TFDS_DATA_DIR="gs://$BUCKET/tensorflow_datasets"
  fi
  main+=(--config.data.data_dir="$TFDS_DATA_DIR")
fi
if ((stage == 2)) && ! has_override --config.stage1_workdir=; then
  if [[ -z $STAGE1_WORKDIR ]]; then
    need_bucket --stage1-workdir
    STAGE1_WORKDIR="gs://$BUCKET/runs/$RUN_NAME/stage1"
  fi
  main+=(--config.stage1_workdir="$STAGE1_WORKDIR")
fi
main+=(--jax_distributed ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"})

log="$RUN_NAME-stage$stage.log"
# setsid gives training a session of its own, so the ssh hang-up does not reach it (nohup for good
# measure). The remote shell has no job control, so setsid does not fork: $! is python's pid, which
# is also its process group, the one --stop kills.
tpu_ssh all "set -e; cd $dir; mkdir -p logs; if $running; then
echo \"\$(hostname): already training (pid \$(cat $pid_file));
stop it with tpu_train.sh --stop\" >&2;
exit 1; fi; setsid nohup $(quote "${main[@]}") > logs/$log 2>&1 < /dev/null & echo \$! > $pid_file;
ln -sfn $log logs/latest.log; echo \"\$(hostname): started, log in $dir/logs/$log\""
if ((!DRY_RUN)); then
  note "follow it with: launch/tpu_logs.sh --name=$TPU_NAME --zone=$ZONE"
fi
