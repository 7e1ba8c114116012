"""The paper's TensorFlow checkpoints (`birds_model_164000.ckpt`, ...) → the `tf` architecture.

The reference (hanzhanggit/StackGAN, TF 0.12 + prettytensor) builds the Stage-I generator with
its Conditioning Augmentation in the variable scope `g_net` and the Stage-II generator with its
own in `hr_g_net` (`stageII/trainer.py`, `demo/demo.py`); a Stage-II checkpoint holds both, plus
the discriminators `d_net`/`hr_d_net` and Adam's slots, which are not read.

Variable names. Every prettytensor method call opens a name scope named after the method,
made unique within the enclosing scope by TF (`custom_conv2d`, `custom_conv2d_1`, ...), and a
variable scope of the same name. `custom_conv2d` and `conv_batch_norm` take a `name` argument,
which prettytensor fills with that unique name and which they open once more as a variable
scope; `custom_fully_connected` opens `Linear` instead, and `fc_batch_norm` calls
`conv_batch_norm` with its default name `batch_norm` (`misc/custom_ops.py`). So the k-th call
(counting from 0) of a method in a network's scope makes:

| method                   | variables (`m_k` = the method name, `_k` added for k ≥ 1) |
|--------------------------|------------------------------------------------------------|
| `custom_fully_connected` | `m_k/Linear/Matrix` [in, out], `m_k/Linear/bias`            |
| `custom_conv2d`          | `m_k/m_k/w` [kh, kw, in, out]                               |
| `conv_batch_norm`        | `m_k/m_k/{gamma,beta,mean,variance}`                        |
| `fc_batch_norm`          | `fc_batch_norm/batch_norm/{gamma,beta,mean,variance}`       |

They become Flax's `kernel`, `bias`, `kernel` and `scale`, `bias`, `mean`, `var`.
TF's layouts are Flax's (NHWC, HWIO, [in, out]), so nothing is transposed. The calls, in the
order `stageII/model.py` makes them (`generate_condition` first, then the generator):

* `g_net` (Stage-I): FC `ca/fc`, FC `fc`, `fc_bn`; conv+BN 0–2 `res4/conv1..3`; 3 `up8`;
  4–6 `res8/conv1..3`; 7 `up16`; 8 `up32`; conv 9 `to_image`.
* `hr_g_net` (Stage-II): FC `ca/fc`; conv 0 `encode1`; conv+BN 1/0 `encode2`, 2/1 `encode3`,
  3/2 `joint`; per residual block r (0-based) convs 4+2r, 5+2r and BNs 3+2r, 4+2r
  `res{r+1}/conv1,2`; then with R blocks, conv+BN 4+2R+i / 3+2R+i `up32`, `up64`, `up128`,
  `up256`; conv 8+2R `to_image` (the reference always has R = 4).

These names were derived from prettytensor 0.7.1's scoping code (identical in 0.7.4) and
checked by running it on a reconstruction of the reference's graph-building calls under TF 2's
`compat.v1`; they have not been checked against the released checkpoint files themselves.
"""

import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

import ml_collections
import numpy as np

from stackgan_jax import models
from stackgan_jax.pretrained.mapping import ConversionError, Entry, assemble

STAGE1_SCOPE = "g_net"
STAGE2_SCOPE = "hr_g_net"

_BATCH_NORM = (
    ("gamma", "params", "scale"),
    ("beta", "params", "bias"),
    ("mean", "batch_stats", "mean"),
    ("variance", "batch_stats", "var"),
)


def _conv_bn(path: str) -> list[tuple[str, str]]:
    return [("custom_conv2d", f"{path}/conv"), ("conv_batch_norm", f"{path}/bn")]


def stage1_generator_calls() -> list[tuple[str, str]]:
    """(prettytensor method, Flax module path) of `g_net`'s variable-making calls, in order."""
    calls = [
        ("custom_fully_connected", "ca/fc"),
        ("custom_fully_connected", "fc"),
        ("fc_batch_norm", "fc_bn"),
    ]
    calls += [c for i in (1, 2, 3) for c in _conv_bn(f"res4/conv{i}")] + _conv_bn("up8")
    calls += [c for i in (1, 2, 3) for c in _conv_bn(f"res8/conv{i}")]
    calls += _conv_bn("up16") + _conv_bn("up32")
    return calls + [("custom_conv2d", "to_image")]


def stage2_generator_calls(num_residual: int) -> list[tuple[str, str]]:
    """(prettytensor method, Flax module path) of `hr_g_net`'s variable-making calls, in order."""
    calls = [("custom_fully_connected", "ca/fc"), ("custom_conv2d", "encode1/conv")]
    calls += _conv_bn("encode2") + _conv_bn("encode3") + _conv_bn("joint")
    for r in range(num_residual):
        calls += _conv_bn(f"res{r + 1}/conv1") + _conv_bn(f"res{r + 1}/conv2")
    calls += [c for size in (32, 64, 128, 256) for c in _conv_bn(f"up{size}")]
    return calls + [("custom_conv2d", "to_image/conv")]


