"""Stage-II networks (64 → 256), spec §5–§6.

The generator consumes a Stage-I image and its own Conditioning Augmentation sample; the frozen
Stage-I generator that makes that image is a separate network with its own variables.
"""

import flax.linen as nn
import jax.numpy as jnp

from stackgan_jax.models.ca import ConditioningAugmentation
from stackgan_jax.models.layers import (
    Array,
    BottleneckResidual,
    ConvBlock,
    DType,
    LogitConv,
    ResidualBlock,
    UpBlock,
    conv_init,
    down_block,
    leaky_relu,
    tile_condition,
)
from stackgan_jax.models.stage1 import ConditionalHeadPyTorch, ConditionalHeadTF, Discriminator


class Stage2Generator(nn.Module):
    """Stage-II generator, the same layer table in both references (spec §5).

    | layer                                        | output (gf 128) |
    |----------------------------------------------|-----------------|
    | Stage-I image                                | 64×64×3         |
    | 3×3 conv → gf, ReLU (no BN)                  | 64×64×gf        |
    | 4×4 s2 conv → 2gf, BN, ReLU                  | 32×32×2gf       |
    | 4×4 s2 conv → 4gf, BN, ReLU                  | 16×16×4gf       |
    | concat CA(embedding) tiled 16×16             | 16×16×(4gf + c) |
    | 3×3 conv → 4gf, BN, ReLU                     | 16×16×4gf       |
    | R × residual block                           | 16×16×4gf       |
    | up → 2gf, gf, gf/2, gf/4 (BN, ReLU each)      | 256×256×gf/4    |
    | 3×3 conv → 3, tanh                            | 256×256×3       |

    `arch` selects the CA form and the weight init. Returns (image, μ, log σ²).
    """

    gf_dim: int
    condition_dim: int
    num_residual: int
    arch: str
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(
        self, stage1_image: Array, embedding: Array, ca_noise: Array, train: bool
    ) -> tuple[Array, Array, Array]:
        init, dt, gf = conv_init(self.arch), self.dtype, self.gf_dim
        conv = dict(kernel_init=init, dtype=dt)
        h = ConvBlock(gf, 3, padding=1, norm=False, activation=nn.relu, name="encode1", **conv)(
            stage1_image.astype(dt), train
        )
        h = ConvBlock(2 * gf, 4, strides=2, padding=1, activation=nn.relu, name="encode2", **conv)(
            h, train
        )
        h = ConvBlock(4 * gf, 4, strides=2, padding=1, activation=nn.relu, name="encode3", **conv)(
            h, train
        )
        condition, mu, logvar = ConditioningAugmentation(
            self.condition_dim, self.arch, dt, name="ca"
        )(embedding, ca_noise)
        h = jnp.concatenate([h, tile_condition(condition, h.shape[1])], axis=-1)
        h = ConvBlock(4 * gf, 3, padding=1, activation=nn.relu, name="joint", **conv)(h, train)
        for i in range(self.num_residual):
            h = ResidualBlock(init, dt, name=f"res{i + 1}")(h, train)
        for i, features in enumerate((2 * gf, gf, gf // 2, gf // 4)):
            h = UpBlock(features, init, dtype=dt, name=f"up{32 << i}")(h, train)
        h = ConvBlock(3, 3, padding=1, norm=False, name="to_image", **conv)(h, train)
        return jnp.tanh(h), mu, logvar


class Stage2EncoderTF(nn.Module):
    """`tf` Stage-II D image encoder (spec §6.1): 256×256×3 → 4×4×8df."""

    df_dim: int
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, images: Array, train: bool) -> Array:
        init, dt, df = conv_init("tf"), self.dtype, self.df_dim
        h = images
        for i in range(6):
            h = down_block(df << i, init, i > 0, dt, name=f"down{i + 1}")(h, train)
        h = ConvBlock(16 * df, 1, init, activation=leaky_relu, dtype=dt, name="reduce1")(h, train)
        h = ConvBlock(8 * df, 1, init, dtype=dt, name="reduce2")(h, train)
        return BottleneckResidual(init, leaky_relu, dt, name="res")(h, train)


class Stage2EncoderPyTorch(nn.Module):
    """`pytorch` Stage-II D image encoder (spec §6.2): six down-blocks, then two 3×3 convs."""

    df_dim: int
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, images: Array, train: bool) -> Array:
        init, dt, df = conv_init("pytorch"), self.dtype, self.df_dim
        h = images
        for i in range(6):
            h = down_block(df << i, init, i > 0, dt, name=f"down{i + 1}")(h, train)
        reduce = dict(kernel_init=init, padding=1, activation=leaky_relu, dtype=dt)
        h = ConvBlock(16 * df, 3, name="reduce1", **reduce)(h, train)
        return ConvBlock(8 * df, 3, name="reduce2", **reduce)(h, train)


class UnconditionalHead(nn.Module):
    """`pytorch` Stage-II unconditional head: a 4×4 stride-4 conv with bias on the features."""

    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, features: Array) -> Array:
        return LogitConv(conv_init("pytorch"), use_bias=True, dtype=self.dtype, name="logit")(
            features
        )


def stage2_discriminator(arch: str, df_dim: int, condition_dim: int, dtype: DType) -> Discriminator:
    """The Stage-II discriminator of `arch` (spec §6.1 / §6.2)."""
    if arch == "tf":
        return Discriminator(
            Stage2EncoderTF(df_dim, dtype), ConditionalHeadTF(df_dim, condition_dim, dtype)
        )
    return Discriminator(
        Stage2EncoderPyTorch(df_dim, dtype),
        ConditionalHeadPyTorch(df_dim, dtype),
        UnconditionalHead(dtype),
    )
