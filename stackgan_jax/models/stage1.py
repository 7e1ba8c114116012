"""Stage-I networks (64×64), one class per reference architecture (spec §3–§4)."""

import functools

import flax.linen as nn
import jax.numpy as jnp

from stackgan_jax.models.ca import ConditioningAugmentation
from stackgan_jax.models.layers import (
    DENSE_INIT,
    Array,
    BottleneckResidual,
    ConvBlock,
    DType,
    Initializer,
    LogitConv,
    UpBlock,
    UpsampleConv,
    batch_norm,
    conv_init,
    down_block,
    leaky_relu,
    tile_condition,
)


class Stage1Generator(nn.Module):
    """What both Stage-I generators are configured by; the subclasses hold the layers.

    Attributes:
      gf_dim: the generator's base width.
      condition_dim: the width of Conditioning Augmentation's sample.
      dtype: the computation dtype.
      text_modulation: opt-in: the condition also modulates every up-block (`UpBlock`).
    """

    gf_dim: int
    condition_dim: int
    dtype: DType = jnp.float32
    text_modulation: bool = False


class Stage1GeneratorTF(Stage1Generator):
    """The paper's TensorFlow Stage-I generator (spec §3.1); returns (image, μ, log σ²).

    | layer                                   | output       |
    |-----------------------------------------|--------------|
    | CA(embedding) ⊕ z  ([ĉ, z])             | c + z        |
    | FC (bias) → 4·4·8gf, BN (no ReLU)        | 4×4×8gf      |
    | bottleneck residual (ReLU)              | 4×4×8gf      |
    | up → 4gf, BN (no ReLU)                  | 8×8×4gf      |
    | bottleneck residual (ReLU)              | 8×8×4gf      |
    | up → 2gf, BN, ReLU                      | 16×16×2gf    |
    | up → gf, BN, ReLU                       | 32×32×gf     |
    | up → 3, tanh                            | 64×64×3      |
    """

    @nn.compact
    def __call__(
        self, embedding: Array, z: Array, ca_noise: Array, train: bool
    ) -> tuple[Array, Array, Array]:
        init, gf = conv_init("tf"), self.gf_dim
        residual = functools.partial(BottleneckResidual, init, nn.relu, self.dtype)
        up = functools.partial(UpBlock, kernel_init=init, dtype=self.dtype)
        condition, mu, logvar = ConditioningAugmentation(
            self.condition_dim, "tf", self.dtype, name="ca"
        )(embedding, ca_noise)
        # Opt-in: the condition also modulates every up-block (`UpBlock`).
        modulation = condition if self.text_modulation else None
        h = jnp.concatenate([condition, z.astype(condition.dtype)], axis=-1)
        h = nn.Dense(4 * 4 * 8 * gf, kernel_init=DENSE_INIT, dtype=self.dtype, name="fc")(h)
        h = batch_norm(self.dtype, name="fc_bn")(h, use_running_average=not train)
        h = h.reshape(h.shape[0], 4, 4, 8 * gf)
        h = residual(name="res4")(h, train)
        h = up(4 * gf, activation=None, name="up8")(h, train, modulation)
        h = residual(name="res8")(h, train)
        h = up(2 * gf, name="up16")(h, train, modulation)
        h = up(gf, name="up32")(h, train, modulation)
        h = UpsampleConv(3, init, self.dtype, name="to_image")(h)
        return jnp.tanh(h), mu, logvar


