"""Running our step and the PyTorch reference side by side on the same CPUs (library).

Shared by `compare_torch.py` (throughput) and `profile_step.py` (per-op profiles):
- `pin_cpus` restricts this process, and so the PyTorch process it starts, to the same CPUs;
- `single_cpu_device` makes JAX use one XLA CPU device, whose intra-op (Eigen) pool XLA sizes
  from the CPUs the process may use, so pinning to N CPUs gives N compute threads;
- `run_reference` runs `../shared/bench/torch_reference.py` in another interpreter (PyTorch is
  never a dependency of this project) with `torch.set_num_threads` and OMP_NUM_THREADS /
  MKL_NUM_THREADS set to the same number, through a driver (`TORCH_DRIVER` by default).

Nothing here imports PyTorch. `pin_cpus` and `single_cpu_device` must run before JAX starts its
CPU backend.
"""

import json
import os
import pathlib
import subprocess
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]

DEFAULT_TORCH_REFERENCE = str(REPO.parent / "shared" / "bench" / "torch_reference.py")

# The flags both side-by-side scripts take.
THREADS = flags.DEFINE_integer("threads", 2, "CPUs / threads for each side.")
CPUS = flags.DEFINE_list(
    "cpus", None, "CPU ids to pin both sides to (default: the first --threads allowed ones)."
)
TORCH_PYTHON = flags.DEFINE_string(
    "torch_python", None, "Python interpreter that has torch, e.g. /tmp/torchvenv/bin/python."
)
TORCH_REFERENCE = flags.DEFINE_string(
    "torch_reference",
    DEFAULT_TORCH_REFERENCE,
    "The PyTorch reference script (usage: torch_reference.py STAGE BATCH STEPS).",
)

# The reference script runs this many untimed iterations before timing; ours matches it.
WARMUP = 2

# Runs the reference's `main()` with a thread count set first (its own script sets none).
# Usage: python -c TORCH_DRIVER THREADS REFERENCE STAGE BATCH STEPS
TORCH_DRIVER = """
import runpy, sys
import torch
torch.set_num_threads(int(sys.argv[1]))
path = sys.argv[2]
sys.argv = [path] + sys.argv[3:]
runpy.run_path(path, run_name="__main__")
"""


def pin_cpus(threads: int, cpus: Sequence[str] | None) -> list[int]:
    """Restricts this process (and its children) to `cpus` or the first `threads` allowed CPUs."""
    allowed = sorted(os.sched_getaffinity(0))
    chosen = [int(c) for c in cpus] if cpus else allowed[:threads]
    if len(chosen) != threads or not set(chosen) <= set(allowed):
        raise app.UsageError(f"Need {threads} CPUs among {allowed}, got {chosen}.")
    os.sched_setaffinity(0, chosen)
    return chosen


def single_cpu_device() -> str:
    """One XLA CPU device (must run before JAX's backend starts); returns the XLA_FLAGS left."""
    kept = [
        f
        for f in os.environ.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    ]
    os.environ["XLA_FLAGS"] = " ".join(kept)
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", 1)
    return os.environ["XLA_FLAGS"]


def check_pytorch_arch(config: ml_collections.ConfigDict) -> None:
    """Raises a usage error unless `config` has the reference's ('pytorch') architecture."""
    if config.model.arch != "pytorch":
        raise app.UsageError(f"Config {config.name} is not a 'pytorch'-arch preset.")


def run_reference(
    torch_python: str,
    reference: str,
    stage: int,
    batch: int,
    steps: int,
    threads: int,
    driver: Sequence[str] = ("-c", TORCH_DRIVER),
) -> dict[str, Any]:
    """One run of the PyTorch reference; the last JSON line its driver prints.

    Args:
      torch_python: an interpreter that has torch.
      reference: path of `torch_reference.py`.
      stage: 1 or 2.
      batch: batch size.
      steps: timed iterations (after the reference's `WARMUP` untimed ones).
      threads: PyTorch's intra-op threads.
      driver: what goes between the interpreter and `THREADS REFERENCE STAGE BATCH STEPS` on the
        command line; the default runs the reference's `main()` as it is.

    Returns:
      The record (`img_per_s`, `sec_per_step`, `params_*`, ... and whatever the driver adds).

    Raises:
      RuntimeError: the driver failed or ran with another thread count.
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [torch_python, *driver, str(threads), reference, str(stage), str(batch), str(steps)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"The PyTorch reference failed:\n{done.stderr[-4000:]}")
    record = json.loads(done.stdout.strip().splitlines()[-1])
    if record.get("threads") != threads:
        raise RuntimeError(
            f"The reference ran with {record.get('threads')} threads, not {threads}."
        )
    return record
