"""Building blocks shared by the Stage-I and Stage-II networks of both reference architectures.

Everything is NHWC. Convolutions carry no bias (as in both references) unless a block says so.
`dtype` is the computation dtype; parameters and BatchNorm statistics stay float32. Every
convolution goes through `cpu_conv.conv2d`, XLA's convolution with a kernel gradient that is
fast on CPU.
"""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stackgan_jax.models.cpu_conv import conv2d

Array = jax.Array
DType = Any
Initializer = Callable[..., Array]

LEAKY_SLOPE = 0.2


def leaky_relu(x: Array) -> Array:
    """LeakyReLU with the slope 0.2 used throughout both references."""
    return nn.leaky_relu(x, LEAKY_SLOPE)


def tf_truncated_normal(stddev: float = 0.02) -> Initializer:
    """TF1's `truncated_normal_initializer`: N(0, stddev) re-drawn outside ±2·stddev.

    Unlike `jax.nn.initializers.truncated_normal`, the standard deviation is not rescaled to
    make the truncated distribution's deviation equal `stddev`; TF1 did not do that either.
    """

    def init(key: Array, shape: tuple[int, ...], dtype: DType = jnp.float32) -> Array:
        return stddev * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)

    return init


def torch_default_bias(fan_in: int) -> Initializer:
    """PyTorch's default bias init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    StackGAN-Pytorch re-initialises conv weights but leaves the final logit conv's bias at this
    default, so the `pytorch` architecture keeps it.
    """
    bound = 1.0 / np.sqrt(fan_in)

    def init(key: Array, shape: tuple[int, ...], dtype: DType = jnp.float32) -> Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def conv_init(arch: str) -> Initializer:
    """Convolution kernel init of a reference: truncated normal (`tf`) or normal (`pytorch`)."""
    if arch == "tf":
        return tf_truncated_normal(0.02)
    return nn.initializers.normal(0.02)


DENSE_INIT = nn.initializers.normal(0.02)


def _scale_init(key: Array, shape: tuple[int, ...], dtype: DType = jnp.float32) -> Array:
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


class Float32BatchNorm(nn.BatchNorm):
    """`flax.linen.BatchNorm` that converts its input to float32 once, before anything else."""

    def __call__(self, x: Array, *args: Any, **kwargs: Any) -> Array:
        """Normalises `x`; the output is in `dtype`.

        Flax already computes the statistics and the normalisation in float32, but it converts
        a bfloat16 input twice: once for the statistics, once for x − mean. The backward pass
        then rounds each branch's gradient to bfloat16 and adds them in bfloat16, and the two
        nearly cancel whenever the upstream gradient lies close to the span of the ones and the
        normalised input (the directions normalisation removes): in tests/test_models.py's
        case the input gradient came out 27% off. Converting once here makes the sum float32,
        rounded once (0.2% off). For a float32 input the conversion is the identity.

        Args:
          x: the input, of any float dtype.
          *args: as for `flax.linen.BatchNorm`.
          **kwargs: as for `flax.linen.BatchNorm` (`use_running_average`, `mask`).
        """
        return super().__call__(x.astype(jnp.float32), *args, **kwargs)


def batch_norm(dtype: DType, name: str | None = None) -> nn.BatchNorm:
    """BatchNorm as both references configure it: ε 1e-5, decay 0.9, γ ~ N(1, 0.02), β = 0.

    The variance is computed as the mean of squared deviations (not E[x²] − E[x]²), the way
    PyTorch and TF compute it, so outputs agree to float32 rounding. Whether it normalises with
    batch or running statistics is chosen per call (`use_running_average=not train`). The
    arithmetic, forward and backward, is float32 for any `dtype` (see `Float32BatchNorm`).
    """
    return Float32BatchNorm(
        momentum=0.9,
        epsilon=1e-5,
        scale_init=_scale_init,
        use_fast_variance=False,
        dtype=dtype,
        name=name,
    )


class SquareConv(nn.Module):
    """The fields of a square convolution with symmetric zero padding (`Conv`, `ConvBlock`).

    Attributes:
      features: output channels.
      kernel_size: the kernel's height and width.
      kernel_init: the kernel's initialiser.
      strides: the same stride along both axes.
      padding: zero padding in pixels on every side.
    """

    features: int
    kernel_size: int
    kernel_init: Initializer
    strides: int = 1
    padding: int = 0


