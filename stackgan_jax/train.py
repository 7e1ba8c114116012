"""The training loop: mesh, data, state, the jitted step, logs, samples, evaluation, checkpoints."""

import dataclasses
import functools
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from clu import metric_writers, parameter_overview, periodic_actions
from etils import epath
from jax.experimental import multihost_utils
from PIL import Image

from stackgan_jax import checkpointing, generation, models, parallel, steps, visualize
from stackgan_jax import embedding_norm as embedding_norm_lib
from stackgan_jax import state as state_lib
from stackgan_jax.data import input_pipeline
from stackgan_jax.data import source as source_lib
from stackgan_jax.evaluation import evaluator as evaluator_lib

# Held-out captions shown in the periodic sample grids (one column each).
NUM_SAMPLE_CAPTIONS = 8


class StopRequest:
    """Set by SIGTERM / SIGINT so the loop can save a checkpoint and exit cleanly.

    A context manager: the handlers are installed on entry and the previous ones put back on
    exit. Installed only for a single process: on multi-host runs JAX's preemption service owns
    the signal and Orbax's `reached_preemption` reports it on every host at the same step.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if jax.process_count() == 1:
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        del frame
        logging.warning("Received signal %d: saving a checkpoint and stopping.", signum)
        self.signal = signum


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _check_finite(step: int, metrics: dict[str, Any], workdir: str) -> None:
    """Raises FloatingPointError if any loss is NaN or infinite."""
    bad = {k: float(v) for k, v in metrics.items() if not np.isfinite(v)}
    if bad:
        raise FloatingPointError(
            f"Non-finite losses at step {step}: {bad}. Training stopped; the last good "
            f"checkpoint in {checkpointing.checkpoint_dir(workdir)} is intact. Try a lower "
            "learning rate or another seed."
        )


def abstract_state(
    config: ml_collections.ConfigDict,
    optimizer: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
) -> state_lib.GANState:
    """The shapes, dtypes and (replicated) shardings of the state `config` trains.

    What a checkpoint is restored into: the same layout on any mesh, so a checkpoint saved on
    8 devices restores on 1.
    """
    create = functools.partial(state_lib.create_state, config, optimizer=optimizer)
    stage1_variables = None
    if config.stage == 2:
        stage1_variables = models.generator_shapes(config.model, 1)
    shapes = jax.eval_shape(create, jax.random.key(config.seed), stage1_variables=stage1_variables)
    sharding = parallel.replicated(mesh)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)


def _sample_inputs(
    generators: generation.Generators, test_source: Any, seed: int
) -> tuple[jax.Array, generation.Noise, list[str]]:
    """Fixed held-out captions (the first caption of the first test images) and fixed noise."""
    count = min(NUM_SAMPLE_CAPTIONS, len(test_source.embeddings))
    embedding = jnp.asarray(test_source.embeddings[:count, 0])
    captions = [c[0] for c in test_source.captions[:count]]
    noise = generation.sample_noise(generators, jax.random.key(seed + 1), count)
    return embedding, noise, captions


def _write_samples(
    writer: metric_writers.MetricWriter,
    workdir: str,
    step: int,
    generate: Callable[..., tuple[jax.Array, jax.Array | None]],
    state: state_lib.GANState,
    sample_inputs: tuple[jax.Array, generation.Noise, list[str]],
) -> None:
    """Draws the fixed captions' grid with the current generator(s) and writes it."""
    embedding, noise, captions = sample_inputs
    images = generate(state.sampling_generator, state.stage1_generator, embedding, noise)
    rows = [np.asarray(x) for x in images if x is not None]
    picture = visualize.grid(rows)
    writer.write_images(step, {"samples": picture[None]})
    if jax.process_index() == 0:
        directory = epath.Path(workdir) / "samples"
        directory.mkdir(parents=True, exist_ok=True)
        with (directory / f"step_{step:08d}.png").open("wb") as f:
            Image.fromarray(picture).save(f, format="PNG")
        (directory / "captions.txt").write_text("\n".join(captions) + "\n")


