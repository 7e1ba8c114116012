#!/usr/bin/env bash
# Usage: launch/tpu_train.sh --name=NAME --zone=ZONE --config=FILE:NAME [options] [--config.a.b=V...]
#                            [-- MAIN FLAGS]
#        launch/tpu_train.sh --name=NAME --zone=ZONE --stop
#
# Run python -m stackgan_jax.main --jax_distributed on every worker of a Cloud TPU VM at once (the
# same command on every host, as multi-host JAX needs), detached from ssh (setsid + nohup) so it
# survives the session, logging on each worker to ~/REMOTE_DIR/logs/RUN-stageN.log (logs/latest.log
# points to it; tpu_logs.sh follows it). --config.a.b=value overrides go to main in order (write
# them with '='). Training resumes from the latest checkpoint in the workdir, so rerunning this
# after a preemption (and tpu_create + tpu_setup) continues the run.
#
#   --name=NAME --zone=ZONE      the TPU VM [$TPU_NAME, $ZONE]
#   --project=PROJECT            Google Cloud project [$PROJECT_ID, default gcloud's]
#   --config=FILE:NAME           configs/stage1.py:birds or configs/stage2.py:... [$TRAIN_CONFIG]
#   --bucket=BUCKET              GCS bucket for the workdir and data dir [$BUCKET]
#   --run-name=RUN               run name in the default workdir [$RUN_NAME, default the config NAME]
#   --workdir=GS_PATH            [$TRAIN_WORKDIR, default gs://BUCKET/runs/RUN/stageN]
#   --data-dir=GS_PATH           TFDS data dir [$TFDS_DATA_DIR, default gs://BUCKET/tensorflow_datasets]
#   --stage1-workdir=GS_PATH     Stage-II only [$STAGE1_WORKDIR, default gs://BUCKET/runs/RUN/stage1]
#   --remote-dir=DIR             the repository on the workers, relative to home
#                                [$REMOTE_DIR, default stackgan-jax]
#   --stop                       stop the training this script started, on every worker
#
# Examples:
#   launch/tpu_train.sh --name=sg --zone=us-central2-b --bucket=my-bucket \
#       --config=configs/stage1.py:birds --config.train.global_batch_size=256
#   launch/tpu_train.sh --name=sg --zone=us-central2-b --bucket=my-bucket \
#       --config=configs/stage2.py:birds
#   launch/tpu_train.sh --name=sg --zone=us-central2-b --stop
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

REMOTE_DIR=${REMOTE_DIR:-stackgan-jax}
parse_flags "$TPU_FLAGS config=TRAIN_CONFIG bucket=BUCKET run-name=RUN_NAME workdir=TRAIN_WORKDIR
  data-dir=TFDS_DATA_DIR stage1-workdir=STAGE1_WORKDIR remote-dir=REMOTE_DIR stop
  --config.* --" "$@"
require_flags name zone
SCOPE=(--zone="$ZONE" ${PROJECT_ID:+"--project=$PROJECT_ID"})
dir=$(quote "$REMOTE_DIR")
# Whether the training this script started still runs (expanded on the worker). logs/train.pid
# holds its pid, which is also its process group (see below).
# shellcheck disable=SC2016
running='[ -f logs/train.pid ] && kill -0 "$(cat logs/train.pid)" 2>/dev/null'

if ((STOP)); then
  tpu_ssh all "cd $dir && if $running; then kill -TERM -- \"-\$(cat logs/train.pid)\"
&& echo \"\$(hostname): stopped\"; else echo \"\$(hostname): not running\"; fi"
  exit 0
fi

require_flags config
[[ $TRAIN_CONFIG =~ stage([12])\.py(:|$) ]] ||
  usage_error "--config must be configs/stage1.py or configs/stage2.py[:NAME]"
stage=${BASH_REMATCH[1]}
config_name=${TRAIN_CONFIG#*.py}
config_name=${config_name#:}
RUN_NAME=${RUN_NAME:-${config_name:-demo}} # the configs' default is demo
[[ $RUN_NAME =~ ^[A-Za-z0-9_.-]+$ ]] || usage_error "--run-name must be letters, digits, _ . -"
BUCKET=${BUCKET#gs://}
BUCKET=${BUCKET%/}
# need_bucket FLAG: a usage error unless --bucket is set, for the default of FLAG.
need_bucket() {
  [[ -n $BUCKET ]] || usage_error "pass --bucket (or \$BUCKET), or $1"
}
# overridden PREFIX: whether a pass-through argument starts with PREFIX (the user's value wins).
overridden() {
  local arg
  for arg in ${ARGS[@]+"${ARGS[@]}"}; do
    [[ $arg != "$1"* ]] || return 0
  done
  return 1
}

if [[ -z $TRAIN_WORKDIR ]]; then
  need_bucket --workdir
  TRAIN_WORKDIR=gs://$BUCKET/runs/$RUN_NAME/stage$stage
fi
[[ $TRAIN_WORKDIR == gs://?* ]] ||
  usage_error "--workdir must be a gs:// path: every worker writes checkpoints to the same workdir"
main=(.venv/bin/python -m stackgan_jax.main --config="$TRAIN_CONFIG" --workdir="$TRAIN_WORKDIR")
if ! overridden --config.data.data_dir=; then
  if [[ -z $TFDS_DATA_DIR ]]; then
    need_bucket --data-dir
    TFDS_DATA_DIR=gs://$BUCKET/tensorflow_datasets
  fi
  main+=(--config.data.data_dir="$TFDS_DATA_DIR")
fi
if ((stage == 2)) && ! overridden --config.stage1_workdir=; then
  if [[ -z $STAGE1_WORKDIR ]]; then
    need_bucket --stage1-workdir
    STAGE1_WORKDIR=gs://$BUCKET/runs/$RUN_NAME/stage1
  fi
  main+=(--config.stage1_workdir="$STAGE1_WORKDIR")
fi
main+=(--jax_distributed ${ARGS[@]+"${ARGS[@]}"})

# setsid gives training a session of its own, so the ssh hang-up does not reach it (nohup for good
# measure). The remote shell has no job control, so setsid does not fork: $! is python's pid, which
# is also its process group, the one --stop kills.
log=$RUN_NAME-stage$stage.log
tpu_ssh all "set -e; cd $dir; mkdir -p logs; if $running; then
echo \"\$(hostname): already training (pid \$(cat logs/train.pid));
stop it with tpu_train.sh --stop\" >&2;
exit 1; fi; setsid nohup $(quote "${main[@]}") > logs/$log 2>&1 < /dev/null &
echo \$! > logs/train.pid; ln -sfn $log logs/latest.log;
echo \"\$(hostname): started, log in $dir/logs/$log\""
if ((!DRY_RUN)); then
  note "follow it with: launch/tpu_logs.sh --name=$TPU_NAME --zone=$ZONE"
fi
