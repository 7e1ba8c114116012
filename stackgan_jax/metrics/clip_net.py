"""CLIP's ViT image encoder and text transformer (OpenAI's `clip/model.py`) in Flax Linen.

The forward pass of openai/CLIP's `VisionTransformer` and `CLIP.encode_text` (which Hugging Face's
`CLIPModel.get_image_features` / `get_text_features` reproduce): pre-LayerNorm residual attention
blocks with QuickGELU MLPs, the class token's state for an image, the state at the
`<|endoftext|>` token (the highest id of a row) for a text, each projected to `embed_dim`.
Sizes come from `ClipConfig`, which `clip_weights` reads off the weights, so ViT-B/32 and a tiny
random CLIP run the same code. Computed in float32; OpenAI's released weights are float16.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

# openai/CLIP `LayerNorm` is torch's default, eps 1e-5; Hugging Face's config says the same.
LAYER_NORM_EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class TowerConfig:
    """A transformer stack: `layers` blocks of `width` features and `heads` attention heads."""

    width: int
    layers: int
    heads: int


@dataclasses.dataclass(frozen=True)
class ClipConfig:
    """The sizes of a ViT CLIP.

    Attributes:
        embed_dim: the shared image/text feature size (ViT-B/32: 512).
        image_size: the input side in pixels (224).
        patch_size: the side of a patch (32).
        vision: the image transformer (768 wide, 12 layers, 12 heads).
        context_length: tokens per text (77).
        vocab_size: token ids (49408).
        text: the text transformer (512 wide, 12 layers, 8 heads).
        activation: the MLP's, 'quick_gelu' (OpenAI's) or 'gelu' (exact).
    """

    embed_dim: int
    image_size: int
    patch_size: int
    vision: TowerConfig
    context_length: int
    vocab_size: int
    text: TowerConfig
    activation: str = "quick_gelu"


def quick_gelu(x: jax.Array) -> jax.Array:
    """openai/CLIP `QuickGELU`: x·sigmoid(1.702·x)."""
    return x * jax.nn.sigmoid(1.702 * x)


_ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": lambda x: jax.nn.gelu(x, approximate=False)}


def _layer_norm(name: str) -> nn.LayerNorm:
    # The two-pass variance matches torch to float32 rounding.
    return nn.LayerNorm(epsilon=LAYER_NORM_EPS, use_fast_variance=False, name=name)


class ResidualAttentionBlock(nn.Module):
    """openai/CLIP `ResidualAttentionBlock`: x + attn(ln_1(x)), then x + mlp(ln_2(x)).

    The attention is torch's `nn.MultiheadAttention` with its packed in-projection split into
    `query`, `key` and `value`.

    Attributes:
        heads: attention heads.
        activation: the MLP's activation (a key of `_ACTIVATIONS`).
        causal: each token attends only to itself and earlier ones (the text transformer).
    """

    heads: int
    activation: str
    causal: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Transforms float32[B, T, W]."""
        batch, length, width = x.shape
        highest = jax.lax.Precision.HIGHEST
        dense = lambda features, name: nn.Dense(features, precision=highest, name=name)  # noqa: E731
        h = _layer_norm("ln_1")(x)
        q, k, v = (
            dense(width, name)(h).reshape(batch, length, self.heads, -1)
            for name in ("query", "key", "value")
        )
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=highest)
        scores = scores / math.sqrt(width // self.heads)
        if self.causal:
            # OpenAI adds -inf above the diagonal; every row keeps its diagonal, so no NaN.
            allowed = jnp.tril(jnp.ones((length, length), bool))
            scores = jnp.where(allowed, scores, -jnp.inf)
        weights = jax.nn.softmax(scores, axis=-1)
        attended = jnp.einsum("bhqk,bkhd->bqhd", weights, v, precision=highest)
        x = x + dense(width, "out")(attended.reshape(batch, length, width))
        h = dense(4 * width, "c_fc")(_layer_norm("ln_2")(x))
        return x + dense(width, "c_proj")(_ACTIVATIONS[self.activation](h))


class Transformer(nn.Module):
    """openai/CLIP `Transformer`: `resblocks_0` .. `resblocks_{layers-1}`."""

    tower: TowerConfig
    activation: str
    causal: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Transforms float32[B, T, W]."""
        for i in range(self.tower.layers):
            x = ResidualAttentionBlock(
                self.tower.heads, self.activation, self.causal, name=f"resblocks_{i}"
            )(x)
        return x


class VisionTransformer(nn.Module):
    """openai/CLIP `VisionTransformer` (`visual`).

    | stage       | operation                                            | output          |
    |-------------|------------------------------------------------------|-----------------|
    | conv1       | patch × patch conv, stride patch, no bias            | [B, g, g, W]    |
    | tokens      | class_embedding, the g² patches row by row; + positions; ln_pre | [B, g²+1, W] |
    | transformer | `vision.layers` blocks                               | [B, g²+1, W]    |
    | output      | ln_post of the class token, @ proj                   | [B, embed_dim]  |
    """

    config: ClipConfig

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        """float32[B, image_size, image_size, 3], CLIP-normalised → float32[B, embed_dim]."""
        cfg, width = self.config, self.config.vision.width
        patch = (cfg.patch_size, cfg.patch_size)
        x = nn.Conv(
            width,
            patch,
            strides=patch,
            padding="VALID",
            use_bias=False,
            precision=jax.lax.Precision.HIGHEST,
            name="conv1",
        )(images)
        x = x.reshape(x.shape[0], -1, width)
        tokens = (cfg.image_size // cfg.patch_size) ** 2 + 1
        cls = self.param("class_embedding", nn.initializers.normal(width**-0.5), (width,))
        positions = self.param(
            "positional_embedding", nn.initializers.normal(width**-0.5), (tokens, width)
        )
        x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, width)), x], axis=1)
        x = _layer_norm("ln_pre")(x + positions)
        x = Transformer(cfg.vision, cfg.activation, causal=False, name="transformer")(x)
        proj = self.param("proj", nn.initializers.normal(width**-0.5), (width, cfg.embed_dim))
        return jnp.dot(_layer_norm("ln_post")(x[:, 0]), proj, precision=jax.lax.Precision.HIGHEST)


class TextTransformer(nn.Module):
    """openai/CLIP `CLIP.encode_text`.

    | stage       | operation                                            | output          |
    |-------------|------------------------------------------------------|-----------------|
    | embedding   | token_embedding + positional_embedding               | [B, 77, W]      |
    | transformer | `text.layers` causal blocks                          | [B, 77, W]      |
    | output      | ln_final at each row's highest id (the end marker), @ text_projection | [B, E] |
    """

    config: ClipConfig

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        """int32[B, context_length] from `clip.tokenize` → float32[B, embed_dim]."""
        cfg, width = self.config, self.config.text.width
        x = nn.Embed(cfg.vocab_size, width, name="token_embedding")(tokens)
        positions = self.param(
            "positional_embedding", nn.initializers.normal(0.01), (cfg.context_length, width)
        )
        x = Transformer(cfg.text, cfg.activation, causal=True, name="transformer")(x + positions)
        x = _layer_norm("ln_final")(x)
        # OpenAI: "take features from the eot embedding (eot_token is the highest number in each
        # sequence)".
        x = x[jnp.arange(x.shape[0]), jnp.argmax(tokens, axis=-1)]
        projection = self.param(
            "text_projection", nn.initializers.normal(width**-0.5), (width, cfg.embed_dim)
        )
        return jnp.dot(x, projection, precision=jax.lax.Precision.HIGHEST)


class Clip(nn.Module):
    """Both CLIP encoders; `apply(params, x, method='encode_image' | 'encode_text')`.

    Parameters live under `visual/` (the image encoder) and `text/` (the text encoder).
    """

    config: ClipConfig

    def setup(self) -> None:
        """Builds the two encoders."""
        self.visual = VisionTransformer(self.config)
        self.text = TextTransformer(self.config)

    def encode_image(self, images: jax.Array) -> jax.Array:
        """float32[B, S, S, 3] CLIP-normalised images → float32[B, embed_dim] (not unit length)."""
        return self.visual(images)

    def encode_text(self, tokens: jax.Array) -> jax.Array:
        """int32[B, context_length] tokens → float32[B, embed_dim] (not unit length)."""
        return self.text(tokens)

    def __call__(self, images: jax.Array, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Both encoders, for `init`."""
        return self.encode_image(images), self.encode_text(tokens)
