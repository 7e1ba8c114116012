"""Orbax checkpoints: save, resume, and the frozen Stage-I generator for Stage-II.

A checkpoint holds the items `generator`, `discriminator` (params, batch_stats, opt_state),
`stage1_generator` (Stage-II only: the frozen Stage-I params and batch_stats), `generator_ema`
(only with `config.train.ema_decay` > 0: the moving average's params and batch_stats) and `meta`
(JSON: the config, architecture, text encoder, dataset, embedding normalisation, versions,
commit). A workdir therefore suffices
to resume, sample or evaluate. Arrays are restored onto whatever mesh is current, so a checkpoint
saved on 8 devices restores on 1.
"""

import os
import subprocess
from importlib import metadata
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

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


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the config it is restored into."""


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
    """The `meta` item of the checkpoint at `step`, in the current layout (`upgrade_meta`)."""
    meta = manager.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))[META]
    return upgrade_meta(meta)


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
) -> tuple[GANState, dict[str, Any]]:
    """Restores a checkpoint into the layout of `abstract_state` after checking it fits.

    Args:
      manager: the run's checkpoint manager.
      abstract_state: `jax.ShapeDtypeStruct`s with shardings, as the config builds them.
      expected_meta: the meta the current run would write; `RESUME_FIELDS` must agree.
      step: the step to restore (default: the latest).

    Returns:
      (the restored state, the checkpoint's meta).
    """
    step = manager.latest_step() if step is None else step
    what = f"The checkpoint at step {step} in {manager.directory}"
    stored_meta = read_meta(manager, step)
    if PRETRAINED in stored_meta:
        raise CheckpointMismatchError(
            f"{what} was converted from {stored_meta[PRETRAINED]['file']}: it holds the "
            "generator(s) only, no discriminator or optimiser state, so training cannot resume "
            "from it. Sample or evaluate it, or train in a new workdir."
        )
    check_meta(stored_meta, expected_meta, RESUME_FIELDS, what)
    stored = manager.item_metadata(step)
    for item in (GENERATOR, DISCRIMINATOR):
        check_shapes(_variables(stored[item].tree), getattr(abstract_state, item).variables, what)
    items = {
        GENERATOR: _restore_args(abstract_state.generator),
        DISCRIMINATOR: _restore_args(abstract_state.discriminator),
    }
    if abstract_state.stage1_generator is not None:
        items[STAGE1_GENERATOR] = _restore_args(abstract_state.stage1_generator)
    if abstract_state.generator_ema is not None:
        if not has_item(manager, step, GENERATOR_EMA):
            raise CheckpointMismatchError(
                f"{what} has no generator moving average, which this config keeps "
                "(train.ema_decay > 0): resume with the run's own ema_decay, or start a new "
                "workdir."
            )
        check_shapes(stored[GENERATOR_EMA].tree, abstract_state.generator_ema, what)
        items[GENERATOR_EMA] = _restore_args(abstract_state.generator_ema)
    restored = manager.restore(step, args=ocp.args.Composite(**items))
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
    """One network's `{'params', 'batch_stats'}` from a checkpoint item, without its optimiser.

    Args:
      manager: a checkpoint manager.
      step: the checkpoint's step.
      item: GENERATOR, DISCRIMINATOR or STAGE1_GENERATOR.
      abstract_variables: ShapeDtypeStructs (with shardings) of the variables to read.

    Returns:
      The variables.
    """
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
      step: the checkpoint step, or -1 for the latest.
      abstract_variables: ShapeDtypeStructs (with shardings) of the Stage-I generator that the
        Stage-II config builds.
      expected_meta: the Stage-II run's meta; `STAGE1_FIELDS` must agree.

    Returns:
      (variables, the step they were taken from).
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
    step = max(available) if step == -1 else step
    if step not in available:
        raise FileNotFoundError(f"No checkpoint at step {step} in {directory}; have {available}.")
    what = f"The Stage-I checkpoint at step {step} in {directory}"
    stored_meta = read_meta(manager, step)
    if stored_meta.get("stage") != 1:
        raise CheckpointMismatchError(f"{what} is a Stage-{stored_meta.get('stage')} checkpoint.")
    check_meta(stored_meta, expected_meta, STAGE1_FIELDS, what)
    item = generator_item(manager, step)
    check_shapes(_variables(manager.item_metadata(step)[item].tree), abstract_variables, what)
    variables = restore_variables(manager, step, item, abstract_variables)
    logging.info(
        "Loaded the frozen Stage-I generator from %s (step %d%s).",
        directory,
        step,
        ", its moving average" if item == GENERATOR_EMA else "",
    )
    return variables, step
