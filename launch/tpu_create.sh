#!/usr/bin/env bash
# Usage: launch/tpu_create.sh --name=NAME --zone=ZONE --accelerator-type=TYPE [options] [-- FLAGS]
#
# Create a Cloud TPU VM (every host of a pod slice): on demand, as a spot VM (--spot), or through
# a queued resource (--queued, optionally --spot), which waits for capacity instead of failing
# when there is none. Without --queued, gcloud returns once the VM is READY; with --queued this
# polls until the queued resource is ACTIVE.
#
#   --name=NAME --zone=ZONE      the TPU VM (and queued resource) [$TPU_NAME, $ZONE]
#   --project=PROJECT            Google Cloud project [$PROJECT_ID, default gcloud's]
#   --accelerator-type=TYPE      TPU type and size, e.g. v4-32, v5litepod-16 [$ACCELERATOR_TYPE]
#   --version=VERSION            TPU runtime [$RUNTIME_VERSION]; by default v4: tpu-ubuntu2204-base,
#                                v5litepod: v2-alpha-tpuv5-lite, v5p: v2-alpha-tpuv5,
#                                v6e: v2-alpha-tpuv6e
#   --spot                       spot capacity: much cheaper, can be preempted at any time
#   --queued                     create through a queued resource
#   --valid-until-duration=D     with --queued: give up if not provisioned within D, e.g. 6h
#                                [$VALID_UNTIL_DURATION]
#   --no-wait                    with --queued: return once the request is made
#   --poll-seconds=N             with --queued: seconds between state checks [$POLL_SECONDS, 30]
#   -- FLAGS                     more flags for gcloud's create, e.g. -- --network=NET
#
# Example: launch/tpu_create.sh --name=sg --zone=us-central2-b --accelerator-type=v4-32 --spot
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

POLL_SECONDS=${POLL_SECONDS:-30}
parse_flags "$TPU_FLAGS accelerator-type=ACCELERATOR_TYPE version=RUNTIME_VERSION spot queued
  valid-until-duration=VALID_UNTIL_DURATION no-wait poll-seconds=POLL_SECONDS --" "$@"
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
SCOPE=(--zone="$ZONE" ${PROJECT_ID:+"--project=$PROJECT_ID"})
spot_flag=()
if ((SPOT)); then
  spot_flag=(--spot)
fi

if ((!QUEUED)); then
  run gcloud compute tpus tpu-vm create "$TPU_NAME" "${SCOPE[@]}" \
    --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" \
    ${spot_flag[@]+"${spot_flag[@]}"} ${ARGS[@]+"${ARGS[@]}"}
else
  run gcloud compute tpus queued-resources create "$TPU_NAME" "${SCOPE[@]}" \
    --accelerator-type="$ACCELERATOR_TYPE" --runtime-version="$RUNTIME_VERSION" \
    --node-id="$TPU_NAME" ${VALID_UNTIL_DURATION:+"--valid-until-duration=$VALID_UNTIL_DURATION"} \
    ${spot_flag[@]+"${spot_flag[@]}"} ${ARGS[@]+"${ARGS[@]}"}
  describe=(gcloud compute tpus queued-resources describe "$TPU_NAME" "${SCOPE[@]}"
    --format='value(state.state)')
  if ((NO_WAIT)); then
    note "requested; check with: $(quote "${describe[@]}")"
    exit 0
  elif ((DRY_RUN)); then
    echo "# then every ${POLL_SECONDS}s, until it prints ACTIVE:"
    run "${describe[@]}"
    exit 0
  fi
  # Polled without `run`, which would print each check.
  while true; do
    state=$("${describe[@]}")
    case $state in
      ACTIVE) break ;;
      FAILED | SUSPENDING | SUSPENDED) die "queued resource $TPU_NAME is $state" ;;
    esac
    note "queued resource $TPU_NAME is ${state:-not visible yet}; next check in ${POLL_SECONDS}s"
    sleep "$POLL_SECONDS"
  done
fi
if ((!DRY_RUN)); then
  note "TPU $TPU_NAME is ready; next: launch/tpu_setup.sh --name=$TPU_NAME --zone=$ZONE"
fi
