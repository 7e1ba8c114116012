"""The real jitted training step on synthetic in-memory inputs, and its timing.

The step is built exactly as `stackgan_jax.train.train_and_evaluate` builds it: a one-axis
`('data',)` mesh over all devices, the state created by a jitted `create_state` with replicated
out-shardings, and `jax.jit(steps.train_step, in_shardings=(replicated, batch_sharded),
out_shardings=(replicated, replicated), donate_argnums=(0,))`. Only the inputs differ: one batch
of random images in [-1, 1] and random embeddings, already on the devices, is fed every step,
and a Stage-II run wraps a randomly initialised (not a trained) frozen Stage-I generator.

Nothing here imports TensorFlow (nor `stackgan_jax.train`, which pulls it in through CLU), so
it runs where only JAX is installed.
"""

import dataclasses
import functools
import statistics
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import flags
from ml_collections import config_flags

from benchmarks import flops
from stackgan_jax import models, parallel
from stackgan_jax import state as state_lib
from stackgan_jax import steps as steps_lib

# CUB-200-2011's training split; only sets where the (unused) learning-rate decay falls.
NOMINAL_TRAIN_EXAMPLES = 8855


def define_config_flags() -> tuple[flags.FlagHolder, flags.FlagHolder]:
    """Defines a benchmark script's --config (a training config) and --batch_size flags.

    Returns:
      (--config, --batch_size); the script's main marks --config required, and a --batch_size
      left out means the config's `train.global_batch_size`.
    """
    config = config_flags.DEFINE_config_file(
        "config", None, "Training config, e.g. configs/stage1.py:birds.", lock_config=True
    )
    batch_size = flags.DEFINE_integer(
        "batch_size", None, "Global batch size (default: the config's train.global_batch_size)."
    )
    return config, batch_size


def configure(
    config: ml_collections.ConfigDict, batch_size: int | None = None, dtype: str | None = None
) -> ml_collections.ConfigDict:
    """A copy of `config` with the global batch size and computation dtype overridden if given."""
    config = ml_collections.ConfigDict(config.to_dict())
    if batch_size is not None:
        config.train.global_batch_size = batch_size
    if dtype is not None:
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
        config.model.dtype = dtype
    return config


def synthetic_batch(config: ml_collections.ConfigDict, seed: int = 0) -> dict[str, np.ndarray]:
    """One global batch with the keys and shapes the step of `config` takes (as `make_dataset`).

    Args:
      config: a training config; its global batch size, stage and arch set the shapes.
      seed: NumPy seed.

    Returns:
      'image' float32 [B, S, S, 3] uniform in [-1, 1], 'embedding' float32 [B, text_dim]
      standard normal and, for arch 'tf', 'wrong_image' like 'image'.
    """
    batch = config.train.global_batch_size
    size = models.IMAGE_SIZE[config.stage]
    rng = np.random.default_rng(seed)

    def images() -> np.ndarray:
        return rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)

    out = {
        "image": images(),
        "embedding": rng.standard_normal((batch, config.model.text_dim), dtype=np.float32),
    }
    if config.model.arch == "tf":
        out["wrong_image"] = images()
    return out


@dataclasses.dataclass
class StepBench:
    """A compiled training step with its live state and input batch.

    Attributes:
      config: the (overridden) training config.
      mesh: the device mesh.
      step: the AOT-compiled step, `(state, batch) -> (state, metrics)`; it donates the state.
      state: the current state (replaced by every timed call).
      batch: the global batch on the devices, sharded along `data`.
      compile_s: seconds spent lowering and compiling the step.
    """

    config: ml_collections.ConfigDict
    mesh: jax.sharding.Mesh
    step: Any
    state: Any
    batch: dict[str, jax.Array]
    compile_s: float

    def run(self) -> dict[str, jax.Array]:
        """One step; returns its metrics without waiting for them."""
        self.state, metrics = self.step(self.state, self.batch)
        return metrics


def build(config: ml_collections.ConfigDict, devices: list[jax.Device] | None = None) -> StepBench:
    """Creates the state and compiles the training step of `config`, as `train.py` does.

    Args:
      config: a training config (see `configure`).
      devices: the mesh's devices; all devices by default.

    Returns:
      The compiled step, its initial state and a synthetic batch.
    """
    parallel.check_global_batch(config.train.global_batch_size)
    mesh = parallel.make_mesh(devices)
    replicated = parallel.replicated(mesh)
    steps_per_epoch = max(1, NOMINAL_TRAIN_EXAMPLES // config.train.global_batch_size)
    optimizer = state_lib.make_optimizer(config.train, steps_per_epoch)
    step_config = steps_lib.StepConfig.from_config(config)

    stage1_variables = None
    if config.stage == 2:
        # Stands in for the restored Stage-I checkpoint: same shapes, random weights.
        init_stage1 = jax.jit(
            functools.partial(models.init_variables, models.stage1_generator(config.model)),
            out_shardings=replicated,
        )
        stage1_variables = init_stage1(
            jax.random.key(config.seed + 1), models.generator_inputs(config.model, 1, 2)
        )
    create = jax.jit(
        functools.partial(state_lib.create_state, config, optimizer=optimizer),
        out_shardings=replicated,
    )
    state = create(jax.random.key(config.seed), stage1_variables=stage1_variables)
    # Every process makes the same global batch and passes on its own rows, as the pipeline does.
    rows = np.split(np.arange(config.train.global_batch_size), jax.process_count())
    local = {
        k: v[rows[jax.process_index()]] for k, v in synthetic_batch(config, config.seed).items()
    }
    batch = parallel.to_global(local, mesh)

    train_step = jax.jit(
        functools.partial(steps_lib.train_step, step_config, optimizer),
        in_shardings=(replicated, parallel.batch_sharded(mesh)),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,),
    )
    start = time.perf_counter()
    compiled = train_step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(state)
    return StepBench(config, mesh, compiled, state, batch, compile_s)