class Conv(SquareConv):
    """A square convolution with symmetric zero padding, through `conv2d`.

    Parameters are named and shaped as `flax.linen.Conv`'s (`kernel` HWIO, optional `bias`).
    """

    use_bias: bool = False
    bias_init: Initializer = nn.initializers.zeros_init()
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        shape = (self.kernel_size, self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, shape, jnp.float32)
        bias = (
            self.param("bias", self.bias_init, (self.features,), jnp.float32)
            if self.use_bias
            else None
        )
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = conv2d(x, kernel, self.strides, self.padding)
        return y if bias is None else y + bias


# Nearest-neighbour ×2 upsampling followed by a 3-tap convolution (zero padding 1) reads, for even
# output rows 2i, the low-resolution rows (i-1, i) with weights (w0, w1 + w2), and for odd output
# rows 2i+1 the rows (i, i+1) with weights (w0 + w1, w2). _PHASE_TAPS[phase, tap, k] holds those
# sums; applying it to both spatial axes of the 3×3 kernel gives four 2×2 kernels.
_PHASE_TAPS = np.array([[[1, 0, 0], [0, 1, 1]], [[1, 1, 0], [0, 0, 1]]], np.float32)


def upsample_conv(x: Array, kernel: Array) -> Array:
    """`conv3x3(nearest_upsample_x2(x))` computed on the low-resolution input.

    The four output phases (even/odd row × even/odd column) are each a 2×2 convolution of the
    zero-padded input with a kernel built from sums of the 3×3 taps; their outputs are
    interleaved (depth-to-space). Same function as the straightforward form, 16 instead of 36
    multiply-adds per output pixel and channel pair, and no 4×-sized intermediate.

    Args:
      x: [B, H, W, Cin] input.
      kernel: [3, 3, Cin, Cout] kernel of the equivalent high-resolution 3×3 convolution.

    Returns:
      [B, 2H, 2W, Cout].
    """
    batch, height, width, _ = x.shape
    taps = jnp.asarray(_PHASE_TAPS, kernel.dtype)
    phase_kernels = jnp.einsum("atk,csl,klio->actsio", taps, taps, kernel)
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    rows = []
    for a in (0, 1):
        cols = [
            conv2d(padded[:, a : a + height + 1, c : c + width + 1], phase_kernels[a, c])
            for c in (0, 1)
        ]
        rows.append(jnp.stack(cols, axis=3))
    out = jnp.stack(rows, axis=2)  # [B, H, 2 (row phase), W, 2 (col phase), Cout]
    return out.reshape(batch, 2 * height, 2 * width, kernel.shape[-1])


class UpsampleConv(nn.Module):
    """Nearest ×2 upsampling then a bias-free 3×3 convolution; the parameter is the 3×3 kernel."""

    features: int
    kernel_init: Initializer
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param(
            "kernel", self.kernel_init, (3, 3, x.shape[-1], self.features), jnp.float32
        )
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
        return upsample_conv(x, kernel)


class ConvBlock(SquareConv):
    """Bias-free convolution, then optional BatchNorm, then optional activation.

    `padding` is symmetric zero padding in pixels: 1 for 3×3 and for 4×4 stride-2 convolutions
    (the references' "SAME" / pad 1), 0 for 1×1.
    """

    norm: bool = True
    activation: Callable[[Array], Array] | None = None
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        x = Conv(
            self.features,
            self.kernel_size,
            self.kernel_init,
            strides=self.strides,
            padding=self.padding,
            dtype=self.dtype,
            name="conv",
        )(x)
        if self.norm:
            x = batch_norm(self.dtype, name="bn")(x, use_running_average=not train)
        if self.activation is not None:
            x = self.activation(x)
        return x


