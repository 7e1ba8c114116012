"""Model FLOPs of one training iteration, counted analytically for the reference's formulation.

MFU is model FLOPs per second over the devices' peak (the MaxText definition: the FLOPs the model
needs "regardless of implementation", so a cheaper rewrite shows as a shorter step, not as lower
utilisation). Here the model FLOPs are those of the reference code's iteration:

- Only convolutions and dense layers count, 2 FLOPs per multiply-accumulate (MAC). A k×k
  convolution costs out_height · out_width · k² · C_in · C_out MACs per example (padding
  positions included, as a dense implementation computes them); a dense layer C_in · C_out.
  BatchNorm, activations, losses and the optimiser are left out.
- An up-block counts as the reference writes it: nearest ×2 upsampling, then a 3×3 convolution
  over the 2H×2W grid (36 · H · W · C_in · C_out MACs). Our `layers.upsample_conv` computes the
  same function in 16 · H · W · C_in · C_out, which shows up as a speed-up.
- A backward pass costs 2× its forward (input and weight gradients) for a network that is
  being trained, 1× (input gradients only) for a network that gradients only pass through (D
  in the G update), and nothing for networks without gradients (G in the D update, the frozen
  Stage-I generator).
- Passes per iteration, `tf` (the paper's code evaluates its graph once per update, so the G
  update generates again):
    D update: [Stage-I G], G forward; D on real, wrong and fake images, forward + full backward.
    G update: [Stage-I G], G forward + full backward; D on fake, forward + input backward.
- Passes per iteration, `pytorch` (StackGAN-Pytorch generates once and shares the forward):
    [Stage-I G] and G forward once, G's full backward in the G update;
    D update: encoder on real and fake, conditional head on real, fake and the B − 1 wrong pairs
      (real features shifted against the conditions), unconditional head on real and fake, all
      forward + full backward;
    G update: encoder and heads on fake, forward + input backward. (StackGAN-Pytorch's
      `backward()` also computes D's weight gradients here and throws them away; that waste is
      not model work and is not counted.)

The layer shapes come from the networks themselves: every `layers.Conv`, `nn.Dense` and
`layers.UpsampleConv` call is intercepted while the network is traced with `jax.eval_shape`
(shapes only, nothing is computed or compiled).
"""

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from stackgan_jax import models
from stackgan_jax.models import layers

FLOPS_PER_MAC = 2

# What a backward pass costs, in forward passes, by how gradients meet the network.
BACKWARD_COST = {"none": 0, "input": 1, "full": 2}


def conv_macs(
    out_height: int, out_width: int, kernel_size: Sequence[int], in_features: int, out_features: int
) -> int:
    """MACs per example of a convolution: one kernel window per output position and channel."""
    return out_height * out_width * math.prod(kernel_size) * in_features * out_features


def dense_macs(in_features: int, out_features: int) -> int:
    """MACs per example of a dense layer."""
    return in_features * out_features


def upsample_conv_macs(in_height: int, in_width: int, in_features: int, out_features: int) -> int:
    """MACs per example of the reference's up-block conv: 3×3 over the ×2 nearest-upsampled grid."""
    return conv_macs(2 * in_height, 2 * in_width, (3, 3), in_features, out_features)


@dataclasses.dataclass(frozen=True)
class Layer:
    """One convolution or dense layer call: its module path, kind and MACs per example."""

    path: str
    kind: str
    macs: int


