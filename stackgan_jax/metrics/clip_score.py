"""The CLIP score as GALIP computes it: mean cosine similarity of CLIP image and text features.

tobran/GALIP (CVPR 2023) `code/lib/modules.py`:

* lines 265-267: the generated images are clamped to [-1, 1] and NaN/±inf replaced by -1/±1;
* lines 304-313, `calc_clip_sim`: `transf_to_CLIP_input(fake)`, `clip.encode_image`,
  `clip.encode_text(clip.tokenize(caption, truncate=True))` (`code/lib/datasets.py` line 78),
  `torch.cosine_similarity(...).mean()`; no ×100 (its `test.py` prints ×100, the paper's tables
  do not) and no clipping at 0;
* lines 293-296: the batch means are averaged; its test loader drops the last partial batch
  (`code/lib/perpare.py`, `drop_last=True`), so that is the mean over all scored images, which
  is what `clip_score` returns.

`code/lib/utils.py` lines 216-227, `transf_to_CLIP_input`, is reproduced as written, oddities
included (`galip_clip_input`): images in [-1, 1] are mapped to [0, 1] (`x*0.5+0.5`), resized to
224×224 by `F.interpolate`'s default **nearest** mode (not CLIP's bicubic resize and centre crop),
then mapped **again** (`(x+1)*0.5`, so the pixels reach CLIP in [0.5, 1], not [0, 1]) and
normalised with CLIP's mean and standard deviation (named `var` there). The model is OpenAI's
ViT-B/32 (`code/cfg/*.yml`, `clip4evl`), loaded by `clip.load`, which on a GPU keeps its float16
weights and computes in float16; this port computes in float32 with those same weights.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from stackgan_jax.metrics import clip_net, clip_weights
from stackgan_jax.metrics.batching import map_batches
from stackgan_jax.weights import Params

PROTOCOL = "galip"
GALIP_SIZE = 224
# openai/CLIP `_transform`'s Normalize, copied by GALIP's `transf_to_CLIP_input`.
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source rows of torch's `F.interpolate(mode='nearest')`: floor(i · in/out), float32.

    Not `jax.image.resize(..., 'nearest')`, which samples pixel centres, floor((i + ½) · in/out).
    """
    scale = np.float32(in_size) / np.float32(out_size)
    rows = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int32)
    return np.minimum(rows, in_size - 1)


def galip_clip_input(images: jax.Array) -> jax.Array:
    """GALIP's generated images → CLIP's input, as modules.py 265-267 and `transf_to_CLIP_input`.

    Args:
        images: float[B, H, W, 3] generator output, nominally in [-1, 1].

    Returns:
        float32[B, 224, 224, 3].
    """
    x = jnp.nan_to_num(jnp.clip(images.astype(jnp.float32), -1.0, 1.0), nan=-1.0)
    x = x * 0.5 + 0.5
    rows = nearest_indices(x.shape[1], GALIP_SIZE)
    cols = nearest_indices(x.shape[2], GALIP_SIZE)
    x = x[:, rows][:, :, cols]
    # GALIP maps to [0, 1] a second time; kept, since its published scores include it.
    x = (x + 1) * 0.5
    return (x - CLIP_MEAN) / CLIP_STD


@functools.partial(jax.jit, static_argnums=0)
def _image_features(config: clip_net.ClipConfig, params: Params, images: jax.Array):
    return clip_net.Clip(config).apply(params, galip_clip_input(images), method="encode_image")


@functools.partial(jax.jit, static_argnums=0)
def _text_features(config: clip_net.ClipConfig, params: Params, tokens: jax.Array):
    return clip_net.Clip(config).apply(params, tokens, method="encode_text")


def features(
    model: clip_weights.ClipModel, images: np.ndarray, captions: list[str], batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """CLIP image features of GALIP's input and text features of `clip.tokenize(captions)`.

    Args:
        model: from `clip_weights.load_clip`.
        images: float[n, H, W, 3] in [-1, 1].
        captions: n captions, image i's first.
        batch_size: images or captions per call.

    Returns:
        (float32[n, embed_dim] image features, float32[n, embed_dim] text features).
    """
    config, params = model.config, model.params
    tokens = model.tokenizer(captions, config.context_length)
    image_features = functools.partial(_image_features, config, params)
    text_features = functools.partial(_text_features, config, params)
    image = map_batches(image_features, images, batch_size, desc="CLIP images")
    text = map_batches(text_features, tokens, batch_size, desc="CLIP captions")
    return image, text


def cosine_similarities(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise `torch.cosine_similarity` (eps 1e-8), in float64."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-8)


def clip_score(
    model: clip_weights.ClipModel, images: np.ndarray, captions: list[str], batch_size: int = 64
) -> float:
    """GALIP's CLIP score: the mean over images of cos(image features, caption features).

    Args:
        model: from `clip_weights.load_clip`.
        images: float[n, H, W, 3] generated images in [-1, 1].
        captions: their n captions, in the same order.
        batch_size: images per forward call.

    Returns:
        The mean cosine similarity, in [-1, 1] (GALIP reports CUB 0.3164, COCO 0.3338).
    """
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    return float(cosine_similarities(*features(model, images, captions, batch_size)).mean())