class UpBlock(nn.Module):
    """Upsample ×2 + 3×3 conv, BatchNorm, optional activation (the references' up-block).

    Given a `condition`, the normalised features are modulated by it before the activation,
    x ↦ x · (1 + γ(c)) + β(c) with γ, β linear maps initialised to zero (conditional
    BatchNorm, de Vries et al. 2017; opt-in `config.model.g_text_modulation`, not in StackGAN).
    """

    features: int
    kernel_init: Initializer
    activation: Callable[[Array], Array] | None = nn.relu
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool, condition: Array | None = None) -> Array:
        x = UpsampleConv(self.features, self.kernel_init, self.dtype, name="conv")(x)
        x = batch_norm(self.dtype, name="bn")(x, use_running_average=not train)
        if condition is not None:
            x = modulate(x, condition, self.dtype)
        if self.activation is not None:
            x = self.activation(x)
        return x


def modulate(x: Array, condition: Array, dtype: DType) -> Array:
    """Modulates x per channel: x · (1 + γ(c)) + β(c), γ and β zero-initialised linear maps."""
    dense = functools.partial(
        nn.Dense, x.shape[-1], kernel_init=nn.initializers.zeros_init(), dtype=dtype
    )
    gamma = dense(name="gamma")(condition)[:, None, None, :]
    beta = dense(name="beta")(condition)[:, None, None, :]
    return x * (1 + gamma) + beta


def down_block(
    features: int,
    *,
    kernel_init: Initializer,
    dtype: DType,
    norm: bool = True,
    activation: Callable[[Array], Array] | None = leaky_relu,
    name: str,
) -> ConvBlock:
    """4×4 stride-2 conv (pad 1) halving H and W, optional BN, LeakyReLU: the D down-block.

    Everything but `features` is a keyword, so an encoder binds `kernel_init` and `dtype` once
    (`functools.partial`) and lists its down-blocks by width and name.
    """
    return ConvBlock(
        features,
        4,
        kernel_init,
        strides=2,
        padding=1,
        norm=norm,
        activation=activation,
        dtype=dtype,
        name=name,
    )


class BottleneckResidual(nn.Module):
    """The `tf` reference's residual unit: 1×1 → C/4, 3×3 → C/4, 3×3 → C, BN after each.

    Activations inside the branch and after the sum are ReLU in the generator and LeakyReLU in
    the discriminator. `norm=False` leaves out the BatchNorms (an opt-in for D).
    """

    kernel_init: Initializer
    activation: Callable[[Array], Array]
    dtype: DType = jnp.float32
    norm: bool = True

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        conv = functools.partial(
            ConvBlock, kernel_init=self.kernel_init, norm=self.norm, dtype=self.dtype
        )
        channels = x.shape[-1]
        h = conv(channels // 4, 1, activation=self.activation, name="conv1")(x, train)
        h = conv(channels // 4, 3, padding=1, activation=self.activation, name="conv2")(h, train)
        h = conv(channels, 3, padding=1, name="conv3")(h, train)
        return self.activation(x + h)


class ResidualBlock(nn.Module):
    """Stage-II generator residual block: (3×3 conv, BN, ReLU, 3×3 conv, BN) + skip, ReLU."""

    kernel_init: Initializer
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        conv = functools.partial(
            ConvBlock, kernel_size=3, kernel_init=self.kernel_init, padding=1, dtype=self.dtype
        )
        channels = x.shape[-1]
        h = conv(channels, activation=nn.relu, name="conv1")(x, train)
        h = conv(channels, name="conv2")(h, train)
        return nn.relu(x + h)


def tile_condition(condition: Array, size: int) -> Array:
    """Replicates a [B, C] condition over a size×size grid: [B, size, size, C]."""
    return jnp.broadcast_to(
        condition[:, None, None, :], (condition.shape[0], size, size, condition.shape[-1])
    )


class LogitConv(nn.Module):
    """The final 4×4 stride-4 conv that maps D's 4×4 features to one logit per image.

    `tf` has no bias; `pytorch` has one at PyTorch's default init.
    """

    kernel_init: Initializer
    use_bias: bool
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        bias_init = torch_default_bias(4 * 4 * x.shape[-1])
        x = Conv(
            1,
            4,
            self.kernel_init,
            strides=4,
            use_bias=self.use_bias,
            bias_init=bias_init,
            dtype=self.dtype,
            name="conv",
        )(x)
        return x.reshape(x.shape[0]).astype(jnp.float32)
