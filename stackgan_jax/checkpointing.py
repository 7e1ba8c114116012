"""Orbax checkpoints: save, resume, and the frozen Stage-I generator for Stage-II.

A checkpoint holds the items `generator`, `discriminator` (params, batch_stats, opt_state),
`stage1_generator` (Stage-II only: the frozen Stage-I params and batch_stats), `generator_ema`
(only with `config.train.ema_decay` > 0: the moving average's params and batch_stats) and `meta`
(JSON: the config, architecture, text encoder, dataset, embedding normalisation, versions,
commit). A workdir therefore suffices
to resume, sample or evaluate. Arrays are restored onto whatever mesh is current, so a checkpoint
saved on 8 devices restores on 1.

A checkpoint whose files cannot be read (one truncated or missing, as a disk error, a full disk or
an interrupted copy leaves it) is reported and skipped: `restore_newest_readable` falls back to
the newest checkpoint that restores completely. Training moves the damaged one aside to
`<step>.damaged` (see `set_aside`) so that it can save that step again; readers leave it in
place.
"""

import contextlib
import os
import subprocess
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any, TypeVar

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from stackgan_jax import checkpoint_damage
from stackgan_jax.errors import ConfigError, UserError
from stackgan_jax.state import GANState

GENERATOR = "generator"
DISCRIMINATOR = "discriminator"
STAGE1_GENERATOR = "stage1_generator"
GENERATOR_EMA = "generator_ema"
META = "meta"
# Meta field of a checkpoint converted from released weights (`stackgan_jax.pretrained`): it holds
# generators only, so it can be sampled and evaluated but not resumed.
PRETRAINED = "pretrained"

# Meta fields that must agree before a checkpoint is restored into a config: they fix what the
# networks compute and what their inputs mean.
RESUME_FIELDS = (
    "stage",
    "model.arch",
    "model.text_dim",
    "model.z_dim",
    "model.condition_dim",
    "model.gf_dim",
    "model.df_dim",
    "model.num_residual",
    "config.data.text_scale",
    "embedding_norm",
    "dataset",
    "text_encoder.name",
    "text_encoder.dim",
)
# What Stage-II needs from a Stage-I checkpoint: a generator of the shapes it builds, trained
# on embeddings from the same encoder.
STAGE1_FIELDS = (
    "model.arch",
    "model.text_dim",
    "model.z_dim",
    "model.condition_dim",
    "model.gf_dim",
    "config.data.text_scale",
    "embedding_norm",
    "text_encoder.name",
    "text_encoder.dim",
)


# The name a damaged checkpoint's directory is given when training sets it aside: not a step to
# Orbax, which therefore neither restores nor garbage-collects it.
DAMAGED_SUFFIX = ".damaged"

_T = TypeVar("_T")


class CheckpointMismatchError(ConfigError):
    """A checkpoint does not fit the config it is restored into."""


class DamagedCheckpointError(UserError, RuntimeError):
    """A checkpoint whose files cannot be read: one is truncated, missing or corrupt."""


def checkpoint_dir(workdir: str) -> epath.Path:
    """Where a run's checkpoints live (local path or gs://); local paths made absolute.

    Orbax refuses relative checkpoint paths, and `--workdir=runs/demo` is one.
    """
    if "://" not in workdir:
        workdir = os.path.abspath(workdir)
    return epath.Path(workdir) / "checkpoints"


def make_manager(workdir: str, keep: int = 3, read_only: bool = False) -> ocp.CheckpointManager:
    """A checkpoint manager for `workdir` keeping the last `keep` checkpoints, saving async.

    The training loop decides when to save (every N steps, at the end, on preemption), so the
    manager's own interval is 1.
    """
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else keep,
        save_interval_steps=0 if read_only else 1,
        create=not read_only,
        read_only=read_only,
        enable_async_checkpointing=True,
    )
    # Naming the handlers lets a fresh manager read item metadata before any restore.
    handlers = {
        GENERATOR: ocp.PyTreeCheckpointHandler(),
        DISCRIMINATOR: ocp.PyTreeCheckpointHandler(),
        STAGE1_GENERATOR: ocp.PyTreeCheckpointHandler(),
        GENERATOR_EMA: ocp.PyTreeCheckpointHandler(),
        META: ocp.JsonCheckpointHandler(),
    }
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_handlers=handlers)


