"""StackGAN's Inception Score network: the fine-tuned TF-slim Inception-v3, in Flax.

StackGAN scores CUB and Oxford-102 images with an Inception-v3 fine-tuned on each dataset's test
classes (`hanzhanggit/StackGAN-inception-model`, `inception_score.py`): birds 50 classes, flowers
20, each with an unused background class at logit 0. Those models are TF checkpoints of the
`inception` package's slim (`inception/slim/inception_model.py` in tensorflow/models, the API
`inception_score.py` builds its graph with), whose variables are named `conv0/weights`,
`mixed_35x35x256a/branch5x5/Conv_1/BatchNorm/moving_mean`, ..., `logits/logits/weights`. That is
the naming this loader reads; the later TF-slim `nets/inception_v3.py` (`InceptionV3/Conv2d_1a_3x3`,
`Logits/Conv2d_1c_1x1`) builds the same layers under other names, with a 1x1-convolution head.

The network is the FID graph of `inception_net` with an average pool in its last block and a
classifier: every convolution is followed by a batch norm without a scale (slim's default
`scale=False`, epsilon 0.001) and a ReLU, and `logits` is a fully connected layer with a bias on
the 2048 pooled features. Only inference is implemented (batch norm reads the moving statistics).

The checkpoint is the user's: the zip linked as "StackGAN inception model for birds and flowers
evaluation" in StackGAN-inception-model's README; nothing is downloaded. `load_slim_inception`
reads it with `tf.train.load_checkpoint`, preferring each variable's `ExponentialMovingAverage`
shadow, as `inception_score.py` restores `variables_to_restore()` of a moving average.

Input convention (`preprocess`, that of `inception_score.py` on the PNGs `sample.py` writes):
float images in [-1, 1] become 8-bit pixels as those files hold them (`visualize.to_uint8`);
pixels are resized to 299x299 as `scipy.misc.imresize(..., interp='bilinear')` does (PIL's
bilinear filter, antialiased when shrinking, in two 8-bit passes, width first) and scaled by
`x / 127.5 - 1`.

    params = load_slim_inception("inception_finetuned_models/birds_valid299/model.ckpt-5000")
    probabilities = class_probabilities(params, images)  # [N, 50], background dropped
    mean, std = inception_score.inception_score(probabilities, seed=0)
"""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stackgan_jax import visualize
from stackgan_jax.errors import BadFileError
from stackgan_jax.metrics import inception_score
from stackgan_jax.metrics.batching import map_batches
from stackgan_jax.metrics.inception_net import (
    AVG_POOL_3X3,
    FEATURE_DIM,
    INPUT_SIZE,
    InceptionA,
    InceptionB,
    InceptionC,
    InceptionD,
    InceptionE,
    LayerNames,
    Pool,
    check_input_shape,
    inception_v3_layers,
)
from stackgan_jax.weights import MissingWeightsError, Params

DEFAULT_BATCH_SIZE = 64  # inception_score.py's batch
MOVING_AVERAGE_SUFFIX = "ExponentialMovingAverage"
CHECKPOINT_HELP = (
    "StackGAN's fine-tuned Inception-v3 is a TF-slim checkpoint: the zip linked as 'StackGAN"
    " inception model for birds and flowers evaluation' in the README of"
    " github.com/hanzhanggit/StackGAN-inception-model (Google Drive), which holds"
    " inception_finetuned_models/birds_valid299/model.ckpt-5000 for CUB (50 + 1 classes) and the"
    " Oxford-102 model (20 + 1 classes). Unzip it and pass the checkpoint path (the prefix that"
    " .index/.data files extend, a single V1 file, or its folder)."
)