def _make_evaluator(
    config: ml_collections.ConfigDict, test_source: source_lib.ArraySource, workdir: str
) -> evaluator_lib.Evaluator | None:
    """The evaluator of `config.eval`, with its networks loaded; None if evaluation is off."""
    if config.eval.every_steps <= 0:
        return None
    return evaluator_lib.make_evaluator(
        config.eval,
        test_source,
        dataset=config.data.dataset,
        stage=config.stage,
        # The noise of `evaluate --seed=<config.seed>`, so the CLI reproduces these numbers.
        seed=config.seed,
        workdir=workdir,
    )


def _make_meta(
    config: ml_collections.ConfigDict,
    train_examples: int,
    steps_per_epoch: int,
    embedding_norm: embedding_norm_lib.EmbeddingNorm,
) -> dict[str, Any]:
    """What each checkpoint records beside the state (`checkpointing.make_meta`)."""
    extra: dict[str, Any] = {"data_process_count": jax.process_count()}
    if embedding_norm.mode != "scale":
        # Scaling is all in the config; standardising needs its statistics kept with the model.
        extra[embedding_norm_lib.META_KEY] = embedding_norm_lib.to_meta(embedding_norm)
    return checkpointing.make_meta(
        config,
        text_encoder={"name": config.data.text_encoder, "dim": config.model.text_dim},
        dataset={"name": config.data.dataset, "train_examples": train_examples},
        steps_per_epoch=steps_per_epoch,
        extra=extra,
    )


def _resume_or_create(
    config: ml_collections.ConfigDict,
    workdir: str,
    manager: ocp.CheckpointManager,
    optimizer: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
    meta: dict[str, Any],
) -> tuple[state_lib.GANState, input_pipeline.PipelineState | None]:
    """The state resumed from the workdir, or a new one (Stage-II: around its Stage-I G).

    Returns:
        (state, the data stream's stored position or None for a new run).
    """
    abstract = abstract_state(config, optimizer, mesh)
    stored_pipeline = None
    if manager.latest_step() is not None:
        # From the newest checkpoint that reads; newer damaged ones are moved aside, as this run
        # will save their steps again.
        state, stored_meta = checkpointing.restore(manager, abstract, meta, set_aside_damaged=True)
        stored_pipeline = input_pipeline.PipelineState(**stored_meta["pipeline"])
        logging.info("Resumed from step %d in %s.", int(state.step), workdir)
    else:
        stage1_variables = None
        if config.stage == 2:
            stage1_variables, _ = checkpointing.restore_stage1_generator(
                config.stage1_workdir, config.stage1_step, abstract.stage1_generator, meta
            )
        create = jax.jit(
            functools.partial(state_lib.create_state, config, optimizer=optimizer),
            out_shardings=parallel.replicated(mesh),
        )
        state = create(jax.random.key(config.seed), stage1_variables=stage1_variables)
    if jax.process_index() == 0:
        # Only now: a config that does not fit the workdir's checkpoints has stopped by here,
        # and must not overwrite the record of the config that does.
        directory = epath.Path(workdir)
        (directory / "config.txt").write_text(str(config))
        (directory / "command.txt").write_text(" ".join(sys.argv) + "\n")
    return state, stored_pipeline


def _learning_rate_schedules(
    train_config: ml_collections.ConfigDict, steps_per_epoch: int
) -> dict[str, optax.Schedule]:
    """The logged learning rates: G's, and D's when it differs."""
    g_rate, d_rate = state_lib.learning_rates(train_config)
    schedules = {
        "learning_rate": state_lib.learning_rate_schedule(train_config, steps_per_epoch, g_rate)
    }
    if d_rate != g_rate:
        schedules["d_learning_rate"] = state_lib.learning_rate_schedule(
            train_config, steps_per_epoch, d_rate
        )
    return schedules


