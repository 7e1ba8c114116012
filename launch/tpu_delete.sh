#!/usr/bin/env bash
# Usage: launch/tpu_delete.sh --name=NAME --zone=ZONE [--project=PROJECT] [--queued] [--yes]
#
# Delete the TPU VM: every worker and its disk, so logs and anything not in gs:// are lost. A TPU
# made with tpu_create.sh --queued is deleted through its queued resource (--queued: gcloud ...
# queued-resources delete --force, which deletes the VM too). Asks first unless --yes.
#
#   --name=NAME --zone=ZONE      the TPU VM [$TPU_NAME, $ZONE]
#   --project=PROJECT            Google Cloud project [$PROJECT_ID, default gcloud's]
#   --queued                     delete the queued resource of this name and its TPU VM
#   --yes                        do not ask for confirmation
#
# Example: launch/tpu_delete.sh --name=sg --zone=us-central2-b --yes
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

parse_flags "$TPU_FLAGS queued yes" "$@"
require_flags name zone
SCOPE=(--zone="$ZONE" ${PROJECT_ID:+"--project=$PROJECT_ID"})

if ((QUEUED)); then
  what="queued resource $TPU_NAME and its TPU VM"
  delete=(gcloud compute tpus queued-resources delete "$TPU_NAME" "${SCOPE[@]}" --force --quiet)
else
  what="TPU VM $TPU_NAME"
  delete=(gcloud compute tpus tpu-vm delete "$TPU_NAME" "${SCOPE[@]}" --quiet)
fi
if ((!YES && !DRY_RUN)); then
  [[ -t 0 ]] || die "not deleting $what without confirmation: stdin is not a terminal; pass --yes"
  read -r -p "Delete $what in $ZONE${PROJECT_ID:+ (project $PROJECT_ID)}? [y/N] " answer
  [[ $answer == [yY] || $answer == [yY][eE][sS] ]] || die "not deleted"
fi
run "${delete[@]}"