def time_steps(bench: StepBench, num_steps: int, warmup: int) -> list[float]:
    """Seconds of each of `num_steps` steps after `warmup` untimed ones, blocking after each."""
    for _ in range(warmup):
        jax.block_until_ready(bench.run())
    jax.block_until_ready(bench.state)
    times = []
    for _ in range(num_steps):
        start = time.perf_counter()
        metrics = bench.run()
        jax.block_until_ready((bench.state, metrics))
        times.append(time.perf_counter() - start)
    return times


def time_pipelined(bench: StepBench, num_steps: int, warmup: int) -> float:
    """Mean seconds per step of `num_steps` steps dispatched back to back, blocking once at the end.

    This is how the training loop runs (dispatch of step k+1 overlaps step k), so it is the
    throughput a run sees, without the per-step synchronisation of `time_steps`.
    """
    for _ in range(warmup):
        jax.block_until_ready(bench.run())
    jax.block_until_ready(bench.state)
    start = time.perf_counter()
    metrics = None
    for _ in range(num_steps):
        metrics = bench.run()
    jax.block_until_ready((bench.state, metrics))
    return (time.perf_counter() - start) / num_steps


def hardware_flops_per_device(compiled: Any) -> float | None:
    """FLOPs of one call of the compiled (per-device, SPMD-partitioned) program, per XLA."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it.
        return None
    if isinstance(analysis, list | tuple):  # Older JAX: one dict per program.
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    return float(analysis["flops"])


def peak_memory_bytes(devices: list[jax.Device]) -> int | None:
    """Largest `peak_bytes_in_use` of (local) `devices` since start-up; None where not reported."""
    peaks = []
    for device in devices:
        try:
            stats = device.memory_stats()
        except Exception:  # noqa: BLE001 - some backends raise instead of returning None.
            stats = None
        if stats and "peak_bytes_in_use" in stats:
            peaks.append(int(stats["peak_bytes_in_use"]))
    return max(peaks) if peaks else None


def benchmark(
    config: ml_collections.ConfigDict,
    *,
    num_steps: int,
    warmup: int,
    config_label: str | None = None,
    pipelined: bool = True,
) -> dict[str, Any]:
    """Builds and times the step of `config`; returns the JSON record `train_step.py` prints.

    Args:
      config: the training config, with batch size and dtype already applied (`configure`).
      num_steps: timed steps.
      warmup: untimed steps before the timed ones.
      config_label: what to report as `config` (e.g. 'configs/stage1.py:debug').
      pipelined: also time `num_steps` back-to-back steps (`time_pipelined`).

    Returns:
      The record; its fields are described in benchmarks/README.md.
    """
    if num_steps < 1 or warmup < 0:
        raise ValueError(f"Need steps >= 1 and warmup >= 0, got {num_steps} and {warmup}.")
    bench = build(config)
    devices = list(bench.mesh.devices.flat)
    times = time_steps(bench, num_steps, warmup)
    pipelined_s = time_pipelined(bench, num_steps, 0) if pipelined else None

    batch = config.train.global_batch_size
    count = len(devices)
    device_kind = devices[0].device_kind
    dtype = config.model.dtype
    median, mean = statistics.median(times), statistics.fmean(times)
    model = flops.step_flops(config)
    hw_per_device = hardware_flops_per_device(bench.step)
    precision = jax.config.jax_default_matmul_precision
    peak, peak_basis = flops.peak_flops(device_kind, dtype, precision)
    params = {
        "generator": models.parameter_count(bench.state.generator.variables),
        "discriminator": models.parameter_count(bench.state.discriminator.variables),
    }
    if config.stage == 2:
        params["stage1_generator"] = models.parameter_count(bench.state.stage1_generator)

    def utilisation(flops_per_step: float | None) -> float | None:
        if peak is None or flops_per_step is None:
            return None
        return flops_per_step / median / (peak * count)

    hw_total = None if hw_per_device is None else hw_per_device * count
    return {
        "benchmark": "train_step",
        "platform": devices[0].platform,
        "device_kind": device_kind,
        "device_count": count,
        "process_count": jax.process_count(),
        "jax_version": jax.__version__,
        "config": config_label or config.name,
        "config_name": config.name,
        "arch": config.model.arch,
        "stage": config.stage,
        "batch": batch,
        "dtype": dtype,
        "matmul_precision": precision,
        "steps": num_steps,
        "warmup": warmup,
        "compile_s": bench.compile_s,
        "sec_per_step_median": median,
        "sec_per_step_mean": mean,
        "sec_per_step_min": min(times),
        "sec_per_step_pipelined": pipelined_s,
        "images_per_sec": batch / median,
        "images_per_sec_pipelined": None if pipelined_s is None else batch / pipelined_s,
        "model_flops_per_step": model.total,
        "model_flops_per_image": model.total / batch,
        "model_flops": model.as_dict(),
        "hardware_flops_per_step": hw_total,
        "hardware_flops_per_device_step": hw_per_device,
        "peak_flops_per_device": peak,
        "peak_flops_basis": peak_basis,
        "model_tflops_per_sec_per_device": model.total / median / count / 1e12,
        "mfu": utilisation(model.total),
        "hfu": utilisation(hw_total),
        "peak_memory_bytes": peak_memory_bytes(
            [d for d in devices if d.process_index == jax.process_index()]
        ),
        "params": params,
    }
