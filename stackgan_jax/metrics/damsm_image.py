"""AttnGAN's DAMSM image encoder (`CNN_ENCODER`) in Flax, and its released weights, torch-free.

The reference is `CNN_ENCODER` in code/model.py of MinfengZhu/DM-GAN (lines 158-263), the code
that computes R-precision (AttnGAN's code/model.py lines 162-267 is the same class):

* the image, in the generator's range [-1, 1], is resized to 299 × 299 by
  `nn.Upsample(size=(299, 299), mode='bilinear', align_corners=True)`. DM-GAN (PyTorch 0.4.1)
  writes `align_corners=True`; AttnGAN's copy leaves it out, which meant the same in the
  PyTorch 0.3 it was written for (0.4 changed the default to False);
* torchvision's Inception-v3 from `Conv2d_1a_3x3` to `Mixed_7c`, its modules called directly, so
  without `Inception3.forward`'s `transform_input`, and `F.avg_pool2d(kernel_size=8)` over the
  last 8 × 8 map (`metrics.torchvision_inception`);
* `emb_features`: a 1 × 1 convolution without bias of `Mixed_6e` (768 → 256), the region
  features; `emb_cnn_code`: `nn.Linear(2048, 256)` of the pooled features, the image code that
  R-precision compares with sentence embeddings.

`image_encoder200.pth` (birds) and `image_encoder100.pth` (COCO) of AttnGAN's DAMSM release are
`CNN_ENCODER.state_dict()`: the trunk's torchvision names at the top level (`Conv2d_1a_3x3.conv.
weight`, ..., `Mixed_7c.branch_pool.bn.running_var`; no `fc`, no `AuxLogits`) and `emb_features.
weight`, `emb_cnn_code.weight`, `emb_cnn_code.bias`.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stackgan_jax.metrics import torchvision_inception
from stackgan_jax.metrics.batching import map_batches
from stackgan_jax.untrusted import torch_pickle
from stackgan_jax.untrusted.errors import RefusedFileError
from stackgan_jax.weights import Params

INPUT_SIZE = 299
_HIGHEST = jax.lax.Precision.HIGHEST
_HEAD = ("emb_features.weight", "emb_cnn_code.weight", "emb_cnn_code.bias")


def align_corners_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Bilinear resampling along one axis as PyTorch's `align_corners=True` does it.

    Output pixel j reads input position `j * (in - 1) / (out - 1)`, computed in float32 as
    PyTorch's CPU and CUDA kernels do, so the first and last pixels of both line up.

    Returns:
        float32 [out_size, in_size] interpolation weights (each row sums to 1).
    """
    scale = np.float32((in_size - 1) / (out_size - 1)) if out_size > 1 else np.float32(0)
    source = scale * np.arange(out_size, dtype=np.float32)
    low = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    fraction = (source - low).astype(np.float64)
    weights = np.zeros((out_size, in_size), np.float64)
    np.add.at(weights, (np.arange(out_size), low), 1 - fraction)
    np.add.at(weights, (np.arange(out_size), high), fraction)
    return weights.astype(np.float32)


def resize_to_input(images: jax.Array) -> jax.Array:
    """[N, H, W, 3] images resized to [N, 299, 299, 3] (`align_corners_matrix` on each axis)."""
    rows = jnp.asarray(align_corners_matrix(images.shape[1], INPUT_SIZE))
    columns = jnp.asarray(align_corners_matrix(images.shape[2], INPUT_SIZE))
    return jnp.einsum("ih,jw,nhwc->nijc", rows, columns, images, precision=_HIGHEST)


