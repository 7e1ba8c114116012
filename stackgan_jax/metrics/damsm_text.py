"""AttnGAN's DAMSM text encoder (`RNN_ENCODER`) in Flax, and its released weights, torch-free.

The reference is `RNN_ENCODER` in code/model.py of taoxugit/AttnGAN (lines 75-159; the same
class in MinfengZhu/DM-GAN code/model.py lines 74-155), built as the evaluation configs build it,
`RNN_ENCODER(n_words, nhidden=cfg.TEXT.EMBEDDING_DIM)` with `RNN_TYPE = 'LSTM'`:

* `encoder = nn.Embedding(n_words, 300)`, then `nn.Dropout(0.5)`, off in `eval()` mode;
* `rnn = nn.LSTM(300, 256 // 2, 1, batch_first=True, bidirectional=True)` over the embeddings
  packed with `pack_padded_sequence(emb, cap_lens)`;
* `words_emb`: the padded outputs of both directions ([forward, backward], zero past each
  caption's length); `sent_emb`: the final hidden states `hidden[0]` of the forward and the
  backward direction, concatenated in that order.

Packing means that each caption is its own sequence of `cap_lens[i]` steps: the forward direction
stops at the caption's last word and the backward direction starts there, never reading padding.
The reference sorts each batch by decreasing length only because `pack_padded_sequence` required
it; captions do not interact, so no sorting is needed here.

The weights are `torch.save(text_encoder.state_dict())` files of AttnGAN's DAMSM release
(`DAMSMencoders/bird/text_encoder200.pth`, `DAMSMencoders/coco/text_encoder100.pth`), read by
`untrusted.torch_pickle`. torch.nn.LSTM stores per direction (suffix `_reverse` for the backward
one) `weight_ih_l0` [4H, in], `weight_hh_l0` [4H, H], `bias_ih_l0` and `bias_hh_l0` [4H], with the
four gates stacked in the order input, forget, cell (g), output.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stackgan_jax.untrusted import torch_pickle
from stackgan_jax.untrusted.errors import RefusedFileError
from stackgan_jax.weights import Params

_HIGHEST = jax.lax.Precision.HIGHEST


def _lstm_step(kernel_hh, bias_hh, carry, inputs):
    """One torch.nn.LSTM step for the rows whose caption is still running; others keep state."""
    h, c = carry
    input_gates, running = inputs
    gates = input_gates + jnp.dot(h, kernel_hh, precision=_HIGHEST) + bias_hh
    i, f, g, o = jnp.split(gates, 4, axis=-1)  # torch's gate order
    c_new = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
    running = running[:, None]
    carry = (jnp.where(running, h_new, h), jnp.where(running, c_new, c))
    return carry, jnp.where(running, h_new, 0.0)


def _reverse_within_lengths(x: jax.Array, lengths: jax.Array) -> jax.Array:
    """Each row's first `length` steps in reverse order, the padding left in place.

    Applied twice it is the identity, so it also puts the backward outputs back in word order.
    """
    steps = jnp.arange(x.shape[1])[None, :]
    index = jnp.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)
    return jnp.take_along_axis(x, index[:, :, None], axis=1)


class TorchLSTMDirection(nn.Module):
    """One direction of a one-layer torch.nn.LSTM over packed (variable-length) sequences.

    Attributes:
        features: the hidden size H.
        reverse: run from each sequence's last step to its first (the `_reverse` direction).
    """

    features: int
    reverse: bool = False

    @nn.compact
    def __call__(self, inputs: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Runs the direction.

        Args:
            inputs: float32 [B, T, in].
            lengths: int [B], each sequence's length (1..T).

        Returns:
            (outputs float32 [B, T, H], zero past each length; final hidden state [B, H]).
        """
        gates = 4 * self.features
        init = nn.initializers.lecun_normal()
        # torch's weights transposed: gates = x @ kernel_ih + bias_ih + h @ kernel_hh + bias_hh.
        kernel_ih = self.param("kernel_ih", init, (inputs.shape[-1], gates))
        kernel_hh = self.param("kernel_hh", init, (self.features, gates))
        bias_ih = self.param("bias_ih", nn.initializers.zeros, (gates,))
        bias_hh = self.param("bias_hh", nn.initializers.zeros, (gates,))
        if self.reverse:
            inputs = _reverse_within_lengths(inputs, lengths)
        input_gates = jnp.dot(inputs, kernel_ih, precision=_HIGHEST) + bias_ih
        running = jnp.arange(inputs.shape[1])[:, None] < lengths[None, :]  # [T, B]
        zeros = jnp.zeros((inputs.shape[0], self.features), input_gates.dtype)
        (h, _), outputs = jax.lax.scan(
            lambda carry, x: _lstm_step(kernel_hh, bias_hh, carry, x),
            (zeros, zeros),
            (jnp.swapaxes(input_gates, 0, 1), running),
        )
        outputs = jnp.swapaxes(outputs, 0, 1)
        if self.reverse:
            outputs = _reverse_within_lengths(outputs, lengths)
        return outputs, h


