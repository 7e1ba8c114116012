"""Stage-II networks (64 → 256), spec §5–§6.

The generator consumes a Stage-I image and its own Conditioning Augmentation sample; the frozen
Stage-I generator that makes that image is a separate network with its own variables.
"""

import functools

import flax.linen as nn
import jax
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
    leaky_relu,
    tile_condition,
)
from stackgan_jax.models.stage1 import DiscriminatorPart, down_blocks

# Stage-I pixels are scaled by this before atanh in the residual form of the Stage-II generator.
RESIDUAL_RANGE = 0.99


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

    `residual=True` (opt-in, `config.model.stage2_residual`; not in StackGAN) makes the last
    layer a correction of the Stage-I image: image = tanh(h + atanh(0.99 · up(stage1))), where h
    is the 3×3 conv's output and up() bilinear ×4 upsampling. At initialisation (h ≈ 0) Stage-II
    starts from the enlarged Stage-I image instead of from noise, so the text-matched colours
    and shapes of Stage-I carry over from the first step and training only has to add detail.
    """

    gf_dim: int
    condition_dim: int
    num_residual: int
    arch: str
    dtype: DType = jnp.float32
    residual: bool = False

    @nn.compact
    def __call__(
        self, stage1_image: Array, embedding: Array, ca_noise: Array, train: bool
    ) -> tuple[Array, Array, Array]:
        init, gf = conv_init(self.arch), self.gf_dim
        conv = functools.partial(ConvBlock, kernel_init=init, padding=1, dtype=self.dtype)
        h = stage1_image.astype(self.dtype)
        h = conv(gf, 3, norm=False, activation=nn.relu, name="encode1")(h, train)
        h = conv(2 * gf, 4, strides=2, activation=nn.relu, name="encode2")(h, train)
        h = conv(4 * gf, 4, strides=2, activation=nn.relu, name="encode3")(h, train)
        condition, mu, logvar = ConditioningAugmentation(
            self.condition_dim, self.arch, self.dtype, name="ca"
        )(embedding, ca_noise)
        h = jnp.concatenate([h, tile_condition(condition, h.shape[1])], axis=-1)
        h = conv(4 * gf, 3, activation=nn.relu, name="joint")(h, train)
        for i in range(self.num_residual):
            h = ResidualBlock(init, self.dtype, name=f"res{i + 1}")(h, train)
        for i, features in enumerate((2 * gf, gf, gf // 2, gf // 4)):
            h = UpBlock(features, init, dtype=self.dtype, name=f"up{32 << i}")(h, train)
        h = conv(3, 3, norm=False, name="to_image")(h, train)
        if self.residual:
            size = h.shape[1]
            base = jax.image.resize(
                stage1_image.astype(jnp.float32),
                (stage1_image.shape[0], size, size, 3),
                "bilinear",
            )
            # 0.99 keeps atanh finite for saturated Stage-I pixels (|atanh| ≤ 2.65).
            h = h + jnp.arctanh(RESIDUAL_RANGE * jnp.clip(base, -1.0, 1.0)).astype(h.dtype)
        return jnp.tanh(h), mu, logvar


class Stage2EncoderTF(DiscriminatorPart):
    """`tf` Stage-II D image encoder (spec §6.1): 256×256×3 → 4×4×8df."""

    @nn.compact
    def __call__(self, images: Array, train: bool) -> Array:
        init, df = conv_init("tf"), self.df_dim
        reduce = functools.partial(
            ConvBlock, kernel_size=1, kernel_init=init, norm=self.norm, dtype=self.dtype
        )
        h = down_blocks(self, images, 6, init, train)
        h = reduce(16 * df, activation=leaky_relu, name="reduce1")(h, train)
        h = reduce(8 * df, name="reduce2")(h, train)
        return BottleneckResidual(init, leaky_relu, self.dtype, self.norm, name="res")(h, train)


class Stage2EncoderPyTorch(DiscriminatorPart):
    """`pytorch` Stage-II D image encoder (spec §6.2): six down-blocks, then two 3×3 convs."""

    @nn.compact
    def __call__(self, images: Array, train: bool) -> Array:
        init, df = conv_init("pytorch"), self.df_dim
        reduce = functools.partial(
            ConvBlock,
            kernel_size=3,
            kernel_init=init,
            padding=1,
            norm=self.norm,
            activation=leaky_relu,
            dtype=self.dtype,
        )
        h = down_blocks(self, images, 6, init, train)
        h = reduce(16 * df, name="reduce1")(h, train)
        return reduce(8 * df, name="reduce2")(h, train)


class UnconditionalHead(nn.Module):
    """`pytorch` Stage-II unconditional head: a 4×4 stride-4 conv with bias on the features."""

    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, features: Array) -> Array:
        return LogitConv(conv_init("pytorch"), use_bias=True, dtype=self.dtype, name="logit")(
            features
        )
