"""What caption embeddings become before they reach G and D (`config.data.embedding_norm`).

- `'scale'` (the references, where `data.text_scale` is 1): e ↦ text_scale · e.
- `'standardize'`: e ↦ (e − m) / s per dimension, with m and s the mean and standard deviation of
  every caption embedding of the training split. Template captions share most of their
  embedding (MiniLM's unit vectors of the demo's captions have a common mean of norm 0.82 and
  residuals of norm 0.58), so a single scale leaves what tells captions apart small next to
  what they all share; standardising centres it and gives every dimension unit spread.

The statistics are part of the trained model: a checkpoint's `meta` stores them
(`to_meta`), and sampling, evaluation and Stage-II read them from there (`from_meta`), so a new
sentence is treated exactly as the training captions were.
"""

import dataclasses
from typing import Any

import jax
import ml_collections
import numpy as np

from stackgan_jax.errors import ConfigError

MODES = ("scale", "standardize")
META_KEY = "embedding_norm"
# A dimension that hardly varies over the training captions (MiniLM has two that are always
# ~0) is divided by at least this fraction of the median dimension's std, so that a new
# sentence's tiny value there is not blown up.
MIN_RELATIVE_STD = 0.1


@dataclasses.dataclass(frozen=True, eq=False)
class EmbeddingNorm:
    """e ↦ (e − shift) · scale, elementwise over the embedding's last axis.

    Attributes:
        mode: one of MODES.
        shift: float32 [D], or a scalar 0.
        scale: float32 [D], or a scalar.
    """

    mode: str
    shift: np.ndarray
    scale: np.ndarray

    def __call__(self, embedding: jax.Array) -> jax.Array:
        """The normalised embedding, same shape and dtype."""
        return ((embedding - self.shift) * self.scale).astype(embedding.dtype)


def scaled(text_scale: float) -> EmbeddingNorm:
    """The references' form: multiply by `text_scale`."""
    return EmbeddingNorm("scale", np.float32(0), np.float32(text_scale))


def standardized(mean: np.ndarray, std: np.ndarray) -> EmbeddingNorm:
    """Per-dimension standardisation with the given statistics.

    Each std is floored at MIN_RELATIVE_STD times the median std.
    """
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    std = np.maximum(std, np.float32(MIN_RELATIVE_STD) * np.median(std))
    return EmbeddingNorm("standardize", mean, (1.0 / std).astype(np.float32))


def training_statistics(
    embeddings: np.ndarray, num_captions: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per dimension of every valid caption embedding.

    Args:
        embeddings: float32 [N, E, D], rows past an example's `num_captions` being padding.
        num_captions: int [N].

    Returns:
        (mean [D], std [D]) in float64 arithmetic, returned as float32.
    """
    valid = np.arange(embeddings.shape[1])[None, :] < np.asarray(num_captions)[:, None]
    rows = np.asarray(embeddings, np.float64)[valid]
    return rows.mean(axis=0).astype(np.float32), rows.std(axis=0).astype(np.float32)


def check_mode(mode: str) -> None:
    """Raises ValueError for an unknown `config.data.embedding_norm`."""
    if mode not in MODES:
        raise ConfigError(f"data.embedding_norm must be one of {MODES}, got {mode!r}")


def mode_of(config: ml_collections.ConfigDict) -> str:
    """The config's mode; configs written before the field existed scale."""
    mode = config.data.get("embedding_norm", "scale")
    check_mode(mode)
    return mode


def from_source(config: ml_collections.ConfigDict, source: Any) -> EmbeddingNorm:
    """The normalisation `config` asks for, its statistics taken from the training `source`."""
    if mode_of(config) == "scale":
        return scaled(config.data.text_scale)
    return standardized(*training_statistics(source.embeddings, source.num_captions))


def to_meta(norm: EmbeddingNorm) -> dict[str, Any]:
    """The JSON form stored in a checkpoint's meta."""
    return {
        "mode": norm.mode,
        "shift": np.asarray(norm.shift).tolist(),
        "scale": np.asarray(norm.scale).tolist(),
    }


def from_meta(meta: dict[str, Any]) -> EmbeddingNorm:
    """The normalisation a checkpoint was trained with.

    Checkpoints written before `embedding_norm` was stored scaled by `data.text_scale` (as
    `checkpointing.read_meta` gives every checkpoint's meta).
    """
    stored = meta.get(META_KEY)
    if stored is None:
        return scaled(meta["config"]["data"]["text_scale"])
    check_mode(stored["mode"])
    return EmbeddingNorm(
        stored["mode"],
        np.asarray(stored["shift"], np.float32),
        np.asarray(stored["scale"], np.float32),
    )
