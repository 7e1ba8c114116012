r"""Reed et al.'s hybrid char-CNN-RNN text encoder (ICML 2016) in Flax.

This is the encoder behind the char-CNN-RNN embeddings that StackGAN was trained on (the CUB model
`lm_sje_nc4_cub_hybrid_gru18_a1_c512_...t7`, run by StackGAN's `demo/get_embedding.lua`). With the
released weights converted to `.npz` by `stackgan_jax.text.convert_t7`, a model trained on those
embeddings can be sampled from new sentences.

Character mapping, as in `reedscot/icml2016` `txt2img_demo.lua` and StackGAN `get_embedding.lua`:

* The alphabet string has 70 symbols::

      abcdefghijklmnopqrstuvwxyz0123456789-,;.!?:'"/\|_@#$%^&*~`+-=<>()[]{}<space>

  and the one-hot input has 70 columns, one per position in that string.
* '-' appears twice (positions 37 and 60, 1-based). The Lua lookup table is filled in alphabet
  order, so the second entry overwrites the first: '-' always sets column 60 (0-based 59), and
  column 37 (0-based 36) is never set. Only 69 columns carry information.
* The caption is read byte by byte (Lua's `string.sub`), for the first 201 bytes (the document
  length). A byte that is not in the alphabet leaves its time step all-zero. That covers upper-case
  letters (there is no lower-casing: "A small bird" loses its "A"), every byte of a multi-byte
  UTF-8 character, tabs and the like. Time steps after the caption's end are all-zero too.

Both departures that later ports made are options, off by default: `lowercase=True` lower-cases
the caption first, and `unknown_as_space=True` turns each character outside the alphabet into one
space (as martinduartemore/char_cnn_rnn_pytorch does).
"""

from __future__ import annotations

import functools
import pathlib
import warnings
from collections.abc import Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stackgan_jax.errors import BadFileError
from stackgan_jax.text.encoder import BucketedEncoder
from stackgan_jax.weights import MissingWeightsError, Params

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-,;.!?:'\"/\\|_@#$%^&*~`+-=<>()[]{} "
DOC_LENGTH = 201
NO_CHARACTER = -1  # a time step whose one-hot column is all-zero
KERNEL_WIDTH = 4
POOL_SIZE = 3
THRESHOLD = 1e-6  # Torch7 nn.Threshold() default: y = x if x > 1e-6 else 0
GRU_STEPS = 18  # time steps left by the convolutions: 201 -> 198 -> 66 -> 63 -> 21 -> 18
GRU_LAYERS = ("i2h", "i2h_update", "i2h_reset", "h2h", "h2h_update", "h2h_reset")
CONV_LAYERS = ("conv1", "conv2", "conv3")


def _byte_to_column() -> np.ndarray:
    """Lookup table byte -> one-hot column; a repeated symbol keeps its last position."""
    table = np.full(256, NO_CHARACTER, np.int32)
    for column, symbol in enumerate(ALPHABET):
        table[ord(symbol)] = column
    return table


BYTE_TO_COLUMN = _byte_to_column()


def char_columns(text: str, lowercase: bool = False, unknown_as_space: bool = False) -> np.ndarray:
    """The one-hot column of each of the caption's UTF-8 bytes, untruncated.

    Args:
      text: a caption.
      lowercase: lower-case it first (the reference does not).
      unknown_as_space: replace each character outside the alphabet by one space (the reference
        leaves a zero column per byte instead).

    Returns:
      int32[len(utf-8 bytes)], entries in [0, 70) or `NO_CHARACTER`.
    """
    if lowercase:
        text = text.lower()
    if unknown_as_space:
        text = "".join(char if char in ALPHABET else " " for char in text)
    return BYTE_TO_COLUMN[np.frombuffer(text.encode("utf-8"), np.uint8)]


def tokenize(
    texts: Sequence[str], lowercase: bool = False, unknown_as_space: bool = False
) -> list[np.ndarray]:
    """`char_columns` of each text, truncated to `DOC_LENGTH` bytes with a warning.

    Args:
      texts: captions.
      lowercase: see `char_columns`.
      unknown_as_space: see `char_columns`.

    Returns:
      One int32 array of at most `DOC_LENGTH` columns per text.
    """
    columns = [char_columns(text, lowercase, unknown_as_space) for text in texts]
    truncated = sum(len(c) > DOC_LENGTH for c in columns)
    if truncated:
        warnings.warn(
            f"{truncated} text(s) longer than {DOC_LENGTH} bytes were truncated", stacklevel=3
        )
    return [c[:DOC_LENGTH] for c in columns]


def threshold(x: jax.Array) -> jax.Array:
    """Torch7 `nn.Threshold()`: a ReLU that also zeroes values in (0, 1e-6]."""
    return jnp.where(x > THRESHOLD, x, 0.0)


