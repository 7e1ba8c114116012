#!/usr/bin/env bash
# Creates a Cloud TPU VM: on demand, as a spot VM (--spot), or through a queued resource
# (--queued, optionally --spot), which waits for capacity instead of failing when there is none.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

USAGE="Create a Cloud TPU VM (every host of a pod slice). Without --queued, gcloud returns once the
VM is READY; with --queued it requests a queued resource of the same name and polls until it is
ACTIVE (--no-wait to return at once). --version defaults from the accelerator type:
v4 tpu-ubuntu2204-base, v5litepod v2-alpha-tpuv5-lite, v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e.

Example:
  launch/tpu_create.sh --name=sg --zone=us-central2-b --accelerator-type=v4-32 --spot"
AFTER_DASHDASH="more flags for the gcloud create command, e.g. -- --network=NET"

tpu_flags
value_flag accelerator-type ACCELERATOR_TYPE TYPE "TPU type and size, e.g. v4-32, v5litepod-16"
value_flag version RUNTIME_VERSION VERSION "TPU software (runtime) version"
switch_flag spot SPOT "spot capacity: much cheaper, can be preempted at any time"
switch_flag queued QUEUED "create through a queued resource (gcloud ... queued-resources create)"
value_flag valid-until-duration VALID_UNTIL_DURATION DURATION \
  "with --queued: give up if not provisioned within this long, e.g. 6h"
switch_flag no-wait NO_WAIT "with --queued: return once the request is made"
value_flag poll-seconds POLL_SECONDS SECONDS "with --queued: seconds between state checks" 30
parse_flags "$@"
require_flags name zone accelerator-type

if [[ -z $RUNTIME_VERSION ]]; then
  case $ACCELERATOR_TYPE in
    v4-*) RUNTIME_VERSION=tpu-ubuntu2204-base ;;
    v5litepod-* | v5e-*) RUNTIME_VERSION=v2-alpha-tpuv5-lite ;;
    v5p-*) RUNTIME_VERSION=v2-alpha-tpuv5 ;;
    v6e-*) RUNTIME_VERSION=v2-alpha-tpuv6e ;;
    *) usage_error "no default --version for accelerator type $ACCELERATOR_TYPE; pass --version" ;;
  esac
fi
if ((!QUEUED)) && [[ -n $VALID_UNTIL_DURATION || $NO_WAIT == 1 ]]; then
  usage_error "--valid-until-duration and --no-wait need --queued"
fi
[[ $POLL_SECONDS =~ ^[1-9][0-9]*$ ]] || usage_error "--poll-seconds must be a positive integer"

gcloud_scope
options=(--accelerator-type="$ACCELERATOR_TYPE")
if ((QUEUED)); then
  options+=(--runtime-version="$RUNTIME_VERSION" --node-id="$TPU_NAME")
  if [[ -n $VALID_UNTIL_DURATION ]]; then
    options+=(--valid-until-duration="$VALID_UNTIL_DURATION")
  fi
else
  options+=(--version="$RUNTIME_VERSION")
fi
if ((SPOT)); then
  options+=(--spot)
fi
options+=(${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"})

if ((!QUEUED)); then
  run gcloud compute tpus tpu-vm create "$TPU_NAME" "${SCOPE[@]}" "${options[@]}"
else
  run gcloud compute tpus queued-resources create "$TPU_NAME" "${SCOPE[@]}" "${options[@]}"
  describe=(gcloud compute tpus queued-resources describe "$TPU_NAME" "${SCOPE[@]}"
    --format='value(state.state)')
  if ((NO_WAIT)); then
    note "requested; check with: $(quote "${describe[@]}")"
  elif ((DRY_RUN)); then
    echo "# then every ${POLL_SECONDS}s, until it prints ACTIVE:"
    run "${describe[@]}"
  else
    while true; do
      state="$("${describe[@]}")"
      case $state in
        ACTIVE) break ;;
        FAILED | SUSPENDING | SUSPENDED) die "queued resource $TPU_NAME is $state" ;;
      esac
      note "queued resource $TPU_NAME is ${state:-not visible yet}; next check in ${POLL_SECONDS}s"
      sleep "$POLL_SECONDS"
    done
  fi
fi
if ((!DRY_RUN && !NO_WAIT)); then
  note "TPU $TPU_NAME is ready; next: launch/tpu_setup.sh --name=$TPU_NAME --zone=$ZONE"
fi
