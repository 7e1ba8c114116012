#!/usr/bin/env bash
# Deletes a Cloud TPU VM, or the queued resource it came from (--queued), after asking.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

USAGE="Delete the TPU VM (every worker and its disk: logs and anything not in gs:// are lost). A
TPU made with tpu_create.sh --queued is deleted through its queued resource (--queued: gcloud
... queued-resources delete --force, which deletes the node too). Asks first unless --yes.

Example:
  launch/tpu_delete.sh --name=sg --zone=us-central2-b --yes"

tpu_flags
switch_flag queued QUEUED "delete the queued resource of this name and its TPU VM"
switch_flag yes YES "do not ask for confirmation"
parse_flags "$@"
require_flags name zone

gcloud_scope
if ((QUEUED)); then
  what="queued resource $TPU_NAME and its TPU VM"
  command=(gcloud compute tpus queued-resources delete "$TPU_NAME" "${SCOPE[@]}" --force --quiet)
else
  what="TPU VM $TPU_NAME"
  command=(gcloud compute tpus tpu-vm delete "$TPU_NAME" "${SCOPE[@]}" --quiet)
fi
if ((!YES && !DRY_RUN)); then
  [[ -t 0 ]] || die "not deleting $what without confirmation: stdin is not a terminal; pass --yes"
  read -r -p "Delete $what in $ZONE${PROJECT_ID:+ (project $PROJECT_ID)}? [y/N] " answer
  [[ $answer == [yY] || $answer == [yY][eE][sS] ]] || die "not deleted"
fi
run "${command[@]}"
