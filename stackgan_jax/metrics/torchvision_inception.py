"""The Inception-v3 of torchvision (`models.Inception3`) in Flax, its weights read torch-free.

This is the network of torchvision's ImageNet weights (`inception_v3_google-0cc3c7bd.pth`), which
DM-GAN's, DF-GAN's and GALIP's FID code and AttnGAN's DAMSM image encoder use. It is the
Inception-v3 of `inception_net` with torchvision's standard blocks instead of the TF graph's:

* every convolution is a `BasicConv2d`: conv (no bias) + batch norm *with* a scale (ε 1e-3) +
  ReLU, its running statistics in the `batch_stats` collection;
* every pool branch of Mixed_5b-d, 6b-e and 7b-c is an average pool (3x3, stride 1, padding 1)
  that counts the padded zeros (`F.avg_pool2d`'s default); the TF graph's (pytorch-fid's
  FIDInception blocks) do not count them, and its Mixed_7c max-pools;
* the head is the average over the 8x8 map (2048) and a 1000-way `fc` with a bias.

Parameter names follow `inception_net` (conv, conv_1, ..., mixed_10/tower_2_conv, fc);
`torchvision_conv_names` maps torchvision's module names onto them. The auxiliary classifier
(`AuxLogits`), used only in training, is not built.

`TorchvisionInception` takes what torchvision's `Conv2d_1a_3x3` receives: torchvision's
`Inception3.forward` first re-normalises its input when `transform_input` is set (as the
pretrained builder sets it; `transform_input` here), the FID and DAMSM code above call the
blocks themselves and feed them their own way (`inception_input.DFGAN_CONVENTION`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stackgan_jax.metrics.inception_net import (
    FEATURE_DIM,
    INPUT_SIZE,
    ConvBN,
    PoolSpec,
    check_input_shape,
    inception_v3_layers,
    indexed_name,
)
from stackgan_jax.untrusted import torch_pickle
from stackgan_jax.untrusted.errors import RefusedFileError
from stackgan_jax.weights import MissingWeightsError

NUM_CLASSES = 1000
BN_EPSILON = 1e-3
WEIGHTS_FILE = "inception_v3_google-0cc3c7bd.pth"
WEIGHTS_URL = "https://download.pytorch.org/models/" + WEIGHTS_FILE
# torch hub names a file by the first 8 hex digits of its sha256: the file torchvision downloads
# today, and the older one that AttnGAN (DAMSM) names and torchvision once downloaded.
WEIGHTS_SHA256_PREFIXES = ("0cc3c7bd", "1a9a5a14")
# torchvision `_transform_input`: ImageNet-normalised input -> the Google weights' [-1, 1] range.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's `F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)`: the padding counts.
AVG_POOL_3X3_COUNT_PAD = PoolSpec("avg", 3, 1, 1, count_include_pad=True)


class BasicConv2d(ConvBN):
    """torchvision's `BasicConv2d`: `ConvBN`'s layer, but its batch norm has a scale.

    Variables: params `conv/kernel` [kh, kw, in, out], `bn/scale`, `bn/bias`; batch_stats
    `bn/mean`, `bn/var` [out]. The attributes are `ConvBN`'s.
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps [N, H, W, C] to [N, H', W', features]."""
        x = nn.Conv(
            self.features,
            self.kernel_size,
            strides=self.strides,
            padding=tuple((p, p) for p in self.padding),
            use_bias=False,
            precision=self.precision,
            name="conv",
        )(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="bn")(x)
        return nn.relu(x)


class TorchvisionInception(nn.Module):
    """torchvision's `Inception3` (without `AuxLogits`), in eval mode.

    Attributes:
      precision: convolution and `fc` precision.
    """

    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        """The network's outputs.

        Args:
          x: float32[N, 299, 299, 3], NHWC, what torchvision's `Conv2d_1a_3x3` receives (after
            `transform_input`, where the caller's convention has one).

        Returns:
          {"mixed_6e": float32[N, 17, 17, 768], the output of Mixed_6e (DAMSM's region
          features); "pool": float32[N, 2048], the average over the last 8x8 map (FID
          features); "logits": float32[N, 1000], `fc` of pool (dropout is off in eval mode)}.
        """
        check_input_shape(x)
        mixed_6e, x = inception_v3_layers(
            x,
            self.precision,
            BasicConv2d,
            AVG_POOL_3X3_COUNT_PAD,
            (AVG_POOL_3X3_COUNT_PAD, AVG_POOL_3X3_COUNT_PAD),
        )
        pool = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(NUM_CLASSES, precision=self.precision, name="fc")(pool)
        return {"mixed_6e": mixed_6e, "pool": pool, "logits": logits}


def transform_input(x: jax.Array) -> jax.Array:
    """The `_transform_input` of torchvision's `Inception3`, NHWC: x std / 0.5 + (mean - 0.5) / 0.5.

    Maps ImageNet-normalised images ((p - mean) / std, p in [0, 1]) to 2p - 1, the range of the
    Google weights; torchvision applies it when `transform_input=True` (its pretrained default).
    """
    scale = jnp.asarray(IMAGENET_STD, x.dtype) / 0.5
    offset = (jnp.asarray(IMAGENET_MEAN, x.dtype) - 0.5) / 0.5
    return x * scale + offset


# ------------------------------------------------------------------------------------------------
# torchvision's names.

# torchvision `BasicConv2d` modules -> `inception_net` layer paths: the stem, then each block's
# branches by block kind (InceptionA-E), then which block is which.
_STEM = {
    "Conv2d_1a_3x3": "conv",
    "Conv2d_2a_3x3": "conv_1",
    "Conv2d_2b_3x3": "conv_2",
    "Conv2d_3b_1x1": "conv_3",
    "Conv2d_4a_3x3": "conv_4",
}
_BRANCHES = {
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
        **{f"branch7x7dbl_{i + 1}": f"tower_1/{indexed_name('conv', i)}" for i in range(5)},
        "branch_pool": "tower_2/conv",
    },
    "D": {
        "branch3x3_1": "tower/conv",
        "branch3x3_2": "tower/conv_1",
        **{f"branch7x7x3_{i + 1}": f"tower_1/{indexed_name('conv', i)}" for i in range(4)},
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
_BLOCKS = {
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
# Tensors of the state dict that the network does not use: the training-only auxiliary
# classifier and the batch norms' step counters.
_IGNORED_PREFIXES = ("AuxLogits.",)
_IGNORED_SUFFIXES = (".num_batches_tracked",)


def torchvision_conv_names() -> dict[str, str]:
    """Maps torchvision module prefixes ('Mixed_5b.branch5x5_1') to `inception_net` layer paths."""
    names = dict(_STEM)
    for block, (path, kind) in _BLOCKS.items():
        for branch, conv in _BRANCHES[kind].items():
            names[f"{block}.{branch}"] = f"{path}/{conv}"
    return names


@functools.cache
def variable_shapes() -> dict[str, tuple[int, ...]]:
    """'collection/path/name' -> shape of every variable of `TorchvisionInception`."""
    shapes = jax.eval_shape(
        TorchvisionInception().init,
        jax.random.key(0),
        jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32),
    )
    return {
        path: leaf.shape for path, leaf in flax.traverse_util.flatten_dict(shapes, sep="/").items()
    }


def _state_dict_names() -> dict[str, tuple[str, bool]]:
    """Each torchvision tensor name -> (our variable path, whether the tensor is transposed)."""
    names = {}
    for prefix, path in torchvision_conv_names().items():
        names[f"{prefix}.conv.weight"] = (f"params/{path}/conv/kernel", True)
        names[f"{prefix}.bn.weight"] = (f"params/{path}/bn/scale", False)
        names[f"{prefix}.bn.bias"] = (f"params/{path}/bn/bias", False)
        names[f"{prefix}.bn.running_mean"] = (f"batch_stats/{path}/bn/mean", False)
        names[f"{prefix}.bn.running_var"] = (f"batch_stats/{path}/bn/var", False)
    names["fc.weight"] = ("params/fc/kernel", True)
    names["fc.bias"] = ("params/fc/bias", False)
    return names


def _to_flax(array: np.ndarray) -> np.ndarray:
    """A torch weight in Flax's layout: OIHW conv kernels -> HWIO, [out, in] linear -> [in, out]."""
    return np.transpose(array, (2, 3, 1, 0)) if array.ndim == 4 else array.T


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The torch shape of a Flax weight shape: HWIO -> OIHW, [in, out] -> [out, in]."""
    return (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape[::-1]


def params_from_state_dict(state: Mapping[str, np.ndarray]) -> dict:
    """Maps torchvision's Inception-v3 state dict onto `TorchvisionInception`'s variables.

    Args:
      state: tensor name -> array, as `torch_pickle.load_state_dict` reads
        `torchvision.models.inception_v3(...).state_dict()` (`Conv2d_1a_3x3.conv.weight`,
        `Mixed_6e.branch7x7_1.bn.running_mean`, `fc.weight`, ...). `AuxLogits.*` and
        `*.num_batches_tracked` are ignored.

    Returns:
      {"params": ..., "batch_stats": ...} of float32 NumPy arrays, for
      `TorchvisionInception().apply`.

    Raises:
      RefusedFileError: naming every missing, unexpected and misshapen tensor, if the state dict
        is not this network's.
    """
    names, shapes = _state_dict_names(), variable_shapes()
    used = {
        name: value
        for name, value in state.items()
        if not name.startswith(_IGNORED_PREFIXES) and not name.endswith(_IGNORED_SUFFIXES)
    }
    problems = [f"missing {name}" for name in names if name not in used]
    problems += [f"unexpected {name}" for name in used if name not in names]
    variables = {}
    for name, value in used.items():
        if name not in names:
            continue
        path, transposed = names[name]
        array = np.asarray(value, np.float32)
        array = _to_flax(array) if transposed else array
        if array.shape != shapes[path]:
            expected = _torch_shape(shapes[path]) if transposed else shapes[path]
            problems.append(f"{name}: shape {np.shape(value)} != {expected}")
        variables[path] = array
    if problems:
        raise RefusedFileError(
            "not torchvision's Inception-v3 state dict (torchvision.models.inception_v3): "
            + "; ".join(problems)
        )
    return flax.traverse_util.unflatten_dict(variables, sep="/")


def load_variables(path: str | os.PathLike[str]) -> dict:
    """Reads torchvision's Inception-v3 weights from a `.pth` state dict, torch-free.

    Args:
      path: a `torch.save`d state dict of `torchvision.models.inception_v3`, e.g. torchvision's
        ImageNet weights `inception_v3_google-0cc3c7bd.pth` (torch hub keeps its downloads in
        `~/.cache/torch/hub/checkpoints/`).

    Returns:
      {"params": ..., "batch_stats": ...} (`params_from_state_dict`).

    Raises:
      MissingWeightsError: if there is no file at `path`.
      RefusedFileError: if the file is not such a state dict (`untrusted.torch_pickle`).
    """
    if not os.path.isfile(path):
        raise MissingWeightsError(
            f"torchvision's Inception-v3 weights not found at {path}: place there torchvision's"
            f" ImageNet weights {WEIGHTS_FILE} (from {WEIGHTS_URL}; torchvision keeps its"
            " download in ~/.cache/torch/hub/checkpoints/). Nothing is downloaded."
        )
    return params_from_state_dict(torch_pickle.load_state_dict(path))


__all__ = [
    "FEATURE_DIM",
    "BasicConv2d",
    "TorchvisionInception",
    "load_variables",
    "params_from_state_dict",
    "torchvision_conv_names",
    "transform_input",
]