class FixedGRU(nn.Module):
    """Reed's `FixedGRU` with `avg = 1`: a GRU over a fixed number of steps, hidden states averaged.

    | step   | update                                                       |
    |--------|--------------------------------------------------------------|
    | 1      | h = tanh(i2h(x))  (no gates, no previous state)              |
    | t > 1  | z = sigmoid(i2h_update(x) + h2h_update(h))                   |
    |        | r = sigmoid(i2h_reset(x) + h2h_reset(h))                     |
    |        | h = z * tanh(i2h(x) + h2h(r * h)) + (1 - z) * h              |
    | output | mean of h over all steps                                     |

    Attributes:
      features: hidden size (equal to the input size in the reference).
      precision: matmul precision.
    """

    features: int
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    def setup(self):
        """Creates the six linears, named as in FixedGRU.lua."""
        dense = functools.partial(nn.Dense, self.features, precision=self.precision)
        self.i2h, self.i2h_update, self.i2h_reset = dense(), dense(), dense()
        self.h2h, self.h2h_update, self.h2h_reset = dense(), dense(), dense()

    def step(self, hidden: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One step t > 1: the new hidden state, as both the carry and the output."""
        update = jax.nn.sigmoid(self.i2h_update(x) + self.h2h_update(hidden))
        reset = jax.nn.sigmoid(self.i2h_reset(x) + self.h2h_reset(hidden))
        candidate = jnp.tanh(self.i2h(x) + self.h2h(reset * hidden))
        hidden = update * candidate + (1.0 - update) * hidden
        return hidden, hidden

    def __call__(self, inputs: jax.Array) -> jax.Array:
        """Runs float32[B, steps, features] through the GRU; returns float32[B, features]."""
        first = jnp.tanh(self.i2h(inputs[:, 0]))
        # A scan compiles one step instead of an unrolled copy per step (a third of the time).
        steps = nn.scan(
            FixedGRU.step,
            variable_broadcast="params",
            split_rngs={"params": False},
            in_axes=1,
            out_axes=1,
        )
        _, later = steps(self, first, inputs[:, 1:])
        return (first + later.sum(axis=1)) / inputs.shape[1]


class CharCnnRnn(nn.Module):
    """Hybrid char-CNN-RNN (`reedscot/icml2016` `modules/HybridCNNLong.lua` + `FixedGRU.lua`).

    | layer      | Torch7 module (CUB encoder)                          | output [B, time, ch] |
    |------------|------------------------------------------------------|----------------------|
    | input      | one-hot characters                                   | 201 x 70             |
    | conv1      | TemporalConvolution(70, 384, 4), Threshold           | 198 x 384            |
    | pool       | TemporalMaxPooling(3, 3)                             | 66 x 384             |
    | conv2      | TemporalConvolution(384, 512, 4), Threshold          | 63 x 512             |
    | pool       | TemporalMaxPooling(3, 3)                             | 21 x 512             |
    | conv3      | TemporalConvolution(512, 512, 4), Threshold          | 18 x 512             |
    | gru        | FixedGRU over the 18 steps, hidden states averaged   | 512                  |
    | projection | Dropout (identity at test time), Linear(512, 1024)   | 1024                 |

    Attributes:
      conv_features: output channels of conv1, conv2, conv3 (conv3's is the GRU size).
      embedding_dim: size of the output embedding.
      precision: matmul precision; HIGHEST keeps float32 exact on accelerators too.
    """

    conv_features: tuple[int, int, int] = (384, 512, 512)
    embedding_dim: int = 1024
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, char_ids: jax.Array) -> jax.Array:
        """Embeds captions.

        Args:
          char_ids: int32[B, 201] one-hot column per time step, `NO_CHARACTER` for none.

        Returns:
          float32[B, embedding_dim].
        """
        conv1, conv2, conv3 = (
            nn.Conv(features, (KERNEL_WIDTH,), padding="VALID", precision=self.precision, name=name)
            for name, features in zip(CONV_LAYERS, self.conv_features, strict=True)
        )
        pool = functools.partial(nn.max_pool, window_shape=(POOL_SIZE,), strides=(POOL_SIZE,))
        # one_hot maps NO_CHARACTER (-1) to an all-zero row.
        x = jax.nn.one_hot(char_ids, len(ALPHABET), dtype=jnp.float32)
        x = pool(threshold(conv1(x)))
        x = pool(threshold(conv2(x)))
        x = threshold(conv3(x))
        x = FixedGRU(self.conv_features[-1], self.precision, name="gru")(x)
        return nn.Dense(self.embedding_dim, precision=self.precision, name="projection")(x)


def flax_params_from_torch(torch_weights: dict[str, np.ndarray]) -> Params:
    """Converts Torch7-layout weights into the `CharCnnRnn` parameter tree.

    Args:
      torch_weights: `{conv}.weight` [out, kW * in] (the kW input frames concatenated) and
        `{conv}.bias` for conv1..conv3; `gru.{layer}.weight` [out, in] and `.bias` for the six GRU
        linears; `projection.weight` [out, in] and `projection.bias`.

    Returns:
      `{'params': ...}` for `CharCnnRnn.apply`, all float32.
    """

    def linear(prefix: str) -> dict[str, np.ndarray]:
        return {
            "kernel": np.asarray(torch_weights[f"{prefix}.weight"], np.float32).T,
            "bias": np.asarray(torch_weights[f"{prefix}.bias"], np.float32),
        }

    def temporal_conv(prefix: str) -> dict[str, np.ndarray]:
        weight = np.asarray(torch_weights[f"{prefix}.weight"], np.float32)
        out_features = weight.shape[0]
        frames = weight.reshape(out_features, KERNEL_WIDTH, weight.shape[1] // KERNEL_WIDTH)
        return {
            "kernel": frames.transpose(1, 2, 0),
            "bias": np.asarray(torch_weights[f"{prefix}.bias"], np.float32),
        }

    params = {name: temporal_conv(name) for name in CONV_LAYERS}
    params["gru"] = {name: linear(f"gru.{name}") for name in GRU_LAYERS}
    params["projection"] = linear("projection")
    return {"params": params}


def model_for_params(params: Params) -> CharCnnRnn:
    """The `CharCnnRnn` whose layer sizes match `params`."""
    tree = params["params"]
    return CharCnnRnn(
        conv_features=tuple(tree[name]["bias"].shape[0] for name in CONV_LAYERS),
        embedding_dim=tree["projection"]["bias"].shape[0],
    )


def save_params(path: str | pathlib.Path, params: Params) -> None:
    """Writes `params` to an `.npz` whose keys are the '/'-joined parameter paths.

    Args:
      path: the output file.
      params: `{'params': ...}` of a `CharCnnRnn`.
    """
    np.savez(path, **flax.traverse_util.flatten_dict(params["params"], sep="/"))


def load_params(path: str | pathlib.Path) -> Params:
    """Reads parameters written by `save_params`.

    Args:
      path: the `.npz` file.

    Returns:
      `{'params': ...}` for `CharCnnRnn.apply`.
    """
    with np.load(path) as arrays:
        flat = {key: arrays[key] for key in arrays.files}
    return {"params": flax.traverse_util.unflatten_dict(flat, sep="/")}


def load_char_cnn_rnn(
    weights: str | None = None,
    *,
    lowercase: bool = False,
    unknown_as_space: bool = False,
    max_batch: int = 256,
) -> BucketedEncoder:
    """Builds the char-CNN-RNN encoder.

    Args:
      weights: an `.npz` made by `stackgan_jax.text.convert_t7` from the released `.t7`.
      lowercase: lower-case captions first (off in the reference).
      unknown_as_space: turn characters outside the alphabet into spaces (off in the reference).
      max_batch: most captions per compiled forward call.

    Returns:
      An encoder with `dim` 1024 (for the released weights).

    Raises:
      MissingWeightsError: if `weights` is None or does not exist.
      ValueError: if `weights` is the unconverted `.t7`.
    """
    how_to_get = (
        "Download Reed et al.'s encoder (CUB: lm_sje_nc4_cub_hybrid_gru18_a1_c512_0.00070_1_10_"
        "trainvalids.txt_iter30000.t7, linked from the StackGAN and reedscot/icml2016 READMEs)"
        " and convert it with `python -m stackgan_jax.text.convert_t7 --input=<file>.t7"
        " --output=<file>.npz`, then pass the .npz as the weights."
    )
    if weights is None:
        raise MissingWeightsError(f"char_cnn_rnn needs a weights file. {how_to_get}")
    path = pathlib.Path(weights)
    if not path.is_file():
        raise MissingWeightsError(f"char_cnn_rnn weights not found: {path}. {how_to_get}")
    if path.suffix == ".t7":
        raise BadFileError(f"{path} is a Torch7 file; convert it first. {how_to_get}")
    params = load_params(path)
    model = model_for_params(params)
    return BucketedEncoder(
        name="char_cnn_rnn",
        dim=model.embedding_dim,
        tokenize=functools.partial(
            tokenize, lowercase=lowercase, unknown_as_space=unknown_as_space
        ),
        forward=model.apply,
        params=params,
        length_buckets=(DOC_LENGTH,),
        max_batch=max_batch,
        pad_id=NO_CHARACTER,
    )