def _training_batches(
    config: ml_collections.ConfigDict,
    train_source: source_lib.ArraySource,
    stored_pipeline: input_pipeline.PipelineState | None,
    start_step: int,
    mesh: jax.sharding.Mesh,
    meta: dict[str, Any],
) -> Iterator[dict[str, jax.Array]]:
    """Global batches from training step `start_step + 1` on; records the stream in `meta`."""
    global_batch_size = config.train.global_batch_size
    pipeline_state, warning = input_pipeline.resume(
        stored_pipeline, len(train_source), global_batch_size, start_step
    )
    if warning:
        logging.warning(warning)
    meta["pipeline"] = dataclasses.asdict(pipeline_state)
    dataset = input_pipeline.make_dataset(
        train_source,
        stage=config.stage,
        arch=config.model.arch,
        global_batch_size=global_batch_size,
        seed=config.seed,
        # Training step s (counted from 1) consumes data step s - 1.
        start_step=pipeline_state.data_step(start_step),
    )
    return input_pipeline.global_batches(dataset, mesh)


def _log_state(state: state_lib.GANState, train_config: ml_collections.ConfigDict) -> None:
    """Says whether G's moving average is kept, and (process 0) both networks' parameters."""
    if state.generator_ema is not None:
        logging.info(
            "Keeping a moving average of G (decay %g): sample grids, evaluation and the "
            "checkpoints' generator_ema item use it.",
            train_config.ema_decay,
        )
    if jax.process_index() == 0:
        parameter_overview.log_parameter_overview(state.generator.params, msg="Generator")
        parameter_overview.log_parameter_overview(state.discriminator.params, msg="Discriminator")


def _progress_hooks(
    config: ml_collections.ConfigDict,
    num_steps: int,
    writer: metric_writers.MetricWriter,
    workdir: str,
    start_step: int,
) -> tuple[periodic_actions.ReportProgress, list[periodic_actions.PeriodicAction]]:
    """The progress report (also the timer of checkpoints, samples and evaluation) and hooks."""
    report = periodic_actions.ReportProgress(
        num_train_steps=num_steps, writer=writer, every_steps=config.log_every_steps
    )
    hooks: list[periodic_actions.PeriodicAction] = [report]
    if config.profile_steps > 0 and jax.process_index() == 0:
        hooks.append(
            periodic_actions.Profile(
                logdir=workdir, num_profile_steps=config.profile_steps, first_profile=start_step + 5
            )
        )
    return report, hooks


def _evaluate(
    evaluator: evaluator_lib.Evaluator,
    generate_from_key: Callable[..., tuple[jax.Array, jax.Array | None]],
    state: state_lib.GANState,
    writer: metric_writers.MetricWriter,
    step: int,
) -> None:
    """Scores the current generator(s) on the evaluator's captions and writes the scalars."""
    images = evaluator.generate_images(
        functools.partial(generate_from_key, state.sampling_generator, state.stage1_generator),
        progress=False,
    )
    writer.write_scalars(step, evaluator_lib.scalars(evaluator.score(images)))