class Stage1GeneratorPyTorch(Stage1Generator):
    """StackGAN-Pytorch's `STAGE1_G` (spec §3.2); returns (image, μ, log σ²).

    | layer                                      | output       |
    |--------------------------------------------|--------------|
    | z ⊕ CA(embedding)  ([z, ĉ])                | z + c        |
    | FC (no bias) → 16·8gf, BN, ReLU            | 16·8gf       |
    | view as 8gf×4×4 (channel-major, as NCHW)   | 4×4×8gf      |
    | up → 4gf, 2gf, gf, gf/2 (BN, ReLU each)     | 64×64×gf/2   |
    | 3×3 conv → 3, tanh                          | 64×64×3      |
    """

    @nn.compact
    def __call__(
        self, embedding: Array, z: Array, ca_noise: Array, train: bool
    ) -> tuple[Array, Array, Array]:
        init, ngf = conv_init("pytorch"), 8 * self.gf_dim
        condition, mu, logvar = ConditioningAugmentation(
            self.condition_dim, "pytorch", self.dtype, name="ca"
        )(embedding, ca_noise)
        modulation = condition if self.text_modulation else None
        h = jnp.concatenate([z.astype(condition.dtype), condition], axis=-1)
        h = nn.Dense(16 * ngf, use_bias=False, kernel_init=DENSE_INIT, dtype=self.dtype, name="fc")(
            h
        )
        h = nn.relu(batch_norm(self.dtype, name="fc_bn")(h, use_running_average=not train))
        # The reference views the FC output as [N, C, 4, 4]; keeping that order keeps its
        # weights loadable as they are.
        h = h.reshape(h.shape[0], ngf, 4, 4).transpose(0, 2, 3, 1)
        for i, features in enumerate((ngf // 2, ngf // 4, ngf // 8, ngf // 16)):
            h = UpBlock(features, init, dtype=self.dtype, name=f"up{8 << i}")(h, train, modulation)
        h = ConvBlock(3, 3, init, padding=1, norm=False, dtype=self.dtype, name="to_image")(
            h, train
        )
        return jnp.tanh(h), mu, logvar


class DiscriminatorPart(nn.Module):
    """What a discriminator's image encoder or `pytorch` conditional head is configured by.

    Attributes:
      df_dim: the discriminator's base width.
      dtype: the computation dtype.
      norm: whether it has BatchNorms; False (opt-in, `config.model.d_batch_norm`) leaves out
        every one.
    """

    df_dim: int
    dtype: DType = jnp.float32
    norm: bool = True


def down_blocks(
    part: DiscriminatorPart, images: Array, count: int, kernel_init: Initializer, train: bool
) -> Array:
    """`count` down-blocks, widths df, 2df, 4df, …, the first without BatchNorm.

    Called from `part`'s compact method, the blocks (down1, down2, …) become its submodules.
    """
    h = images
    for i in range(count):
        h = down_block(
            part.df_dim << i,
            kernel_init=kernel_init,
            dtype=part.dtype,
            norm=i > 0 and part.norm,
            name=f"down{i + 1}",
        )(h, train)
    return h


def joint_logit(
    part: nn.Module,
    h: Array,
    kernel_size: int,
    kernel_init: Initializer,
    use_bias: bool,
    train: bool,
) -> Array:
    """A conditional head's end: a conv → 8df ("joint", BN, LReLU), then the 4×4 logit conv.

    Called from `part`'s compact method, the two layers become its submodules. A 3×3 joint
    conv is zero-padded by 1, so both kernel sizes keep the 4×4 map.
    """
    h = ConvBlock(
        8 * part.df_dim,
        kernel_size,
        kernel_init,
        padding=kernel_size // 2,
        norm=part.norm,
        activation=leaky_relu,
        dtype=part.dtype,
        name="joint",
    )(h, train)
    return LogitConv(kernel_init, use_bias=use_bias, dtype=part.dtype, name="logit")(h)


class Stage1EncoderTF(DiscriminatorPart):
    """`tf` Stage-I D image encoder (spec §4.1): 64×64×3 → 4×4×8df.

    Convs 3 and 4 have BN and no activation, exactly as the reference code is written.
    """

    @nn.compact
    def __call__(self, images: Array, train: bool) -> Array:
        init, df = conv_init("tf"), self.df_dim
        down = functools.partial(down_block, kernel_init=init, dtype=self.dtype, norm=self.norm)
        h = down(df, norm=False, name="down1")(images, train)
        h = down(2 * df, name="down2")(h, train)
        h = down(4 * df, activation=None, name="down3")(h, train)
        h = down(8 * df, activation=None, name="down4")(h, train)
        return BottleneckResidual(init, leaky_relu, self.dtype, self.norm, name="res")(h, train)


class Stage1EncoderPyTorch(DiscriminatorPart):
    """`pytorch` Stage-I D image encoder (spec §4.2): four down-blocks, 64×64×3 → 4×4×8df."""

    @nn.compact
    def __call__(self, images: Array, train: bool) -> Array:
        return down_blocks(self, images, 4, conv_init("pytorch"), train)


class ConditionalHeadTF(nn.Module):
    """`tf` D head: own text FC (bias) + LReLU, tiled, concat, 1×1 conv, BN, LReLU, 4×4 logit."""

    df_dim: int
    condition_dim: int
    dtype: DType = jnp.float32
    norm: bool = True

    @nn.compact
    def __call__(self, features: Array, embedding: Array, train: bool) -> Array:
        init = conv_init("tf")
        text = nn.Dense(
            self.condition_dim, kernel_init=DENSE_INIT, dtype=self.dtype, name="text_fc"
        )(embedding)
        text = tile_condition(leaky_relu(text), 4).astype(self.dtype)
        h = jnp.concatenate([features, text], axis=-1)
        return joint_logit(self, h, 1, init, use_bias=False, train=train)


class ConditionalHeadPyTorch(DiscriminatorPart):
    """`pytorch` D head: concat tiled μ, 3×3 conv, BN, LReLU, 4×4 stride-4 conv with bias."""

    @nn.compact
    def __call__(self, features: Array, mu: Array, train: bool) -> Array:
        h = jnp.concatenate([features, tile_condition(mu, 4).astype(self.dtype)], axis=-1)
        return joint_logit(self, h, 3, conv_init("pytorch"), use_bias=True, train=train)


class Projection(nn.Module):
    """The projection discriminator's text term (Miyato & Koyama, ICLR 2018): ⟨φ̄, W·c⟩.

    φ̄ is D's image features averaged over the 4×4 positions and c its condition; W is a
    bias-free linear map. Added to the conditional logit, it scores how well the image's
    features agree with the text in a form whose gradient tells G directly which features the
    text asks for. Opt-in (`config.model.d_projection`); not part of StackGAN.
    """

    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, features: Array, condition: Array) -> Array:
        pooled = jnp.mean(features.astype(jnp.float32), axis=(1, 2))
        text = nn.Dense(
            features.shape[-1], use_bias=False, kernel_init=DENSE_INIT, dtype=self.dtype, name="fc"
        )(condition)
        return jnp.sum(pooled * text.astype(jnp.float32), axis=-1)


class ContrastiveHead(nn.Module):
    """Image and text embeddings for XMC-GAN's image–sentence contrastive loss.

    Linear maps of D's mean-pooled features and of its condition, L2-normalised (XMC-GAN, Zhang
    et al., CVPR 2021).

    Opt-in (`config.model.d_contrastive`); not part of StackGAN.
    """

    dim: int = 128
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, features: Array, condition: Array) -> tuple[Array, Array]:
        pooled = jnp.mean(features.astype(jnp.float32), axis=(1, 2))
        dense = functools.partial(nn.Dense, self.dim, kernel_init=DENSE_INIT, dtype=self.dtype)
        image = dense(name="image_fc")(pooled).astype(jnp.float32)
        text = dense(name="text_fc")(condition).astype(jnp.float32)
        normalise = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True).clip(1e-12)  # noqa: E731
        return normalise(image), normalise(text)