def _git_commit() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=epath.Path(__file__).parent,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def _versions() -> dict[str, str]:
    packages = ("stackgan-jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint")
    versions = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def make_meta(
    config: ml_collections.ConfigDict,
    *,
    text_encoder: dict[str, Any],
    dataset: dict[str, Any],
    steps_per_epoch: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The `meta` item: everything sampling, evaluation and a resume check need.

    Args:
      config: the training config.
      text_encoder: `name` and `dim` of the encoder that made the dataset's embeddings.
      dataset: `name` and size (`train_examples`) of the dataset.
      steps_per_epoch: optimiser steps per epoch at the config's global batch size (which
        `config` records), 0 for a converted release checkpoint.
      extra: anything else to record (e.g. the input pipeline's process count).
    """
    return {
        "stage": config.stage,
        "name": config.name,
        "model": config.model.to_dict(),
        "dataset": config.data.dataset,
        "dataset_info": dataset,
        "text_encoder": text_encoder,
        "steps_per_epoch": steps_per_epoch,
        "config": config.to_dict(),
        "versions": _versions(),
        "git_commit": _git_commit(),
        **(extra or {}),
    }


def _lookup(meta: dict[str, Any], field: str) -> Any:
    value = meta
    for key in field.split("."):
        if not isinstance(value, dict) or key not in value:
            return "<missing>"
        value = value[key]
    return value


def check_meta(
    stored: dict[str, Any], expected: dict[str, Any], fields: tuple[str, ...], what: str
):
    """Raises CheckpointMismatchError naming the first of `fields` that differs."""
    for field in fields:
        have, want = _lookup(stored, field), _lookup(expected, field)
        if have != want:
            raise CheckpointMismatchError(
                f"{what} does not fit this config: {field} is {have!r} in the checkpoint but "
                f"{want!r} in the config."
            )


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in flat}


def check_shapes(stored_tree: Any, expected_tree: Any, what: str) -> None:
    """Raises CheckpointMismatchError naming the first variable that is missing or differs."""
    stored, expected = _shapes(stored_tree), _shapes(expected_tree)
    for path, shape in expected.items():
        if stored.get(path) != shape:
            have = stored.get(path, "missing")
            raise CheckpointMismatchError(
                f"{what} does not fit this config: variable {path} has shape {have} in the "
                f"checkpoint but {shape} in the model the config builds."
            )


def _variables(net: Any) -> dict[str, Any]:
    return {"params": net["params"], "batch_stats": net["batch_stats"]}


def _restore_args(abstract: Any) -> ocp.args.PyTreeRestore:
    return ocp.args.PyTreeRestore(
        item=abstract,
        restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
        partial_restore=True,
    )


@contextlib.contextmanager
def _reading(manager: ocp.CheckpointManager, step: int, item: str):
    """Raises DamagedCheckpointError naming step, path and `item` where reading `item` fails."""
    # Before the read: the first late reports come before its error has propagated.
    checkpoint_damage.quiet_late_read_reports()
    try:
        yield
    except Exception as error:
        cause = checkpoint_damage.unreadable_file_error(error)
        if cause is None:
            raise
        raise DamagedCheckpointError(
            f"The checkpoint at step {step} in {manager.directory / str(step)} is damaged "
            f"({item}: {checkpoint_damage.describe(cause)})"
        ) from error


def _stored_tree(manager: ocp.CheckpointManager, step: int, item: str) -> Any:
    """The tree of `ShapeDtypeStruct`-like metadata of a PyTree item, read from its own files."""
    with _reading(manager, step, item):
        return ocp.PyTreeCheckpointHandler().metadata(manager.directory / str(step) / item).tree


def restore_newest_readable(
    manager: ocp.CheckpointManager,
    restore_step: Callable[[int], _T],
    step: int | None = None,
    *,
    set_aside_damaged: bool = False,
) -> _T:
    """`restore_step(step)`, or where `step` is None, that of the newest checkpoint that reads.

    Damaged checkpoints (`restore_step` raises DamagedCheckpointError) are skipped, newest first,
    each with a one-line warning naming its step, path and first unreadable item and the step
    used instead. Any other error (e.g. CheckpointMismatchError) stops the search.

    Args:
      manager: the checkpoint manager.
      restore_step: reads everything needed from the checkpoint at a step.
      step: the step to restore; a damaged one is an error, not skipped.
      set_aside_damaged: move the damaged checkpoints newer than the one restored aside
        (`set_aside`), so that training can save their steps again.

    Returns:
      What `restore_step` returned.

    Raises:
      DamagedCheckpointError: the checkpoint at `step`, or every checkpoint, is damaged.
    """
    steps = sorted(manager.all_steps(), reverse=True)
    if step is not None:
        if step not in steps:
            raise FileNotFoundError(
                f"No checkpoint at step {step} in {manager.directory}; have {steps[::-1]}."
            )
        try:
            return restore_step(step)
        except DamagedCheckpointError as error:
            others = sorted(s for s in steps if s != step)
            raise DamagedCheckpointError(
                f"{error}. Other checkpoints there: {others or 'none'}."
            ) from error
    damaged: list[tuple[int, DamagedCheckpointError]] = []
    for candidate in steps:
        try:
            restored = restore_step(candidate)
        except DamagedCheckpointError as error:
            damaged.append((candidate, error))
            continue
        moved = set_aside(manager, [s for s, _ in damaged]) if set_aside_damaged else {}
        for damaged_step, error in damaged:
            where = f", moved it to {moved[damaged_step]}" if damaged_step in moved else ""
            logging.warning("%s; using step %d%s.", error, candidate, where)
        return restored
    raise DamagedCheckpointError(
        f"No checkpoint in {manager.directory} can be read: "
        + "; ".join(str(error) for _, error in damaged)
        + ". Move them aside (or delete them) to start afresh."
    )


def set_aside(manager: ocp.CheckpointManager, steps: Sequence[int]) -> dict[int, epath.Path]:
    """Renames the checkpoints at `steps` to `<step>.damaged` (`.damaged-2`, ... if taken).

    Never deletes: the files stay for inspection, under a name Orbax does not read as a step, so
    that the step can be saved again (Orbax refuses to overwrite a step) and `keep_checkpoints`
    counts only readable checkpoints. Process 0 renames; every process then rereads the
    directory.

    Returns:
      {step: the new path} (empty on other processes).
    """
    moved = {}
    if jax.process_index() == 0:
        for step in steps:
            target = manager.directory / f"{step}{DAMAGED_SUFFIX}"
            copy = 1
            while target.exists():
                copy += 1
                target = manager.directory / f"{step}{DAMAGED_SUFFIX}-{copy}"
            (manager.directory / str(step)).rename(target)
            moved[step] = target
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("damaged checkpoints set aside")
    manager.reload()
    return moved


def save(manager: ocp.CheckpointManager, state: GANState, meta: dict[str, Any]) -> None:
    """Starts an async save of `state` at its step (`manager.wait_until_finished()` to wait)."""
    items = {
        GENERATOR: ocp.args.PyTreeSave(state.generator),
        DISCRIMINATOR: ocp.args.PyTreeSave(state.discriminator),
        META: ocp.args.JsonSave(meta),
    }
    if state.stage1_generator is not None:
        items[STAGE1_GENERATOR] = ocp.args.PyTreeSave(state.stage1_generator)
    if state.generator_ema is not None:
        items[GENERATOR_EMA] = ocp.args.PyTreeSave(state.generator_ema)
    manager.save(int(jax.device_get(state.step)), args=ocp.args.Composite(**items), force=True)


def read_meta(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
    """The `meta` item of the checkpoint at `step`, in the current layout (`upgrade_meta`).

    Raises:
      DamagedCheckpointError: the item cannot be read.
    """
    with _reading(manager, step, META):
        meta = manager.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))
    return upgrade_meta(meta[META])


def upgrade_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's meta in the current layout, whatever version of this code wrote it.

    The one place that knows older layouts: `text_scale`, a property of the embeddings, moved
    from `config.model` (and `meta['model']`) to `config.data`; where neither has it, 1.
    """
    config = meta.get("config", {})
    if "data" in config and "text_scale" not in config["data"]:
        config["data"]["text_scale"] = config.get("model", {}).pop("text_scale", 1.0)
        meta.get("model", {}).pop("text_scale", None)
    return meta


def restore(
    manager: ocp.CheckpointManager,
    abstract_state: GANState,
    expected_meta: dict[str, Any],
    step: int | None = None,
    *,
    set_aside_damaged: bool = False,
) -> tuple[GANState, dict[str, Any]]:
    """Restores a checkpoint into the layout of `abstract_state` after checking it fits.

    Args:
      manager: the run's checkpoint manager.
      abstract_state: `jax.ShapeDtypeStruct`s with shardings, as the config builds them.
      expected_meta: the meta the current run would write; `RESUME_FIELDS` must agree.
      step: the step to restore (default: the newest that reads, `restore_newest_readable`).
      set_aside_damaged: move damaged checkpoints newer than the one restored aside, as a run
        that will save their steps again must.

    Returns:
      (the restored state, the checkpoint's meta).

    Raises:
      CheckpointMismatchError: the checkpoint does not fit the config.
      DamagedCheckpointError: the checkpoint at `step`, or every checkpoint, is damaged.
    """
    return restore_newest_readable(
        manager,
        lambda step: _restore_state(manager, step, abstract_state, expected_meta),
        step,
        set_aside_damaged=set_aside_damaged,
    )


def _restore_state(
    manager: ocp.CheckpointManager,
    step: int,
    abstract_state: GANState,
    expected_meta: dict[str, Any],
) -> tuple[GANState, dict[str, Any]]:
    """`restore` of the checkpoint at `step`, each item read on its own to name a damaged one."""
    what = f"The checkpoint at step {step} in {manager.directory}"
    stored_meta = read_meta(manager, step)
    if PRETRAINED in stored_meta:
        raise CheckpointMismatchError(
            f"{what} was converted from {stored_meta[PRETRAINED]['file']}: it holds the "
            "generator(s) only, no discriminator or optimiser state, so training cannot resume "
            "from it. Sample or evaluate it, or train in a new workdir."
        )
    check_meta(stored_meta, expected_meta, RESUME_FIELDS, what)
    for item in (GENERATOR, DISCRIMINATOR):
        stored = _stored_tree(manager, step, item)
        check_shapes(_variables(stored), getattr(abstract_state, item).variables, what)
    items = {GENERATOR: abstract_state.generator, DISCRIMINATOR: abstract_state.discriminator}
    if abstract_state.stage1_generator is not None:
        items[STAGE1_GENERATOR] = abstract_state.stage1_generator
    if abstract_state.generator_ema is not None:
        if not has_item(manager, step, GENERATOR_EMA):
            raise CheckpointMismatchError(
                f"{what} has no generator moving average, which this config keeps "
                "(train.ema_decay > 0): resume with the run's own ema_decay, or start a new "
                "workdir."
            )
        stored = _stored_tree(manager, step, GENERATOR_EMA)
        check_shapes(stored, abstract_state.generator_ema, what)
        items[GENERATOR_EMA] = abstract_state.generator_ema
    restored = {
        item: restore_variables(manager, step, item, abstract) for item, abstract in items.items()
    }
    state = abstract_state.replace(
        step=jax.numpy.asarray(step, jax.numpy.int32),
        generator=restored[GENERATOR],
        discriminator=restored[DISCRIMINATOR],
        stage1_generator=restored[STAGE1_GENERATOR] if STAGE1_GENERATOR in items else None,
        generator_ema=restored[GENERATOR_EMA] if GENERATOR_EMA in items else None,
    )
    return state, stored_meta


def has_item(manager: ocp.CheckpointManager, step: int, item: str) -> bool:
    """Whether the checkpoint at `step` holds `item` (e.g. GENERATOR_EMA)."""
    return (manager.directory / str(step) / item).exists()


def generator_item(manager: ocp.CheckpointManager, step: int) -> str:
    """The item of the generator to sample from: GENERATOR_EMA where the checkpoint has it."""
    return GENERATOR_EMA if has_item(manager, step, GENERATOR_EMA) else GENERATOR


def restore_variables(
    manager: ocp.CheckpointManager, step: int, item: str, abstract_variables: Any
) -> Any:
    """A checkpoint item, or the part of it that `abstract_variables` names (partial restore).

    E.g. one network's `{'params', 'batch_stats'}` without its optimiser state.

    Args:
      manager: a checkpoint manager.
      step: the checkpoint's step.
      item: GENERATOR, DISCRIMINATOR, STAGE1_GENERATOR or GENERATOR_EMA.
      abstract_variables: ShapeDtypeStructs (with shardings) of what to read.

    Returns:
      The arrays, in the tree of `abstract_variables`.

    Raises:
      DamagedCheckpointError: the item cannot be read.
    """
    with _reading(manager, step, item):
        restored = manager.restore(
            step, args=ocp.args.Composite(**{item: _restore_args(abstract_variables)})
        )
    return restored[item]


def restore_stage1_generator(
    stage1_workdir: str,
    step: int,
    abstract_variables: Any,
    expected_meta: dict[str, Any],
) -> tuple[Any, int]:
    """The Stage-I generator's `{'params', 'batch_stats'}` from a Stage-I workdir (no optimiser).

    Args:
      stage1_workdir: the Stage-I run's workdir.
      step: the checkpoint step, or -1 for the newest that reads (`restore_newest_readable`).
      abstract_variables: ShapeDtypeStructs (with shardings) of the Stage-I generator that the
        Stage-II config builds.
      expected_meta: the Stage-II run's meta; `STAGE1_FIELDS` must agree.

    Returns:
      (variables, the step they were taken from).

    Raises:
      DamagedCheckpointError: the checkpoint at `step`, or every checkpoint, is damaged.
    """
    directory = checkpoint_dir(stage1_workdir)
    if not directory.exists():
        raise FileNotFoundError(
            f"No Stage-I checkpoints in {directory}. Train Stage-I first "
            "(python -m stackgan_jax.main --config=configs/stage1.py:NAME "
            f"--workdir={stage1_workdir}) or set --config.stage1_workdir."
        )
    manager = make_manager(stage1_workdir, read_only=True)
    available = manager.all_steps()
    if not available:
        raise FileNotFoundError(f"{directory} holds no finished checkpoint.")
    if step != -1 and step not in available:
        raise FileNotFoundError(f"No checkpoint at step {step} in {directory}; have {available}.")

    def restore_step(step: int) -> tuple[Any, int, str]:
        what = f"The Stage-I checkpoint at step {step} in {directory}"
        stored_meta = read_meta(manager, step)
        if stored_meta.get("stage") != 1:
            raise CheckpointMismatchError(
                f"{what} is a Stage-{stored_meta.get('stage')} checkpoint."
            )
        check_meta(stored_meta, expected_meta, STAGE1_FIELDS, what)
        item = generator_item(manager, step)
        check_shapes(_variables(_stored_tree(manager, step, item)), abstract_variables, what)
        return restore_variables(manager, step, item, abstract_variables), step, item

    variables, step, item = restore_newest_readable(
        manager, restore_step, None if step == -1 else step
    )
    logging.info(
        "Loaded the frozen Stage-I generator from %s (step %d%s).",
        directory,
        step,
        ", its moving average" if item == GENERATOR_EMA else "",
    )
    return variables, step