def layer_table(
    module: nn.Module, *inputs: Any, method: str | None = None, **kwargs: Any
) -> list[Layer]:
    """The conv/dense layers that one call of `module` runs, in call order.

    Args:
      module: a Flax Linen module.
      *inputs: its inputs (arrays or `jax.ShapeDtypeStruct`s) with a leading batch axis.
      method: the method to call (default `__call__`).
      **kwargs: further keyword arguments of the call (e.g. `train=True`).

    Returns:
      A list of `Layer`s with MACs per example.
    """
    table: list[Layer] = []

    def record(next_fun: Any, args: Any, call_kwargs: Any, context: Any) -> Any:
        out = next_fun(*args, **call_kwargs)
        if context.method_name != "__call__":
            return out
        mod, x = context.module, args[0]
        path = "/".join(mod.path)
        if isinstance(mod, layers.UpsampleConv):
            _, height, width, in_features = x.shape
            macs = upsample_conv_macs(height, width, in_features, mod.features)
            table.append(Layer(path, "upsample_conv3x3", macs))
        elif isinstance(mod, layers.Conv):
            _, out_height, out_width, out_features = out.shape
            kernel = (mod.kernel_size, mod.kernel_size)
            macs = conv_macs(out_height, out_width, kernel, x.shape[-1], out_features)
            table.append(Layer(path, "conv", macs))
        elif isinstance(mod, nn.Dense):
            # Any axes between the batch and the features are extra rows per example.
            rows = math.prod(x.shape[1:-1])
            table.append(Layer(path, "dense", rows * dense_macs(x.shape[-1], mod.features)))
        return out

    def init(*xs: Any) -> Any:
        return module.init(jax.random.key(0), *xs, method=method, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(init, *inputs)
    return table


def forward_macs(module: nn.Module, *inputs: Any, method: str | None = None, **kwargs: Any) -> int:
    """MACs per example of one forward call (see `layer_table`)."""
    return sum(layer.macs for layer in layer_table(module, *inputs, method=method, **kwargs))


@dataclasses.dataclass(frozen=True)
class NetworkMacs:
    """Forward MACs per example of each part of a stage's networks (0 where a part is absent)."""

    generator: int
    stage1_generator: int
    d_encoder: int
    d_conditional: int
    d_unconditional: int


def _spec(*shape: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def network_macs(model_config: ml_collections.ConfigDict, stage: int) -> NetworkMacs:
    """Per-example forward MACs of the generator(s) and discriminator parts of `stage`.

    Args:
      model_config: the `model` block of a training config.
      stage: 1 or 2.

    Returns:
      The `NetworkMacs` of the networks the config builds.
    """

    def generator_macs(module: nn.Module, generator_stage: int) -> int:
        inputs = models.generator_inputs(model_config, generator_stage, 1)
        return forward_macs(module, *(_spec(*x.shape) for x in inputs), train=True)

    generator = generator_macs(models.generator(model_config, stage), stage)
    stage1 = 0
    if stage == 2:
        stage1 = generator_macs(models.stage1_generator(model_config), 1)
    d = models.discriminator(model_config, stage)
    size = models.IMAGE_SIZE[stage]
    features = _spec(1, 4, 4, 8 * model_config.df_dim)
    condition = _spec(1, models.discriminator_condition_dim(model_config))
    unconditional = 0
    if d.unconditional_head is not None:
        unconditional = forward_macs(d, features, method="unconditional_logits")
    return NetworkMacs(
        generator=generator,
        stage1_generator=stage1,
        d_encoder=forward_macs(d, _spec(1, size, size, 3), method="encode"),
        d_conditional=forward_macs(d, features, condition, method="conditional_logits"),
        d_unconditional=unconditional,
    )


@dataclasses.dataclass(frozen=True)
class Pass:
    """Rows of one network part that one update of the reference iteration runs.

    Attributes:
      update: 'd' or 'g', the update of the iteration that runs it.
      part: a field of `NetworkMacs`.
      rows: examples through the part.
      backward: 'none', 'input' or 'full' (see `BACKWARD_COST`).
    """

    update: str
    part: str
    rows: int
    backward: str


def reference_passes(arch: str, stage: int, batch: int, unconditional: bool) -> list[Pass]:
    """The network passes of one reference iteration (see the module docstring).

    Args:
      arch: 'tf' or 'pytorch'.
      stage: 1 or 2.
      batch: the global batch B.
      unconditional: whether D has an unconditional head (`pytorch` Stage-II).

    Returns:
      The passes, D update first.
    """
    stage1 = [Pass("d", "stage1_generator", batch, "none")] if stage == 2 else []
    if arch == "tf":
        return [
            *stage1,
            Pass("d", "generator", batch, "none"),
            Pass("d", "d_encoder", 3 * batch, "full"),  # real, wrong, fake
            Pass("d", "d_conditional", 3 * batch, "full"),
            *(dataclasses.replace(p, update="g") for p in stage1),
            Pass("g", "generator", batch, "full"),
            Pass("g", "d_encoder", batch, "input"),
            Pass("g", "d_conditional", batch, "input"),
        ]
    if arch != "pytorch":
        raise ValueError(f"arch must be 'tf' or 'pytorch', got {arch!r}")
    passes = [
        *stage1,
        # One forward shared by both updates; its backward belongs to the G update.
        Pass("g", "generator", batch, "full"),
        Pass("d", "d_encoder", 2 * batch, "full"),  # real, fake
        Pass("d", "d_conditional", 2 * batch + batch - 1, "full"),  # real, fake, wrong pairs
        Pass("g", "d_encoder", batch, "input"),
        Pass("g", "d_conditional", batch, "input"),
    ]
    if unconditional:
        passes += [
            Pass("d", "d_unconditional", 2 * batch, "full"),
            Pass("g", "d_unconditional", batch, "input"),
        ]
    return passes


@dataclasses.dataclass(frozen=True)
class StepFlops:
    """Model FLOPs of one iteration: total, its forward and backward parts, and per part."""

    total: int
    forward: int
    backward: int
    by_part: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)


def iteration_flops(macs: NetworkMacs, passes: Sequence[Pass]) -> StepFlops:
    """Sums `passes` over the per-example forward MACs `macs`; 2 FLOPs per MAC."""
    forward = backward = 0
    by_part: dict[str, int] = {}
    for p in passes:
        fwd = FLOPS_PER_MAC * getattr(macs, p.part) * p.rows
        bwd = BACKWARD_COST[p.backward] * fwd
        forward, backward = forward + fwd, backward + bwd
        by_part[p.part] = by_part.get(p.part, 0) + fwd + bwd
    return StepFlops(forward + backward, forward, backward, by_part)


def step_flops(config: ml_collections.ConfigDict, batch: int | None = None) -> StepFlops:
    """Model FLOPs of one reference training iteration of `config` at global batch `batch`.

    Args:
      config: a training config (`configs/stage*.py`).
      batch: the global batch; `config.train.global_batch_size` by default.

    Returns:
      The iteration's `StepFlops`.
    """
    batch = config.train.global_batch_size if batch is None else batch
    macs = network_macs(config.model, config.stage)
    passes = reference_passes(
        config.model.arch, config.stage, batch, unconditional=macs.d_unconditional > 0
    )
    return iteration_flops(macs, passes)


# --- Peak throughput of the devices -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DevicePeak:
    """Dense (no sparsity) peak FLOP/s of one device, by the rate its matrix units run at.

    Attributes:
      name: the device, as the table knows it.
      bfloat16: bfloat16 inputs.
      float32: float32 inputs at JAX's default matmul precision, which runs them on the matrix
        units: TF32 tensor cores on NVIDIA Ampere and later, one bf16 MXU pass on TPU.
      float32_highest: float32 at `jax_default_matmul_precision='highest'`: FP32 CUDA cores on
        NVIDIA, six bf16 passes on TPU.
    """

    name: str
    bfloat16: float
    float32: float
    float32_highest: float


def _tpu(name: str, bf16: float) -> DevicePeak:
    return DevicePeak(name, bf16, bf16, bf16 / 6)


# (substring of `device.device_kind`, peaks); the first match wins, so specific names come first.
# NVIDIA: data-sheet dense numbers (H100/H200 SXM, H100 PCIe/NVL, A100 SXM/PCIe); TPU: Cloud TPU
# per-chip bf16 numbers.
PEAKS: tuple[tuple[str, DevicePeak], ...] = (
    ("H100 PCIe", DevicePeak("NVIDIA H100 PCIe", 756e12, 378e12, 51.2e12)),
    ("H100 NVL", DevicePeak("NVIDIA H100 NVL", 835e12, 417.5e12, 60e12)),
    ("H100", DevicePeak("NVIDIA H100 SXM", 989.4e12, 494.7e12, 66.9e12)),
    ("H200 NVL", DevicePeak("NVIDIA H200 NVL", 835e12, 417.5e12, 60e12)),
    ("H200", DevicePeak("NVIDIA H200 SXM", 989.4e12, 494.7e12, 66.9e12)),
    ("A100", DevicePeak("NVIDIA A100", 312e12, 156e12, 19.5e12)),
    ("TPU v4", _tpu("TPU v4", 275e12)),
    ("TPU v5 lite", _tpu("TPU v5e", 197e12)),
    ("TPU v5e", _tpu("TPU v5e", 197e12)),
    ("TPU v5p", _tpu("TPU v5p", 459e12)),
    ("TPU v5", _tpu("TPU v5p", 459e12)),
)

_HIGHEST_PRECISION = ("highest", "float32")


def device_peak(device_kind: str) -> DevicePeak | None:
    """The peak table's entry for a `device_kind` string, or None (CPUs, unknown devices)."""
    for key, peak in PEAKS:
        if key.lower() in device_kind.lower():
            return peak
    return None


def peak_flops(
    device_kind: str, dtype: str, matmul_precision: str | None = None
) -> tuple[float | None, str | None]:
    """Peak FLOP/s of one device for a computation dtype.

    Args:
      device_kind: `jax.Device.device_kind`.
      dtype: the computation dtype, 'float32' or 'bfloat16'.
      matmul_precision: `jax.config.jax_default_matmul_precision` (None: JAX's default).

    Returns:
      (FLOP/s, a description of the number), or (None, None) for a device not in `PEAKS`.
    """
    peak = device_peak(device_kind)
    if peak is None:
        return None, None
    if dtype == "bfloat16":
        return peak.bfloat16, f"{peak.name} bfloat16 dense"
    if dtype != "float32":
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    if matmul_precision in _HIGHEST_PRECISION:
        return peak.float32_highest, f"{peak.name} float32 at 'highest' precision"
    return peak.float32, f"{peak.name} float32 at default precision (TF32 / 1-pass bf16)"
