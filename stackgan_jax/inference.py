"""A trained generator from a workdir: what sampling and evaluation run on.

A checkpoint's `meta` holds the config it was trained with, so a workdir alone says which
networks to build, which text encoder made their conditioning and how the embeddings were
normalised. Only the generators are read (Orbax partial restore): no discriminator, no optimiser
state. Where a checkpoint keeps a moving average of the generator's weights
(`config.train.ema_decay`), that average is the generator loaded.
"""

import dataclasses
import functools
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging

from stackgan_jax import checkpointing, generation, models
from stackgan_jax import embedding_norm as embedding_norm_lib
from stackgan_jax.errors import BadFileError, UserError


class NoCheckpointError(UserError, FileNotFoundError):
    """A workdir without a finished checkpoint."""


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """The generator(s) of one checkpoint.

    Attributes:
        config: the training config, as the checkpoint recorded it.
        meta: the checkpoint's whole `meta` item.
        step: the checkpoint's step.
        generator: the stage's generator `{'params', 'batch_stats'}`: the moving average of its
            weights (with its own BatchNorm statistics) where the checkpoint keeps one.
        stage1_generator: Stage-II only: the frozen Stage-I generator's variables.
        generator_item: the checkpoint item `generator` came from, `checkpointing.GENERATOR` or
            `checkpointing.GENERATOR_EMA`.
    """

    config: ml_collections.ConfigDict
    meta: dict[str, Any]
    step: int
    generator: Any
    stage1_generator: Any | None
    generator_item: str = checkpointing.GENERATOR

    @property
    def uses_ema(self) -> bool:
        """Whether `generator` is the moving average of the trained generator's weights."""
        return self.generator_item == checkpointing.GENERATOR_EMA

    @property
    def stage(self) -> int:
        """1 or 2."""
        return self.config.stage

    @property
    def text_encoder(self) -> str:
        """Name of the text encoder whose embeddings condition the generator."""
        return self.meta["text_encoder"]["name"]

    @functools.cached_property
    def jitted_generate(self) -> Any:
        """The jitted `generation.generate_from_key` of this model's generators."""
        generators = generation.Generators.from_config(
            self.config, embedding_norm_lib.from_meta(self.meta)
        )
        return jax.jit(functools.partial(generation.generate_from_key, generators))


def _abstract_generator(model_config: ml_collections.ConfigDict, stage: int) -> Any:
    shapes = models.generator_shapes(model_config, stage)
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=_one_device()), shapes
    )


def _one_device() -> jax.sharding.SingleDeviceSharding:
    return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def load(workdir: str, step: int | None = None) -> TrainedModel:
    """The generators of a workdir's checkpoint, on the first local device.

    Args:
        workdir: a Stage-I or Stage-II training workdir (local or gs://).
        step: the checkpoint step; None for the latest.

    Returns:
        The trained model.

    Raises:
        NoCheckpointError: no workdir, or no checkpoint (at `step`) in it.
        checkpointing.DamagedCheckpointError: the checkpoint at `step`, or with `step` None every
            checkpoint, cannot be read. Without `step`, damaged checkpoints newer than the one
            loaded are skipped with a warning (`checkpointing.restore_newest_readable`).
    """
    directory = checkpointing.checkpoint_dir(workdir)
    if not directory.exists():
        raise NoCheckpointError(
            f"{workdir} has no checkpoints/ folder: is it a training workdir "
            "(python -m stackgan_jax.main --workdir=...)?"
        )
    manager = checkpointing.make_manager(workdir, read_only=True)
    available = manager.all_steps()
    if not available:
        raise NoCheckpointError(f"{directory} holds no finished checkpoint.")
    if step is not None and step not in available:
        raise NoCheckpointError(f"No checkpoint at step {step} in {directory}; have {available}.")
    return checkpointing.restore_newest_readable(
        manager, functools.partial(_load_step, manager), step
    )


def _load_step(manager: ocp.CheckpointManager, step: int) -> TrainedModel:
    """`load` of the checkpoint at `step`."""
    meta = checkpointing.read_meta(manager, step)
    config = ml_collections.ConfigDict(meta["config"])
    item = checkpointing.generator_item(manager, step)
    generator = checkpointing.restore_variables(
        manager, step, item, _abstract_generator(config.model, config.stage)
    )
    if item == checkpointing.GENERATOR_EMA:
        logging.info("Using the moving average of the generator's weights (%s).", item)
    stage1_generator = None
    if config.stage == 2:
        stage1_generator = checkpointing.restore_variables(
            manager, step, checkpointing.STAGE1_GENERATOR, _abstract_generator(config.model, 1)
        )
    return TrainedModel(config, meta, step, generator, stage1_generator, item)


def generate(
    model: TrainedModel, embedding: jax.Array, key: jax.Array
) -> tuple[jax.Array, jax.Array | None]:
    """Images for text embeddings, with inference-mode BatchNorm (the stored running averages).

    Args:
        model: from `load`.
        embedding: float32 [N, text_dim], one row per image.
        key: the noise's PRNG key; the same key and embeddings give the same images.

    Returns:
        (64×64 images, 256×256 images or None for Stage-I), in [-1, 1].
    """
    text_dim = model.config.model.text_dim
    if embedding.ndim != 2 or embedding.shape[1] != text_dim:
        raise BadFileError(
            f"embeddings must be [N, {text_dim}] for this model "
            f"({model.text_encoder}); got shape {tuple(embedding.shape)}"
        )
    return model.jitted_generate(model.generator, model.stage1_generator, embedding, key)