class Discriminator(nn.Module):
    """A discriminator as an image encoder plus a conditional (and optional unconditional) head.

    The parts are separate methods because the references call them separately: `pytorch`
    encodes the real images once and reuses the features for the mismatched ("wrong") pairs,
    and every call normalises with its own batch statistics. `__call__` runs everything once
    (for initialisation and for simple use).

    The condition is the raw text embedding for `tf` (D has its own text FC) and Conditioning
    Augmentation's μ for `pytorch`. An optional `projection` term is added to the conditional
    logits.
    """

    encoder: nn.Module
    conditional_head: nn.Module
    unconditional_head: nn.Module | None = None
    projection: nn.Module | None = None
    contrastive: nn.Module | None = None

    def encode(self, images: Array, train: bool = True) -> Array:
        """Image → [B, 4, 4, 8df] features."""
        return self.encoder(images, train)

    def conditional_logits(self, features: Array, condition: Array, train: bool = True) -> Array:
        """Features and condition → [B] logits of "real and matching the text"."""
        logits = self.conditional_head(features, condition, train)
        if self.projection is not None:
            logits = logits + self.projection(features, condition)
        return logits

    def contrastive_embeddings(self, features: Array, condition: Array) -> tuple[Array, Array]:
        """Features and condition → L2-normalised (image, text) embeddings (`ContrastiveHead`)."""
        return self.contrastive(features, condition)

    def unconditional_logits(self, features: Array) -> Array:
        """Features → [B] logits of "real" (Stage-II `pytorch` only)."""
        return self.unconditional_head(features)

    def __call__(
        self, images: Array, condition: Array, train: bool = True
    ) -> tuple[Array, Array | None]:
        """Returns (conditional logits, unconditional logits or None)."""
        features = self.encode(images, train)
        unconditional = None
        if self.unconditional_head is not None:
            unconditional = self.unconditional_logits(features)
        if self.contrastive is not None:
            self.contrastive_embeddings(features, condition)  # creates its parameters
        return self.conditional_logits(features, condition, train), unconditional