class DamsmTextEncoder(nn.Module):
    """AttnGAN's `RNN_ENCODER` in evaluation mode (no dropout).

    Attributes:
        num_words: the vocabulary size `n_words` (`CaptionsFile.num_words`).
        embedding_dim: word embedding size (300).
        hidden: sentence embedding size, split between the two directions (256).
    """

    num_words: int
    embedding_dim: int = 300
    hidden: int = 256

    @nn.compact
    def __call__(self, indices: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Word and sentence embeddings of padded captions.

        Args:
            indices: int [B, T] word indices, padded with 0 (`damsm_captions.pad_caption`).
            lengths: int [B], each caption's number of words (1..T).

        Returns:
            (words float32 [B, T, hidden], zero past each length; sentences float32 [B, hidden]).
            The reference's `words_emb` is `words.transpose(0, 2, 1)` cut to the batch's longest
            caption.
        """
        embedded = nn.Embed(self.num_words, self.embedding_dim, name="embedding")(indices)
        half = self.hidden // 2
        forward, h_forward = TorchLSTMDirection(half, name="forward")(embedded, lengths)
        backward, h_backward = TorchLSTMDirection(half, reverse=True, name="backward")(
            embedded, lengths
        )
        words = jnp.concatenate([forward, backward], axis=-1)
        return words, jnp.concatenate([h_forward, h_backward], axis=-1)


@dataclasses.dataclass(frozen=True)
class LoadedTextEncoder:
    """A DAMSM text encoder with its weights.

    Attributes:
        module: the network.
        params: `{'params': ...}` for `module.apply`.
        path: the weights file.
    """

    module: DamsmTextEncoder
    params: Params
    path: str

    def encode(self, indices: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`module.apply` jitted: (word [B, T, D], sentence [B, D]) embeddings as NumPy."""
        words, sentences = _apply(self.module, self.params, indices, lengths)
        return np.asarray(words), np.asarray(sentences)


@functools.partial(jax.jit, static_argnums=0)
def _apply(module: DamsmTextEncoder, params: Params, indices, lengths):
    return module.apply(params, jnp.asarray(indices), jnp.asarray(lengths))


def _direction_params(state: dict[str, np.ndarray], suffix: str) -> dict[str, np.ndarray]:
    return {
        "kernel_ih": state[f"rnn.weight_ih_l0{suffix}"].T,
        "kernel_hh": state[f"rnn.weight_hh_l0{suffix}"].T,
        "bias_ih": state[f"rnn.bias_ih_l0{suffix}"],
        "bias_hh": state[f"rnn.bias_hh_l0{suffix}"],
    }


def text_encoder_from_state_dict(
    state: dict[str, np.ndarray], source: str
) -> tuple[DamsmTextEncoder, Params]:
    """The network and its parameters from an `RNN_ENCODER` state dict.

    Args:
        state: {torch name: array}, as `torch_pickle.load_state_dict` reads it.
        source: the file's name, for error messages.

    Returns:
        (module, {'params': ...}), sizes taken from the weights.

    Raises:
        RefusedFileError: the names or shapes are not those of a one-layer bidirectional LSTM
            `RNN_ENCODER`; the message names the file.
    """
    lstm = [
        f"rnn.{kind}_{part}_l0{suffix}"
        for suffix in ("", "_reverse")
        for kind in ("weight", "bias")
        for part in ("ih", "hh")
    ]
    if set(state) != {"encoder.weight", *lstm}:
        raise RefusedFileError(
            f"{source} is not an AttnGAN RNN_ENCODER state dict (encoder.weight and a one-layer"
            f" bidirectional rnn.*): it holds {sorted(state)}"
        )
    num_words, embedding_dim = state["encoder.weight"].shape
    half = state["rnn.weight_hh_l0"].shape[-1]
    want = {"encoder.weight": (num_words, embedding_dim)}
    for suffix in ("", "_reverse"):
        want |= {
            f"rnn.weight_ih_l0{suffix}": (4 * half, embedding_dim),
            f"rnn.weight_hh_l0{suffix}": (4 * half, half),
            f"rnn.bias_ih_l0{suffix}": (4 * half,),
            f"rnn.bias_hh_l0{suffix}": (4 * half,),
        }
    for name, shape in want.items():
        if state[name].shape != shape or state[name].dtype != np.float32:
            raise RefusedFileError(
                f"{source}: {name} is {state[name].dtype}{list(state[name].shape)}, an"
                f" RNN_ENCODER needs float32{list(shape)}"
            )
    module = DamsmTextEncoder(num_words, embedding_dim, 2 * half)
    params = {
        "embedding": {"embedding": state["encoder.weight"]},
        "forward": _direction_params(state, ""),
        "backward": _direction_params(state, "_reverse"),
    }
    return module, {"params": jax.tree.map(jnp.asarray, params)}


def load_text_encoder(path: str | os.PathLike[str]) -> LoadedTextEncoder:
    """Reads a DAMSM `text_encoder*.pth` without torch and without running anything from it.

    Args:
        path: e.g. AttnGAN's `DAMSMencoders/bird/text_encoder200.pth`.

    Returns:
        The encoder with its weights.

    Raises:
        FileNotFoundError: no file there.
        RefusedFileError: not a state dict, or not an `RNN_ENCODER`'s.
    """
    path = os.fspath(path)
    module, params = text_encoder_from_state_dict(torch_pickle.load_state_dict(path), path)
    return LoadedTextEncoder(module, params, path)
