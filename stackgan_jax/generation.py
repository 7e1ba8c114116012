"""Image generation as a pure function of the generators' variables.

Everything that draws images goes through `generate` / `generate_from_key`: the training loop's
sample grids and its evaluation (`train.py`), the `sample` and `evaluate` CLIs (through
`inference.TrainedModel`), and the training step's Stage-II input (`stage1_images`). None of
them needs a training state: only the generators' `{'params', 'batch_stats'}`.

Noise comes from `sample_noise` with each architecture's distributions, so a key and
embeddings give the same images from a checkpoint as from the training state that saved it.
"""

import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import ml_collections

from stackgan_jax import embedding_norm as embedding_norm_lib
from stackgan_jax import models
from stackgan_jax.errors import ConfigError
from stackgan_jax.models.ca import sample_ca_noise, sample_z

Array = jax.Array
Variables = Any  # A generator's Flax variables, {'params', 'batch_stats'}.

# How the frozen Stage-I generator's BatchNorm runs inside Stage-II (`config.stage1_bn`):
# 'batch' normalises with each batch's statistics and keeps updating the running averages, as
# both references do while training Stage-II; 'running' uses the stored averages (inference).
STAGE1_BN = ("batch", "running")


@dataclasses.dataclass(frozen=True)
class Generators:
    """The static part of generation: the stage's generator modules and the noise they take.

    Attributes:
        generator: the stage's generator module.
        stage1_generator: Stage-II only: the frozen Stage-I generator module.
        arch: 'tf' or 'pytorch' (the CA noise's distribution).
        stage: 1 or 2.
        z_dim: the Stage-I generator's noise size.
        condition_dim: the CA condition's size.
        embedding_norm: how the embeddings, as the dataset stores them, are normalised.
    """

    generator: nn.Module
    stage1_generator: nn.Module | None
    arch: str
    stage: int
    z_dim: int
    condition_dim: int
    embedding_norm: embedding_norm_lib.EmbeddingNorm

    @classmethod
    def from_config(
        cls,
        config: ml_collections.ConfigDict,
        embedding_norm: embedding_norm_lib.EmbeddingNorm | None = None,
    ) -> "Generators":
        """The generators of a training config.

        Args:
          config: a training config.
          embedding_norm: the embeddings' normalisation with its statistics (from the training
            split or a checkpoint's meta); None for the config's `data.text_scale`, which is
            all a config with `data.embedding_norm='scale'` needs.

        Raises:
          ValueError: `data.embedding_norm='standardize'` without its statistics.
        """
        model, stage = config.model, config.stage
        if embedding_norm is None:
            if embedding_norm_lib.mode_of(config) != "scale":
                raise ConfigError(
                    "data.embedding_norm='standardize' needs the training split's statistics"
                )
            embedding_norm = embedding_norm_lib.scaled(config.data.text_scale)
        return cls(
            generator=models.generator(model, stage),
            stage1_generator=models.stage1_generator(model) if stage == 2 else None,
            arch=model.arch,
            stage=stage,
            z_dim=model.z_dim,
            condition_dim=model.condition_dim,
            embedding_norm=embedding_norm,
        )


class Noise(NamedTuple):
    """One generator pass's noise: z (the Stage-I generator's), and CA ε of each stage."""

    z: Array
    ca: Array
    stage1_ca: Array | None


def sample_noise(generators: Generators, key: Array, batch: int) -> Noise:
    """Draws the noise of one generator pass with each architecture's distributions."""
    z_key, ca_key, stage1_key = jax.random.split(key, 3)
    stage1_ca = None
    if generators.stage == 2:
        stage1_ca = sample_ca_noise(stage1_key, batch, generators.condition_dim, generators.arch)
    return Noise(
        sample_z(z_key, batch, generators.z_dim),
        sample_ca_noise(ca_key, batch, generators.condition_dim, generators.arch),
        stage1_ca,
    )


def check_stage1_bn(stage1_bn: str) -> None:
    """Raises ValueError unless `stage1_bn` is one of STAGE1_BN."""
    if stage1_bn not in STAGE1_BN:
        raise ConfigError(f"stage1_bn must be one of {STAGE1_BN}, got {stage1_bn!r}")


def stage1_images(
    generators: Generators,
    stage1_variables: Variables,
    embedding: Array,
    noise: Noise,
    stage1_bn: str,
) -> tuple[Array, Variables]:
    """The frozen Stage-I generator's 64×64 images (no gradient) and its variables after them.

    Args:
      generators: Stage-II's generators.
      stage1_variables: the frozen Stage-I generator's variables.
      embedding: normalised embeddings [B, text_dim].
      noise: this pass's noise.
      stage1_bn: 'batch' (batch statistics; the running averages are updated) or 'running'.
    """
    inputs = (embedding, noise.z, noise.stage1_ca)
    if stage1_bn == "running":
        images, _, _ = generators.stage1_generator.apply(stage1_variables, *inputs, train=False)
        return jax.lax.stop_gradient(images), stage1_variables
    (images, _, _), updates = generators.stage1_generator.apply(
        stage1_variables, *inputs, train=True, mutable=["batch_stats"]
    )
    return jax.lax.stop_gradient(images), {**stage1_variables, **updates}


def generate(
    generators: Generators,
    variables: Variables,
    stage1_variables: Variables | None,
    embedding: Array,
    noise: Noise,
) -> tuple[Array, Array | None]:
    """Images for `embedding` with inference-mode BatchNorm (the stored running averages).

    Args:
      generators: the stage's generators.
      variables: the stage's generator variables (the moving average's, where there is one).
      stage1_variables: Stage-II only: the frozen Stage-I generator's variables.
      embedding: [N, text_dim] as the dataset stores it; `generators.embedding_norm` is
        applied here, as in training.
      noise: from `sample_noise`.

    Returns:
      (64×64 images, 256×256 images or None), in [-1, 1]. In Stage-II the 64×64 images are the
      frozen Stage-I generator's.
    """
    embedding = generators.embedding_norm(embedding)
    if generators.stage == 1:
        images, _, _ = generators.generator.apply(
            variables, embedding, noise.z, noise.ca, train=False
        )
        return images, None
    low, _ = stage1_images(generators, stage1_variables, embedding, noise, "running")
    high, _, _ = generators.generator.apply(variables, low, embedding, noise.ca, train=False)
    return low, high


def generate_from_key(
    generators: Generators,
    variables: Variables,
    stage1_variables: Variables | None,
    embedding: Array,
    key: Array,
) -> tuple[Array, Array | None]:
    """`generate` with the noise drawn from `key` by `sample_noise`.

    Sampling and evaluation draw their noise this way, inside the jitted function.
    """
    noise = sample_noise(generators, key, len(embedding))
    return generate(generators, variables, stage1_variables, embedding, noise)