class DamsmImageEncoder(nn.Module):
    """AttnGAN's `CNN_ENCODER` in evaluation mode.

    Attributes:
        features: the embedding size `nef` (256).
    """

    features: int = 256

    @nn.compact
    def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Region features and the image code.

        Args:
            images: float32 [N, H, W, 3] in [-1, 1].

        Returns:
            (float32 [N, 17, 17, features] region features, float32 [N, features] image code).
        """
        trunk = torchvision_inception.TorchvisionInception(name="trunk")(resize_to_input(images))
        regions = nn.Conv(
            self.features, (1, 1), use_bias=False, precision=_HIGHEST, name="emb_features"
        )(trunk["mixed_6e"])
        code = nn.Dense(self.features, precision=_HIGHEST, name="emb_cnn_code")(trunk["pool"])
        return regions, code


@dataclasses.dataclass(frozen=True)
class LoadedImageEncoder:
    """A DAMSM image encoder with its weights.

    Attributes:
        module: the network.
        variables: `{'params', 'batch_stats'}` for `module.apply`.
        path: the weights file.
    """

    module: DamsmImageEncoder
    variables: Params
    path: str

    def image_codes(self, images: np.ndarray, batch_size: int = 50) -> np.ndarray:
        """float32 [N, features] image codes (`emb_cnn_code`) of [-1, 1] images, in batches."""
        if not len(images):
            return np.zeros((0, self.module.features), np.float32)
        return map_batches(
            lambda batch: _codes(self.module, self.variables, batch.astype(np.float32)),
            images,
            batch_size,
            desc="DAMSM images",
        )


@functools.partial(jax.jit, static_argnums=0)
def _codes(module: DamsmImageEncoder, variables: Params, images: jax.Array) -> jax.Array:
    return module.apply(variables, images)[1]


def image_encoder_from_state_dict(
    state: dict[str, np.ndarray], source: str
) -> tuple[DamsmImageEncoder, Params]:
    """The network and its variables from a `CNN_ENCODER` state dict.

    Args:
        state: {torch name: array}, as `torch_pickle.load_state_dict` reads it.
        source: the file's name, for error messages.

    Returns:
        (module, {'params', 'batch_stats'}).

    Raises:
        RefusedFileError: the names or shapes are not a `CNN_ENCODER`'s; the message names the
            file.
    """
    missing = [name for name in _HEAD if name not in state]
    if missing or "fc.weight" in state:
        raise RefusedFileError(
            f"{source} is not an AttnGAN CNN_ENCODER state dict (torchvision Inception-v3 up to"
            f" Mixed_7c, emb_features, emb_cnn_code): missing {missing}"
            + (", and it has an fc layer" if "fc.weight" in state else "")
        )
    features = state["emb_features.weight"].shape[0]
    want = {
        "emb_features.weight": (features, 768, 1, 1),
        "emb_cnn_code.weight": (features, torchvision_inception.FEATURE_DIM),
        "emb_cnn_code.bias": (features,),
    }
    for name, shape in want.items():
        if state[name].shape != shape:
            raise RefusedFileError(f"{source}: {name} is {list(state[name].shape)}, not {shape}")
    trunk = {name: value for name, value in state.items() if not name.startswith("emb_")}
    # CNN_ENCODER keeps no `fc`; the trunk's unused logits get zeros (jit drops them).
    trunk["fc.weight"] = np.zeros((1000, torchvision_inception.FEATURE_DIM), np.float32)
    trunk["fc.bias"] = np.zeros(1000, np.float32)
    try:
        variables = torchvision_inception.params_from_state_dict(trunk)
    except RefusedFileError as e:
        raise RefusedFileError(f"{source}: {e}") from e
    params = {
        "trunk": variables["params"],
        "emb_features": {"kernel": state["emb_features.weight"].transpose(2, 3, 1, 0)},
        "emb_cnn_code": {
            "kernel": state["emb_cnn_code.weight"].T,
            "bias": state["emb_cnn_code.bias"],
        },
    }
    variables = {"params": params, "batch_stats": {"trunk": variables["batch_stats"]}}
    return DamsmImageEncoder(features), jax.tree.map(jnp.asarray, variables)


def load_image_encoder(path: str | os.PathLike[str]) -> LoadedImageEncoder:
    """Reads a DAMSM `image_encoder*.pth` without torch and without running anything from it.

    Args:
        path: e.g. AttnGAN's `DAMSMencoders/bird/image_encoder200.pth`.

    Returns:
        The encoder with its weights.

    Raises:
        FileNotFoundError: no file there.
        RefusedFileError: not a state dict, or not a `CNN_ENCODER`'s.
    """
    path = os.fspath(path)
    module, variables = image_encoder_from_state_dict(torch_pickle.load_state_dict(path), path)
    return LoadedImageEncoder(module, variables, path)
