"""The convolution every network layer runs, with a kernel gradient that is fast on XLA:CPU.

This file exists for speed on CPU, not for the networks' maths: `conv2d` computes what
`jax.lax.conv_general_dilated` computes (NHWC × HWIO, symmetric zero padding), and on other
backends it is that call. On CPU its backward pass replaces XLA's backward-filter convolution,
which XLA:CPU runs about 10× slower than its forward convolution, by one matrix product per
kernel tap in every layer with `MATMUL_KERNEL_GRAD_MIN_FEATURES` or more output channels
(`conv2d` has the measurements). When it came in (commit cc2dc55), Stage-I
birds_pytorch training at batch 64 on 2 CPU threads went from 1.4–1.9 to 5.8–6.2 images/s.

The network blocks in `layers.py` call `conv2d`; nothing here creates parameters.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array


def _lax_conv(x: Array, kernel: Array, stride: int, padding: int) -> Array:
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


# Name scopes of `conv2d`'s CPU backward pass; they appear in the HLO ops' `op_name` metadata,
# which is how profiles (benchmarks/profile_step.py) tell the two gradients apart.
INPUT_GRAD_SCOPE = "conv_input_grad"
KERNEL_GRAD_SCOPE = "conv_kernel_grad"


# Output channels from which the per-tap matrix products beat XLA:CPU's backward-filter
# convolution (see `conv2d`).
MATMUL_KERNEL_GRAD_MIN_FEATURES = 8


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_matmul_kernel_grad(x: Array, kernel: Array, stride: int, padding: int) -> Array:
    return _lax_conv(x, kernel, stride, padding)


def _conv_forward(x: Array, kernel: Array, stride: int, padding: int) -> tuple[Array, Any]:
    return _lax_conv(x, kernel, stride, padding), (x, kernel)


def _tap_kernel_grad(window: Array, upstream: Array) -> Array:
    """One kernel tap's gradient [C, D]: Σ over batch and positions of window ⊗ upstream.

    Written as upstreamᵀ [D, NHW] · window [NHW, C] on 2-D views, then transposed: XLA:CPU then
    streams the large window as it is, where `einsum('nhwc,nhwd->cd')` first made a transposed
    copy of it (2–3× slower at the birds widths, measured per layer).
    """
    channels, features = window.shape[-1], upstream.shape[-1]
    return jnp.dot(upstream.reshape(-1, features).T, window.reshape(-1, channels)).T


def _conv_backward(stride: int, padding: int, residuals: Any, upstream: Array) -> Any:
    x, kernel = residuals
    with jax.named_scope(INPUT_GRAD_SCOPE):
        (x_grad,) = jax.vjp(lambda a: _lax_conv(a, kernel, stride, padding), x)[1](upstream)
    with jax.named_scope(KERNEL_GRAD_SCOPE):
        padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
        out_h, out_w = upstream.shape[1:3]
        # Tap (i, j) of the kernel met the input pixels padded[:, i + stride·p, j + stride·q].
        taps = [
            [
                _tap_kernel_grad(
                    padded[
                        :,
                        i : i + stride * (out_h - 1) + 1 : stride,
                        j : j + stride * (out_w - 1) + 1 : stride,
                    ],
                    upstream,
                )
                for j in range(kernel.shape[1])
            ]
            for i in range(kernel.shape[0])
        ]
        kernel_grad = jnp.stack([jnp.stack(row) for row in taps]).astype(kernel.dtype)
    return x_grad, kernel_grad


_conv_matmul_kernel_grad.defvjp(_conv_forward, _conv_backward)


def conv2d(x: Array, kernel: Array, stride: int = 1, padding: int = 0) -> Array:
    """NHWC × HWIO convolution with `padding` zero pixels on every side.

    On CPU the kernel gradient is computed as one matrix product per kernel tap (input window ×
    upstream gradient, summed over batch and positions) instead of XLA's backward-filter
    convolution, which XLA:CPU runs about 10× slower than its forward convolution (5.6 against
    54 GFLOP/s measured for a 3×3, 256→128 layer at 32×32, batch 64, where the per-tap products
    reach 60 GFLOP/s). The value and the input gradient are XLA's own; the kernel gradient is
    the same sum in another order. Layers with fewer than `MATMUL_KERNEL_GRAD_MIN_FEATURES`
    output channels (the 3-channel image layers) keep XLA's backward-filter convolution there:
    a [C, 3] product per tap wastes the matrix unit, and XLA's convolution was 4× faster for the
    Stage-II 3×3, 32→3 layer at 256×256. Other backends use XLA's convolution throughout.
    """
    if jax.default_backend() == "cpu" and kernel.shape[-1] >= MATMUL_KERNEL_GRAD_MIN_FEATURES:
        return _conv_matmul_kernel_grad(x, kernel, stride, padding)
    return _lax_conv(x, kernel, stride, padding)
