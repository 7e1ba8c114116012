"""Data parallelism: a one-axis device mesh, shardings, and multi-host setup.

State is replicated and batches are sharded along the mesh's `data` axis; `jax.jit` partitions
the step. This is what `jax.pmap` became (since JAX 0.8 it is rebuilt on jit + shard_map), and
the same code runs on one CPU, one GPU or a multi-host TPU pod. BatchNorm statistics are taken
over the global batch, so results do not depend on the number of devices.
"""

from typing import Any

import jax
import numpy as np
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from stackgan_jax.errors import ConfigError

DATA_AXIS = "data"


def make_mesh(devices: list[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A mesh with the single axis `data` over `devices` (default: all, of all processes)."""
    devices = jax.devices() if devices is None else devices
    return jax.make_mesh(
        (len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
    )


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Sharding of arrays held whole on every device (parameters, optimiser state)."""
    return NamedSharding(mesh, P())


def batch_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Sharding of arrays split along their leading (batch) axis over the `data` axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def check_global_batch(global_batch_size: int, process_count: int | None = None) -> None:
    """Fails clearly unless the global batch divides evenly over devices and processes.

    The one check of the batch size: the input pipeline runs it before it builds a batch.

    Args:
        global_batch_size: examples per step over all processes.
        process_count: the number of processes; `jax.process_count()` by default.
    """
    devices = jax.device_count()
    processes = jax.process_count() if process_count is None else process_count
    if global_batch_size % devices:
        raise ConfigError(
            f"The global batch size {global_batch_size} must be divisible by the number of "
            f"devices ({devices}); set --config.train.global_batch_size to a multiple of it."
        )
    if global_batch_size % processes:
        raise ConfigError(
            f"The global batch size {global_batch_size} must be divisible by the number of "
            f"processes ({processes})."
        )


def to_global(local_batch: Any, mesh: jax.sharding.Mesh) -> Any:
    """This process's slice of a batch (a pytree of NumPy arrays) → global sharded arrays."""
    sharding = batch_sharded(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch
    )


def maybe_initialize_distributed(
    enabled: bool,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Calls `jax.distributed.initialize` if asked, then logs the process and device layout.

    It must run before anything touches the devices. It is opt-in because on a single machine
    without a cluster environment it has nothing to connect to.

    Args:
        enabled: whether to initialise the distributed runtime.
        coordinator_address: 'host:port' of process 0; None to auto-detect (Cloud TPU, Slurm,
            Kubernetes, or the JAX_COORDINATOR_ADDRESS environment variable).
        num_processes: how many processes take part; None to auto-detect.
        process_id: this process's index; None to auto-detect.
    """
    if enabled:
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    logging.info(
        "JAX process %d of %d, %d local of %d devices (%s)",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        jax.devices()[0].device_kind,
    )