def entries(calls: list[tuple[str, str]], scope: str) -> list[Entry]:
    """The checkpoint variables that `calls` make in variable scope `scope`."""
    counts: dict[str, int] = {}
    result = []
    for method, path in calls:
        k = counts.get(method, 0)
        counts[method] = k + 1
        name = f"{scope}/{method}" + (f"_{k}" if k else "")
        if method == "custom_fully_connected":
            result += [
                Entry(f"{name}/Linear/Matrix", "params", f"{path}/kernel"),
                Entry(f"{name}/Linear/bias", "params", f"{path}/bias"),
            ]
        elif method == "custom_conv2d":
            result.append(Entry(f"{name}/{name.rsplit('/', 1)[1]}/w", "params", f"{path}/kernel"))
        else:
            inner = "batch_norm" if method == "fc_batch_norm" else name.rsplit("/", 1)[1]
            result += [
                Entry(f"{name}/{inner}/{tf_name}", collection, f"{path}/{leaf}")
                for tf_name, collection, leaf in _BATCH_NORM
            ]
    return result


class CheckpointTensors(Mapping[str, np.ndarray]):
    """A TF checkpoint's variables by name, read on access."""

    def __init__(self, reader: Any):
        self._reader = reader
        self._shapes = reader.get_variable_to_shape_map()

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._shapes:
            raise KeyError(name)
        return self._reader.get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._shapes)

    def __len__(self) -> int:
        return len(self._shapes)


def checkpoint_prefix(path: str | os.PathLike[str]) -> str:
    """The checkpoint a path names: TF 0.12's single `.ckpt` file, or a V2 `.index` + `.data-*`.

    Any of `X.ckpt`, `X.ckpt.index`, `X.ckpt.meta` or `X.ckpt.data-00000-of-00001` names `X.ckpt`.

    Raises:
        FileNotFoundError: neither `X.ckpt` nor `X.ckpt.index` exists.
    """
    prefix = re.sub(r"\.(index|meta|data-\d+-of-\d+)$", "", os.fspath(path))
    if not (os.path.isfile(prefix) or os.path.isfile(f"{prefix}.index")):
        raise FileNotFoundError(f"no TensorFlow checkpoint at {path} (nor {prefix}.index)")
    return prefix


def load_checkpoint(path: str | os.PathLike[str]) -> CheckpointTensors:
    """Opens a TensorFlow checkpoint for reading (TensorFlow is imported here, not before).

    Raises:
        FileNotFoundError: no checkpoint at `path`.
        ConversionError: the file is not a TensorFlow checkpoint.
    """
    import tensorflow as tf  # Only this converter needs TensorFlow, which is slow to import.

    prefix = checkpoint_prefix(path)
    try:
        return CheckpointTensors(tf.train.load_checkpoint(prefix))
    except (tf.errors.OpError, ValueError) as e:
        raise ConversionError(
            f"{path} is not a TensorFlow checkpoint ({e}); a StackGAN-Pytorch .pth needs a "
            "`pytorch` config (birds_pytorch, coco)."
        ) from e


def generator_variables(
    path: str | os.PathLike[str], config: ml_collections.ConfigDict
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Reads the reference's generator(s) from a TF checkpoint into the variables `config` builds.

    Args:
        path: the checkpoint, e.g. `models/birds_model_164000.ckpt`.
        config: a `tf`-architecture training config; for Stage-I only `g_net` is read (from a
            Stage-I or a Stage-II checkpoint), for Stage-II `hr_g_net` and `g_net`.

    Returns:
        (the stage's generator variables, the Stage-I generator's for Stage-II or None).

    Raises:
        FileNotFoundError: no checkpoint at `path`.
        ConversionError: not a TF checkpoint, or a variable is missing or has the wrong shape.
    """
    what = os.fspath(path)
    tensors = load_checkpoint(path)
    model = config.model
    stage1 = entries(stage1_generator_calls(), STAGE1_SCOPE)
    if config.stage == 1:
        return assemble(stage1, tensors, models.generator_shapes(model, 1), what), None
    if not any(name.startswith(f"{STAGE2_SCOPE}/") for name in tensors):
        raise ConversionError(
            f"{what} has no Stage-II generator ({STAGE2_SCOPE}/): convert it with a Stage-I "
            "config (configs/stage1.py:NAME)."
        )
    stage2 = entries(stage2_generator_calls(model.num_residual), STAGE2_SCOPE)
    return (
        assemble(stage2, tensors, models.generator_shapes(model, 2), what),
        assemble(stage1, tensors, models.generator_shapes(model, 1), what),
    )
