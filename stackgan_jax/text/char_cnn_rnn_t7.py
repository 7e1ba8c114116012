"""Reads Reed et al.'s released char-CNN-RNN encoder from a Torch7 `.t7` file.

The file is read by `untrusted.torch7` (NumPy only; no Lua, no torch). It holds a training snapshot
whose `protos.enc_doc` is the encoder, an nngraph `nn.gModule` built by `HybridCNNLong.lua`. Its
`modules` list is, in order: the input `nn.Identity`, the CNN `nn.Sequential`, `nn.SplitTable`,
the GRU (a nested `nn.gModule` from `FixedGRU.lua`), `nn.Dropout` and the final `nn.Linear`.

nngraph lists a gModule's modules in a post-order walk back from the output (each node's inputs
in call order). For FixedGRU's graph that gives, among the `nn.Sequential(nn.Linear)` wrappers,
`i2h` for step 1 and then, for every later step, `i2h_update, h2h_update, i2h, i2h_reset,
h2h_reset, h2h`. Steps share their weights, which is checked: a file whose modules came in any
other order would fail that check rather than be converted wrongly.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np
import torchfile

from stackgan_jax.text.char_cnn_rnn import (
    ALPHABET,
    CONV_LAYERS,
    GRU_STEPS,
    KERNEL_WIDTH,
    POOL_SIZE,
    THRESHOLD,
    flax_params_from_torch,
    save_params,
)
from stackgan_jax.untrusted import RefusedFileError
from stackgan_jax.untrusted.torch7 import (
    check_fields,
    children,
    load_t7,
    modules_of_type,
    single_module,
    typename,
)
from stackgan_jax.weights import Params

CNN_LAYOUT = (
    "nn.TemporalConvolution",
    "nn.Threshold",
    "nn.TemporalMaxPooling",
    "nn.TemporalConvolution",
    "nn.Threshold",
    "nn.TemporalMaxPooling",
    "nn.TemporalConvolution",
    "nn.Threshold",
)
# The linears of one GRU step after the first, in nngraph's module order.
GRU_STEP_LAYOUT = ("i2h_update", "h2h_update", "i2h", "i2h_reset", "h2h_reset", "h2h")


def document_encoder(checkpoint: object) -> torchfile.TorchObject:
    """The text encoder in a `.t7`: `protos.enc_doc` of a training snapshot, or the file itself.

    Raises:
      RefusedFileError: if that is not an `nn.gModule`.
    """
    if isinstance(checkpoint, dict) and b"protos" in checkpoint:
        checkpoint = checkpoint[b"protos"][b"enc_doc"]
    if typename(checkpoint) != "nn.gModule":
        raise RefusedFileError(f"expected an nn.gModule encoder, found {typename(checkpoint)}")
    return checkpoint


def cnn_weights(cnn: torchfile.TorchObject) -> dict[str, np.ndarray]:
    """Conv weights of the CNN `nn.Sequential`, after checking its layer table.

    Raises:
      RefusedFileError: for another layer sequence or other kernel, pool or threshold sizes
        (the flowers and cvpr2016 encoders, for example, pool once more before an 8-step RNN).
    """
    layout = tuple(typename(layer) for layer in children(cnn))
    if layout != CNN_LAYOUT:
        raise RefusedFileError(f"CNN layers are {layout}; the CUB hybrid encoder has {CNN_LAYOUT}")
    convs = modules_of_type(cnn, "nn.TemporalConvolution")
    check_fields(convs[0], inputFrameSize=len(ALPHABET))
    weights = {}
    for name, conv in zip(CONV_LAYERS, convs, strict=True):
        check_fields(conv, kW=KERNEL_WIDTH, dW=1)
        weights[f"{name}.weight"] = conv["weight"]
        weights[f"{name}.bias"] = conv["bias"]
    for pool in modules_of_type(cnn, "nn.TemporalMaxPooling"):
        check_fields(pool, kW=POOL_SIZE, dW=POOL_SIZE)
    for relu in modules_of_type(cnn, "nn.Threshold"):
        check_fields(relu, threshold=THRESHOLD, val=0)
    return weights


def same_linear(a: torchfile.TorchObject, b: torchfile.TorchObject) -> bool:
    """Whether two `nn.Linear` modules hold the same (shared) weights."""
    return np.array_equal(a["weight"], b["weight"]) and np.array_equal(a["bias"], b["bias"])


def gru_weights(gru: torchfile.TorchObject) -> dict[str, np.ndarray]:
    """The six distinct linears of the FixedGRU `nn.gModule`, by role.

    Raises:
      RefusedFileError: if the step count, the weight sharing or the averaging of hidden states
        differs from the reference.
    """
    linears = [children(wrapper)[0] for wrapper in modules_of_type(gru, "nn.Sequential")]
    if len(linears) != 1 + len(GRU_STEP_LAYOUT) * (GRU_STEPS - 1):
        raise RefusedFileError(
            f"GRU has {len(linears)} linear layers; an {GRU_STEPS}-step FixedGRU has"
            f" {1 + len(GRU_STEP_LAYOUT) * (GRU_STEPS - 1)}"
        )
    per_step = [
        dict(zip(GRU_STEP_LAYOUT, linears[start : start + len(GRU_STEP_LAYOUT)], strict=True))
        for start in range(1, len(linears), len(GRU_STEP_LAYOUT))
    ]
    roles = per_step[0]
    shared = same_linear(linears[0], roles["i2h"]) and all(
        same_linear(step[role], roles[role]) for step in per_step for role in GRU_STEP_LAYOUT
    )
    if not shared:
        raise RefusedFileError("GRU steps do not share weights in FixedGRU's module order")
    scales = [m["constant_scalar"] for m in modules_of_type(gru, "nn.MulConstant")]
    if not any(math.isclose(scale, 1 / GRU_STEPS) for scale in scales):
        raise RefusedFileError("GRU does not average its hidden states (FixedGRU avg = 0)")
    weights = {}
    for role, linear in roles.items():
        weights[f"gru.{role}.weight"] = linear["weight"]
        weights[f"gru.{role}.bias"] = linear["bias"]
    return weights


def projection_weights(encoder: torchfile.TorchObject) -> dict[str, np.ndarray]:
    """The final `nn.Linear`, with test-time dropout folded in.

    `nn.Dropout` is the identity at test time, except in its original form (`v2` false), which
    scales by 1 - p instead; that factor goes into the weight.
    """
    linear = single_module(encoder, "nn.Linear")
    weight = np.asarray(linear["weight"], np.float32)
    for dropout in modules_of_type(encoder, "nn.Dropout"):
        if not dropout["v2"]:
            weight = weight * np.float32(1 - dropout["p"])
    return {"projection.weight": weight, "projection.bias": linear["bias"]}


def read_char_cnn_rnn_t7(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """Reads the encoder weights from a Torch7 file, in Torch layout.

    Args:
      path: the `.t7` training snapshot (or a bare saved `nn.gModule`).

    Returns:
      The arrays `flax_params_from_torch` takes: conv1..3, gru.<layer> and projection weights.

    Raises:
      RefusedFileError: if the file is not a Torch7 file or holds a different architecture.
    """
    encoder = document_encoder(load_t7(path))
    return {
        **cnn_weights(single_module(encoder, "nn.Sequential")),
        **gru_weights(single_module(encoder, "nn.gModule")),
        **projection_weights(encoder),
    }


def convert(t7_path: str | pathlib.Path, npz_path: str | pathlib.Path) -> Params:
    """Converts a `.t7` encoder into the `.npz` that `load_char_cnn_rnn` reads.

    Args:
      t7_path: the released encoder.
      npz_path: where to write the Flax parameters.

    Returns:
      The parameters written.
    """
    params = flax_params_from_torch(read_char_cnn_rnn_t7(t7_path))
    save_params(npz_path, params)
    return params
