"""StackGAN networks for both reference architectures, built from a model config.

`config` below is the `model` block of a training config: `arch` ('tf' | 'pytorch'),
`text_dim`, `z_dim`, `condition_dim`, `gf_dim`, `df_dim`, `num_residual`, `dtype`.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from stackgan_jax.errors import ConfigError
from stackgan_jax.models.stage1 import (
    ConditionalHeadPyTorch,
    ConditionalHeadTF,
    ContrastiveHead,
    Discriminator,
    Projection,
    Stage1EncoderPyTorch,
    Stage1EncoderTF,
    Stage1GeneratorPyTorch,
    Stage1GeneratorTF,
)
from stackgan_jax.models.stage2 import (
    Stage2EncoderPyTorch,
    Stage2EncoderTF,
    Stage2Generator,
    UnconditionalHead,
)

ARCHS = ("tf", "pytorch")
# Each stage's image size: its generator's output and the input pipeline's random crop (spec
# §1.4: Stage-I crops 64 pixels of the 76-pixel images, Stage-II 256 of 304).
IMAGE_SIZE = {1: 64, 2: 256}
# Each stage's D image encoder per arch (spec §4.1 / §4.2, §6.1 / §6.2).
D_ENCODERS = {
    1: {"tf": Stage1EncoderTF, "pytorch": Stage1EncoderPyTorch},
    2: {"tf": Stage2EncoderTF, "pytorch": Stage2EncoderPyTorch},
}


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ConfigError(f"model.arch must be one of {ARCHS}, got {arch!r}")


def stage1_generator(config: Any) -> nn.Module:
    """The Stage-I generator: (embedding, z, ε, train) → (64×64 image, μ, log σ²)."""
    _check_arch(config.arch)
    cls = Stage1GeneratorTF if config.arch == "tf" else Stage1GeneratorPyTorch
    return cls(
        config.gf_dim,
        config.condition_dim,
        jnp.dtype(config.dtype),
        text_modulation=config.get("g_text_modulation", False),
    )


def stage2_generator(config: Any) -> nn.Module:
    """The Stage-II generator: (Stage-I image, embedding, ε, train) → (256×256 image, μ, log σ²)."""
    _check_arch(config.arch)
    return Stage2Generator(
        config.gf_dim,
        config.condition_dim,
        config.num_residual,
        config.arch,
        jnp.dtype(config.dtype),
        residual=config.get("stage2_residual", False),
    )


def generator(config: Any, stage: int) -> nn.Module:
    """The trainable generator of `stage` (1 or 2)."""
    return stage1_generator(config) if stage == 1 else stage2_generator(config)


def discriminator(config: Any, stage: int) -> Discriminator:
    """The discriminator of `stage` (1 or 2) for `config.arch` and its opt-in `d_*` fields.

    The stage's image encoder and the arch's conditional head, and for Stage-II `pytorch` an
    unconditional head. Opt-in: `d_projection` adds the `Projection` term, `d_contrastive` the
    `ContrastiveHead`; `d_batch_norm=False` removes every BatchNorm.
    """
    _check_arch(config.arch)
    dtype, norm = jnp.dtype(config.dtype), config.get("d_batch_norm", True)
    if config.arch == "tf":
        conditional_head = ConditionalHeadTF(config.df_dim, config.condition_dim, dtype, norm)
    else:
        conditional_head = ConditionalHeadPyTorch(config.df_dim, dtype, norm)
    unconditional = stage == 2 and config.arch == "pytorch"
    return Discriminator(
        D_ENCODERS[stage][config.arch](config.df_dim, dtype, norm),
        conditional_head,
        UnconditionalHead(dtype) if unconditional else None,
        projection=Projection(dtype) if config.get("d_projection", False) else None,
        contrastive=ContrastiveHead(dtype=dtype) if config.get("d_contrastive", False) else None,
    )


def discriminator_condition_dim(config: Any) -> int:
    """Width of D's condition: the raw embedding (`tf`) or the CA mean μ (`pytorch`)."""
    return config.text_dim if config.arch == "tf" else config.condition_dim


def generator_inputs(config: Any, stage: int, batch: int) -> tuple[jax.Array, ...]:
    """Zero inputs with the generator's shapes, for initialisation and shape evaluation."""
    embedding = jnp.zeros((batch, config.text_dim))
    noise = jnp.zeros((batch, config.condition_dim))
    if stage == 1:
        return embedding, jnp.zeros((batch, config.z_dim)), noise
    return jnp.zeros((batch, IMAGE_SIZE[1], IMAGE_SIZE[1], 3)), embedding, noise


def discriminator_inputs(config: Any, stage: int, batch: int) -> tuple[jax.Array, ...]:
    """Zero inputs with the discriminator's shapes, for initialisation and shape evaluation."""
    size = IMAGE_SIZE[stage]
    return jnp.zeros((batch, size, size, 3)), jnp.zeros(
        (batch, discriminator_condition_dim(config))
    )


def init_variables(module: nn.Module, key: jax.Array, inputs: tuple[jax.Array, ...]) -> Any:
    """`{'params', 'batch_stats'}` of `module` for `inputs` (in training mode)."""
    return module.init(key, *inputs, train=True)


def generator_shapes(config: Any, stage: int) -> Any:
    """ShapeDtypeStructs of the stage's generator variables, computed without allocating them."""
    return jax.eval_shape(
        functools.partial(init_variables, generator(config, stage)),
        jax.random.key(0),
        generator_inputs(config, stage, 2),
    )


def parameter_count(variables: Any) -> int:
    """Number of scalars in `variables['params']` (works on arrays and ShapeDtypeStructs)."""
    return sum(int(x.size) for x in jax.tree.leaves(variables["params"]))