class SlimInceptionV3(nn.Module):
    """Inception-v3 of the `inception` package's slim, up to the logits (inference).

    Module names are slim's variable scopes, so the stem and the blocks load one to one; inside
    the blocks `SLIM_BRANCHES` maps the FID blocks' tower names onto slim's branches.

    | scope             | operation                                         | output            |
    |-------------------|---------------------------------------------------|-------------------|
    | conv0             | 3x3/2, 32                                         | [N, 149, 149, 32] |
    | conv1, conv2      | 3x3, 32; 3x3 SAME, 64                             | [N, 147, 147, 64] |
    | pool1             | max 3x3/2                                         | [N, 73, 73, 64]   |
    | conv3, conv4      | 1x1, 80; 3x3, 192                                 | [N, 71, 71, 192]  |
    | pool2             | max 3x3/2                                         | [N, 35, 35, 192]  |
    | mixed_35x35x256a, | `InceptionA`, pool branch 32, 64, 64              | [N, 35, 35, 288]  |
    |  _288a, _288b     |                                                   |                   |
    | mixed_17x17x768a  | `InceptionB`                                      | [N, 17, 17, 768]  |
    | mixed_17x17x768b-e| `InceptionC`, 7x7 width 128, 160, 160, 192        | [N, 17, 17, 768]  |
    | mixed_17x17x1280a | `InceptionD`                                      | [N, 8, 8, 1280]   |
    | mixed_8x8x2048a, b| `InceptionE`, average pool branch (both)          | [N, 8, 8, 2048]   |
    | pool              | average 8x8                                       | [N, 2048]         |
    | logits            | fully connected with bias                         | [N, num_classes]  |

    Attributes:
      num_classes: logits, the background class included (51 for birds, 21 for flowers).
      precision: convolution and matmul precision; HIGHEST keeps float32 exact on accelerators.
    """

    num_classes: int
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits of a preprocessed batch.

        Args:
          x: float32[N, 299, 299, 3] in [-1, 1] (see `preprocess`).

        Returns:
          float32[N, num_classes] logits; index 0 is the background class.
        """
        check_input_shape(x)
        # The FID network's layers under slim's scopes; both last blocks pool by average.
        _, x = inception_v3_layers(
            x, self.precision, last_pools=(AVG_POOL_3X3, AVG_POOL_3X3), names=SLIM_NAMES
        )
        x = Pool("avg", 8, 8, name="pool")(x).reshape(-1, FEATURE_DIM)
        return nn.Dense(self.num_classes, precision=self.precision, name="logits")(x)


# ------------------------------------------------------------------------------------------------
# The name map: our parameters -> the checkpoint's variables.

_STEM = ("conv0", "conv1", "conv2", "conv3", "conv4")
_BLOCKS_35X35 = ("mixed_35x35x256a", "mixed_35x35x288a", "mixed_35x35x288b")
_BLOCKS_17X17 = ("mixed_17x17x768b", "mixed_17x17x768c", "mixed_17x17x768d", "mixed_17x17x768e")
_BLOCKS_8X8 = ("mixed_8x8x2048a", "mixed_8x8x2048b")
# Slim's scope keeps an older, wrong size in its name: the block outputs 8x8x1280.
_BLOCK_D = "mixed_17x17x1280a"
SLIM_NAMES = LayerNames(
    stem=_STEM,
    pools=("pool1", "pool2"),
    blocks=(*_BLOCKS_35X35, "mixed_17x17x768a", *_BLOCKS_17X17, _BLOCK_D, *_BLOCKS_8X8),
)

# Per block kind: (our `ConvBN` path in the block, slim's scope in the block), in the order slim
# creates the convolutions. Slim names a branch's unnamed convolutions Conv, Conv_1, ...
SLIM_BRANCHES = {
    InceptionA: (
        ("conv", "branch1x1/Conv"),
        ("tower/conv", "branch5x5/Conv"),
        ("tower/conv_1", "branch5x5/Conv_1"),
        ("tower_1/conv", "branch3x3dbl/Conv"),
        ("tower_1/conv_1", "branch3x3dbl/Conv_1"),
        ("tower_1/conv_2", "branch3x3dbl/Conv_2"),
        ("tower_2/conv", "branch_pool/Conv"),
    ),
    InceptionB: (
        ("conv", "branch3x3/Conv"),
        ("tower/conv", "branch3x3dbl/Conv"),
        ("tower/conv_1", "branch3x3dbl/Conv_1"),
        ("tower/conv_2", "branch3x3dbl/Conv_2"),
    ),
    InceptionC: (
        ("conv", "branch1x1/Conv"),
        ("tower/conv", "branch7x7/Conv"),
        ("tower/conv_1", "branch7x7/Conv_1"),
        ("tower/conv_2", "branch7x7/Conv_2"),
        ("tower_1/conv", "branch7x7dbl/Conv"),
        ("tower_1/conv_1", "branch7x7dbl/Conv_1"),
        ("tower_1/conv_2", "branch7x7dbl/Conv_2"),
        ("tower_1/conv_3", "branch7x7dbl/Conv_3"),
        ("tower_1/conv_4", "branch7x7dbl/Conv_4"),
        ("tower_2/conv", "branch_pool/Conv"),
    ),
    InceptionD: (
        ("tower/conv", "branch3x3/Conv"),
        ("tower/conv_1", "branch3x3/Conv_1"),
        ("tower_1/conv", "branch7x7x3/Conv"),
        ("tower_1/conv_1", "branch7x7x3/Conv_1"),
        ("tower_1/conv_2", "branch7x7x3/Conv_2"),
        ("tower_1/conv_3", "branch7x7x3/Conv_3"),
    ),
    InceptionE: (
        ("conv", "branch1x1/Conv"),
        ("tower_conv", "branch3x3/Conv"),
        ("tower_mixed_conv", "branch3x3/Conv_1"),  # 1x3
        ("tower_mixed_conv_1", "branch3x3/Conv_2"),  # 3x1
        ("tower_1_conv", "branch3x3dbl/Conv"),
        ("tower_1_conv_1", "branch3x3dbl/Conv_1"),
        ("tower_1_mixed_conv", "branch3x3dbl/Conv_2"),  # 1x3
        ("tower_1_mixed_conv_1", "branch3x3dbl/Conv_3"),  # 3x1
        ("tower_2_conv", "branch_pool/Conv"),
    ),
}
_BLOCK_KINDS = (
    *((name, InceptionA) for name in _BLOCKS_35X35),
    ("mixed_17x17x768a", InceptionB),
    *((name, InceptionC) for name in _BLOCKS_17X17),
    (_BLOCK_D, InceptionD),
    *((name, InceptionE) for name in _BLOCKS_8X8),
)
# A `ConvBN`'s parameters and the variables of a slim conv2d with batch norm (no gamma).
CONV_VARIABLES = {
    "kernel": "weights",
    "beta": "BatchNorm/beta",
    "mean": "BatchNorm/moving_mean",
    "var": "BatchNorm/moving_variance",
}
LOGITS_VARIABLES = {"kernel": "logits/logits/weights", "bias": "logits/logits/biases"}
_MISSING_SHOWN = 8  # missing variables an error names


def conv_scopes() -> list[tuple[str, str]]:
    """Every convolution as (our module path, slim scope), in the order slim creates them.

    Keras's `InceptionV3` creates its `conv2d_bn` layers in the same order.
    """
    scopes = [(name, name) for name in _STEM]
    for block, kind in _BLOCK_KINDS:
        scopes += [(f"{block}/{ours}", f"{block}/{theirs}") for ours, theirs in SLIM_BRANCHES[kind]]
    return scopes


def variable_names() -> dict[str, str]:
    """Our parameter paths ('mixed_8x8x2048a/tower_conv/mean') -> slim variable names."""
    names = {
        f"{ours}/{leaf}": f"{theirs}/{variable}"
        for ours, theirs in conv_scopes()
        for leaf, variable in CONV_VARIABLES.items()
    }
    names |= {f"logits/{leaf}": variable for leaf, variable in LOGITS_VARIABLES.items()}
    return names


@functools.cache
def parameter_shapes(num_classes: int) -> dict[str, tuple[int, ...]]:
    """Our parameter paths -> shapes, read off `SlimInceptionV3(num_classes)` in one trace."""
    shapes = jax.eval_shape(
        SlimInceptionV3(num_classes).init,
        jax.random.key(0),
        jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32),
    )
    shapes = flax.traverse_util.flatten_dict(shapes["params"], sep="/")
    return {path: leaf.shape for path, leaf in shapes.items()}


def params_from_slim_variables(
    variables: Mapping[str, np.ndarray], source: str, num_classes: int | None = None
) -> Params:
    """Maps slim variables onto `SlimInceptionV3`'s parameters through `variable_names`.

    Args:
      variables: slim variable name -> array, for (at least) every name `variable_names` lists.
      source: where they come from, for error messages.
      num_classes: the logits expected, background included; None takes the checkpoint's
        (the last axis of `logits/logits/weights`).

    Returns:
      `{'params': ...}` of NumPy float32 arrays, for `SlimInceptionV3(num_classes)`.

    Raises:
      ValueError: naming every variable that is missing or whose shape is not the network's.
    """
    names = variable_names()
    missing = [theirs for theirs in names.values() if theirs not in variables]
    if missing:
        shown = ", ".join(missing[:_MISSING_SHOWN])
        more = f" and {len(missing) - _MISSING_SHOWN} more" if len(missing) > _MISSING_SHOWN else ""
        raise BadFileError(
            f"{source} lacks {len(missing)} of the {len(names)} variables of the `inception`"
            f" package's slim Inception-v3: {shown}{more}. (TF-slim's later nets/inception_v3"
            " names the same variables InceptionV3/Conv2d_1a_3x3/..., which this loader does"
            " not read.)"
        )
    if num_classes is None:
        num_classes = np.shape(variables[LOGITS_VARIABLES["kernel"]])[-1]
    expected = parameter_shapes(num_classes)
    problems = [
        f"{theirs} has shape {np.shape(variables[theirs])}, the network needs {expected[ours]}"
        for ours, theirs in names.items()
        if np.shape(variables[theirs]) != expected[ours]
    ]
    if problems:
        raise BadFileError(
            f"{source} does not fit a slim Inception-v3 with {num_classes} logits: "
            + "; ".join(problems)
        )
    params = {ours: np.asarray(variables[theirs], np.float32) for ours, theirs in names.items()}
    return {"params": flax.traverse_util.unflatten_dict(params, sep="/")}


def resolve_checkpoint(path: str | pathlib.Path | None) -> str:
    """Checks that a TF checkpoint is where `path` says.

    Args:
      path: a checkpoint prefix (`model.ckpt-5000`, whose `.index` and `.data-*` files hold a V2
        checkpoint), a V1 checkpoint file, or a folder with a `checkpoint` state file.

    Returns:
      `path`, as a string for `tf.train.load_checkpoint`.

    Raises:
      MissingWeightsError: if there is no such checkpoint (or no path), saying what to place
        where. Nothing is downloaded.
    """
    if path is None:
        raise MissingWeightsError(
            "No Inception Score checkpoint given (evaluate --inception_checkpoint, or "
            f"config.eval.inception_checkpoint during training). {CHECKPOINT_HELP}"
        )
    path = pathlib.Path(path)
    if not (path.is_dir() or path.is_file() or path.with_name(f"{path.name}.index").is_file()):
        raise MissingWeightsError(
            f"Inception Score checkpoint not found: neither {path} nor {path}.index exists."
            f" {CHECKPOINT_HELP}"
        )
    return str(path)


def load_slim_inception(path: str | pathlib.Path, num_classes: int | None = None) -> Params:
    """Loads a TF-slim Inception-v3 checkpoint (StackGAN's fine-tuned models) for inference.

    Each variable is read from its moving-average shadow `<name>/ExponentialMovingAverage` when
    the checkpoint has one (the weights `inception_score.py` restores), else from `<name>`.

    Args:
      path: see `resolve_checkpoint`.
      num_classes: the logits expected, background included (51 for birds, 21 for flowers); None
        takes the checkpoint's.

    Returns:
      `{'params': ...}` for `SlimInceptionV3`, on the default device.

    Raises:
      MissingWeightsError: if the checkpoint is not there.
      ValueError: naming every missing or misshapen variable.
    """
    path = resolve_checkpoint(path)
    import tensorflow as tf  # Only this reader needs TensorFlow, which is slow to import.

    reader = tf.train.load_checkpoint(path)
    stored = reader.get_variable_to_shape_map()
    variables = {}
    for name in variable_names().values():
        shadow = f"{name}/{MOVING_AVERAGE_SUFFIX}"
        if shadow in stored or name in stored:
            variables[name] = reader.get_tensor(shadow if shadow in stored else name)
    return jax.device_put(params_from_slim_variables(variables, path, num_classes))


# ------------------------------------------------------------------------------------------------
# Preprocessing and class probabilities.


def num_classes_of(params: Params) -> int:
    """The logits of a `SlimInceptionV3`'s parameters, background included."""
    return params["params"]["logits"]["bias"].shape[0]


def preprocess(images: np.ndarray | jax.Array) -> jax.Array:
    """Images as `inception_score.py` feeds them to the network.

    Args:
      images: [N, H, W, 3]: uint8 pixels, or floats in the generator range [-1, 1], which become
        the pixels of the PNG files `sample.py` writes (`visualize.to_uint8`: clipped, rounded).

    Returns:
      float32[N, 299, 299, 3] in [-1, 1]: the pixels resized by `_imresize_bilinear`, then
      `x / 127.5 - 1`.

    Raises:
      ValueError: for arrays that are not [N, H, W, 3].
      TypeError: for integer images other than uint8.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected [N, H, W, 3] images, got shape {images.shape}")
    if np.issubdtype(images.dtype, np.floating):
        images = visualize.to_uint8(images)
    elif images.dtype != np.uint8:
        raise TypeError(f"expected uint8 or float images, got {images.dtype}")
    return _imresize_bilinear(images) / 127.5 - 1.0


@jax.jit
def _imresize_bilinear(pixels: jax.Array) -> jax.Array:
    """`scipy.misc.imresize(image, (299, 299), interp='bilinear')` on a uint8 batch.

    That is PIL's `Image.resize(..., BILINEAR)`: a triangle filter at half-pixel centres,
    widened by the scale factor when shrinking (`antialias=True` here), applied to the width and
    then the height with the result rounded to 8 bits after each pass. PIL's fixed-point weights
    still round a few ties the other way: within one grey level of PIL.

    Returns:
      float32[N, 299, 299, 3] pixel values (whole numbers in [0, 255]).
    """
    x = pixels.astype(jnp.float32)
    n, height, _, channels = x.shape
    for shape in ((n, height, INPUT_SIZE, channels), (n, INPUT_SIZE, INPUT_SIZE, channels)):
        x = jnp.clip(jnp.round(jax.image.resize(x, shape, "bilinear", antialias=True)), 0, 255)
    return x


@jax.jit
def slim_forward(params: Params, inputs: jax.Array) -> jax.Array:
    """`SlimInceptionV3` on a preprocessed batch: float32[N, 299, 299, 3] -> [N, num_classes]."""
    return SlimInceptionV3(num_classes_of(params)).apply(params, inputs)


def class_probabilities(
    params: Params, images: np.ndarray | jax.Array, *, batch_size: int = DEFAULT_BATCH_SIZE
) -> np.ndarray:
    """p(y|x) over the known classes, for `inception_score.inception_score`.

    Images are preprocessed (`preprocess`) and run in batches of `min(batch_size, N)` rows, the
    last one zero-padded, so the network compiles once for any number of images; the background
    logit (index 0) is dropped before the softmax (`inception_score.known_class_probabilities`),
    as `inception_score.py` slices it off.

    Args:
      params: from `load_slim_inception`.
      images: [N, H, W, 3] uint8 or float in [-1, 1] (see `preprocess`).
      batch_size: images per network call.

    Returns:
      float64[N, num_classes - 1].
    """
    if not len(images):
        return np.zeros((0, num_classes_of(params) - 1))
    batch_size = min(batch_size, len(images))
    logits = map_batches(
        lambda batch: slim_forward(params, preprocess(batch)),
        images,
        batch_size,
        desc="IS Inception",
    )
    return inception_score.known_class_probabilities(logits)