def _write_logged(
    writer: metric_writers.MetricWriter, workdir: str, step: int, metrics: dict[str, Any]
) -> None:
    """Writes a log step's metrics, fetched now (a step late), after checking them."""
    logged = jax.device_get(metrics)
    _check_finite(step, logged, workdir)
    writer.write_scalars(step, logged)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> state_lib.GANState:
    """Trains the stage `config.stage` describes, resuming from `workdir` if it has checkpoints.

    Every `config.eval.every_steps` steps (if > 0) it also evaluates the current generator on
    the test captions (`config.eval`, the metrics of `stackgan_jax.evaluate`).

    Args:
      config: a training config (`configs/stage1.py` or `configs/stage2.py`).
      workdir: where checkpoints, TensorBoard logs and sample grids go (local or gs://).

    Returns:
      The final state.
    """
    train_config = config.train
    mesh = parallel.make_mesh()
    replicated = parallel.replicated(mesh)
    writer = metric_writers.create_default_writer(
        workdir, just_logging=jax.process_index() > 0, asynchronous=True
    )

    train_source, test_source = (
        source_lib.load_split(
            config.data.dataset, split, config.data.data_dir, text_dim=config.model.text_dim
        )
        for split in ("train", "test")
    )
    # Loaded before the state, so that a metric that cannot run stops the run before it trains.
    evaluator = _make_evaluator(config, test_source, workdir)
    steps_per_epoch = input_pipeline.steps_per_epoch(
        len(train_source.embeddings), train_config.global_batch_size
    )
    num_steps = train_config.num_steps
    if num_steps <= 0:
        num_steps = train_config.num_epochs * steps_per_epoch
    logging.info(
        "%d training images, %d steps per epoch, %d steps.",
        len(train_source.embeddings),
        steps_per_epoch,
        num_steps,
    )

    # State: resumed from this workdir, or fresh (Stage-II: around a restored Stage-I generator).
    optimizer = state_lib.make_optimizers(train_config, steps_per_epoch)
    embedding_norm = embedding_norm_lib.from_source(config, train_source)
    step_config = steps.StepConfig.from_config(config, embedding_norm)
    generators = step_config.generators
    meta = _make_meta(config, len(train_source.embeddings), steps_per_epoch, embedding_norm)
    manager = checkpointing.make_manager(workdir, config.keep_checkpoints)
    state, stored_pipeline = _resume_or_create(config, workdir, manager, optimizer, mesh, meta)
    _log_state(state, train_config)

    train_step = jax.jit(
        functools.partial(steps.train_step, step_config, optimizer),
        in_shardings=(replicated, parallel.batch_sharded(mesh)),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,),
    )
    # Replicated output: every process reads the whole images, computes the same metrics, and
    # process 0's writer records them (the others' only log).
    generate = jax.jit(functools.partial(generation.generate, generators), out_shardings=replicated)
    generate_from_key = jax.jit(
        functools.partial(generation.generate_from_key, generators), out_shardings=replicated
    )
    sample_inputs = _sample_inputs(generators, test_source, config.seed)
    schedules = _learning_rate_schedules(train_config, steps_per_epoch)
    start_step = int(state.step)
    batches = _training_batches(config, train_source, stored_pipeline, start_step, mesh, meta)
    report, hooks = _progress_hooks(config, num_steps, writer, workdir, start_step)

    def save(step: int, metrics: dict[str, jax.Array]) -> None:
        # Never save a state that has gone non-finite.
        _check_finite(step, jax.device_get(metrics), workdir)
        if not bool(_all_finite((state.generator.params, state.discriminator.params))):
            raise FloatingPointError(f"Non-finite parameters at step {step}; not saved.")
        with report.timed("checkpoint"):
            checkpointing.save(manager, state, meta)

    pending = None  # Metrics of the last log step, read one step late to keep dispatch async.
    log_time, log_step = time.perf_counter(), start_step
    metrics: dict[str, jax.Array] = {}
    step = start_step
    with StopRequest() as stop:
        for step in range(start_step + 1, num_steps + 1):
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                state, metrics = train_step(state, next(batches))
            for hook in hooks:
                hook(step)
            if pending is not None:
                _write_logged(writer, workdir, *pending)
                pending = None
            if step % config.log_every_steps == 0 or step == num_steps:
                now = time.perf_counter()
                rate = (step - log_step) * train_config.global_batch_size / (now - log_time)
                log_time, log_step = now, step
                rates = {name: schedule(step - 1) for name, schedule in schedules.items()}
                pending = (step, {**metrics, **rates, "images_per_second": rate})
            if step % config.sample_every_steps == 0 or step == num_steps:
                with report.timed("sample"):
                    _write_samples(writer, workdir, step, generate, state, sample_inputs)
            preempted = stop.signal is not None or manager.reached_preemption(step)
            if step % config.checkpoint_every_steps == 0 or step == num_steps or preempted:
                save(step, metrics)
            if preempted:
                logging.warning("Stopping at step %d after saving a checkpoint.", step)
                break
            # After the save, so that a preempted run does not spend its grace period evaluating.
            if evaluator is not None and step % config.eval.every_steps == 0:
                with report.timed("eval"):
                    _evaluate(evaluator, generate_from_key, state, writer, step)
    if pending is not None:
        _write_logged(writer, workdir, *pending)
    manager.wait_until_finished()
    writer.flush()
    if jax.process_count() > 1:
        # Process 0 hosts the coordination service: no process may exit while another still
        # finishes its last checkpoint write.
        multihost_utils.sync_global_devices("training finished")
    return state
