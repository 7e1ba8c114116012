"""Benchmarks: the scripts print one valid JSON line; the FLOP counter matches hand counts;
the profiler's attribution (op_profile.py) is right on small synthetic inputs.

Smoke tests only: nothing here asserts on speed.
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from benchmarks import flops, hlo_ops, op_profile
from configs import stage1 as stage1_configs
from configs import stage2 as stage2_configs
from stackgan_jax import steps
from stackgan_jax.models import cpu_conv, layers

REPO = pathlib.Path(__file__).resolve().parents[1]

# The train_step record's timings and FLOP counts, positive on any machine.
TRAIN_STEP_MEASURES = (
    "sec_per_step_median",
    "sec_per_step_mean",
    "sec_per_step_pipelined",
    "images_per_sec",
    "images_per_sec_pipelined",
    "model_flops_per_step",
    "hardware_flops_per_step",
    "hardware_flops_per_device_step",
)
TRAIN_STEP_KEYS = {
    *TRAIN_STEP_MEASURES,
    "benchmark",
    "platform",
    "device_kind",
    "device_count",
    "config",
    "config_name",
    "arch",
    "stage",
    "batch",
    "dtype",
    "steps",
    "warmup",
    "compile_s",
    "model_flops_per_image",
    "model_flops",
    "peak_flops_per_device",
    "peak_flops_basis",
    "mfu",
    "hfu",
    "peak_memory_bytes",
    "params",
}


def run_json(*args: str, **env: str) -> dict:
    """Runs a script from the repo root (conftest's environment plus `env`); its one JSON line."""
    done = subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, done.stdout
    return json.loads(lines[0])


def test_train_step_script_prints_one_json_record():
    record = run_json(
        "benchmarks/train_step.py",
        "--config=configs/stage1.py:debug",
        "--batch_size=8",
        "--steps=2",
        "--warmup=1",
        # Halves the cold compile on 2 cores; the numbers are not looked at.
        JAX_DISABLE_MOST_OPTIMIZATIONS="1",
    )
    assert set(record) >= TRAIN_STEP_KEYS
    assert record["benchmark"] == "train_step"
    assert (record["config"], record["config_name"]) == ("configs/stage1.py:debug", "debug")
    assert (record["arch"], record["stage"], record["batch"], record["dtype"]) == (
        "tf",
        1,
        8,
        "float32",
    )
    assert record["device_count"] == 8  # conftest's virtual CPU devices
    for key in TRAIN_STEP_MEASURES:
        assert record[key] > 0, key
    assert record["compile_s"] >= 0
    assert record["images_per_sec"] == pytest.approx(8 / record["sec_per_step_median"])
    config = stage1_configs.get_config("debug")
    assert record["model_flops_per_step"] == flops.step_flops(config, 8).total
    assert record["model_flops"]["total"] == record["model_flops_per_step"]
    assert record["params"]["generator"] > 0 and record["params"]["discriminator"] > 0
    # A CPU has no entry in the peak table and reports no device memory.
    assert record["peak_flops_per_device"] is None
    assert record["mfu"] is None and record["hfu"] is None
    assert record["peak_memory_bytes"] is None


def test_input_pipeline_script_prints_one_json_record():
    record = run_json(
        "benchmarks/input_pipeline.py",
        "--config=configs/stage1.py:debug",
        "--batch_size=8",
        "--num_examples=16",
        "--batches=2",
        "--warmup_batches=1",
    )
    assert record["benchmark"] == "input_pipeline"
    assert (record["arch"], record["batch"], record["num_examples"]) == ("tf", 8, 16)
    assert set(record["images_per_sec"]) == {"64", "256"}
    for size in ("64", "256"):
        assert record["images_per_sec"][size] > 0
        assert record["sizes"][size]["sec_per_batch_median"] > 0
        assert record["sizes"][size]["setup_s"] > 0


def test_profile_step_script_prints_one_json_record():
    record = run_json(
        "benchmarks/profile_step.py",
        "--side=ours",
        "--config=configs/stage1.py:debug",
        "--config.model.arch=pytorch",
        "--batch_size=2",
        "--steps=1",
        "--warmup=0",
        "--threads=1",
        JAX_DISABLE_MOST_OPTIMIZATIONS="1",
    )
    assert record["benchmark"] == "profile_step"
    assert (record["stage"], record["arch"], record["batch"]) == (1, "pytorch", 2)
    assert record["ratio_plain"] is None and "reference" not in record
    ours = record["ours"]
    categories = ours["categories_ms_per_step"]
    assert set(categories) == set(op_profile.CATEGORIES)
    for category in ("conv_forward", "conv_input_grad", "conv_kernel_grad", "optimizer"):
        assert categories[category] > 0, category
    assert sum(categories.values()) == pytest.approx(ours["busy_ms_per_step"])
    assert 0 < ours["busy_ms_per_step"] <= 1e3 * ours["sec_per_step_profiled"]
    assert ours["op_ms_per_step"] >= ours["busy_ms_per_step"] * (1 - 1e-9)
    assert set(ours["scopes_ms_per_step"]) == {
        cpu_conv.INPUT_GRAD_SCOPE,
        cpu_conv.KERNEL_GRAD_SCOPE,
        steps.OPTIMIZER_SCOPE,
    }
    assert 0 < len(ours["top_ops"]) <= 15


def event(start, end, line, name="op"):
    return op_profile.Event(name, start, end - start, run_id=0, line=line)


def test_wall_time_is_shared_among_the_ops_running_at_once():
    # Line 0: a [0, 10], then a loop [20, 30] around its body [22, 28]; line 1: b [5, 15].
    a, loop, body, b = event(0, 10, 0), event(20, 30, 0), event(22, 28, 0), event(5, 15, 1)
    for line in ([a, loop, body], [b]):
        op_profile.set_self_times(line)
    op_profile.attribute_wall_time([a, loop, body, b])
    assert [e.self_ns for e in (a, loop, body, b)] == [10, 4, 6, 10]
    # [5, 10] is shared by a and b; the body's time is its own, not the loop's.
    assert [e.wall_ns for e in (a, loop, body, b)] == [7.5, 4, 6, 7.5]
    assert sum(e.wall_ns for e in (a, loop, body, b)) == 25  # the union of the intervals


def test_compiled_instructions_are_classified():
    def loss(x, kernel, dense):
        with jax.named_scope("net"):
            y = cpu_conv.conv2d(x, kernel, 1, 1)
            return jnp.sum(jnp.tanh(y.reshape(2, -1) @ dense))

    def step(x, kernel, dense):
        grads = jax.grad(loss, argnums=(0, 1, 2))(x, kernel, dense)
        with jax.named_scope(steps.OPTIMIZER_SCOPE):
            return [p - 0.1 * jnp.sign(g) for p, g in zip((x, kernel, dense), grads, strict=True)]

    # 8 output channels: enough for conv2d's per-tap kernel gradient (its name scope).
    features = cpu_conv.MATMUL_KERNEL_GRAD_MIN_FEATURES
    args = (
        jnp.ones((2, 8, 8, 4)),
        jnp.ones((3, 3, 4, features)),
        jnp.ones((8 * 8 * features, 3)),
    )
    module = hlo_ops.HloModule.parse(jax.jit(step).lower(*args).compile().as_text())
    assert module.name == "jit_step"
    found = {hlo_ops.classify_instruction(module, i)[0] for i in module.computations[module.entry]}
    assert {"conv_forward", "conv_input_grad", "conv_kernel_grad", "optimizer"} <= found
    assert found <= set(op_profile.CATEGORIES)


def test_reference_conv_backward_is_split_by_onednn_times():
    def op(name, us, scope=""):
        return {"name": name, "scope": scope, "shapes": "[]", "self_us": us, "calls": 2}

    ops = [
        op("aten::mkldnn_convolution", 4000),
        op("aten::convolution_backward", 6000),
        op("aten::_slow_conv2d_backward", 200),
        op("aten::native_batch_norm", 1000),
        op("aten::mul_", 400, scope="optimizer"),
        op("aten::addmm", 100),
        op("aten::cat", 100),
        op("aten::sum", 100),
        op("aten::empty", 100),
    ]
    onednn = {
        "convolution/backward_data": {"ms": 1.0, "calls": 4},
        "convolution/backward_weights": {"ms": 3.0, "calls": 4},
    }
    profiled = {"profile": {"steps": 2, "seconds": 0.0128, "ops": ops, "onednn": onednn}}
    side = op_profile.reference_profile({"sec_per_step": 0.006}, profiled)
    assert side.as_dict(5)["conv_backward_kernel_share"] == 0.75
    assert side.categories() == pytest.approx(
        {
            "conv_forward": 2.0,
            "conv_input_grad": 0.75,
            "conv_kernel_grad": 2.25,
            "conv_backward_unsplit": 0.1,
            "other_dot": 0.05,
            "elementwise": 0.5,
            "reductions": 0.05,
            "copies": 0.05,
            "optimizer": 0.2,
            "other": 0.05,
        }
    )
    assert side.busy_ms == pytest.approx(6.0) and side.profiled_s == 0.0064
    assert side.scopes() == {"optimizer": {"optimizer": pytest.approx(0.2)}}


# --- The FLOP counter ---------------------------------------------------------------------------


def conv(out_size, kernel, cin, cout):
    return out_size * out_size * kernel * kernel * cin * cout


def up(in_size, cin, cout):
    """The reference's nearest ×2 upsample then 3×3 conv."""
    return conv(2 * in_size, 3, cin, cout)


def bottleneck(size, channels, kernel_inner=3):
    quarter = channels // 4
    return (
        conv(size, 1, channels, quarter)
        + conv(size, kernel_inner, quarter, quarter)
        + conv(size, 3, quarter, channels)
    )


# The `debug` preset: text 384, z 16, c 16, gf 16, df 8 (so 8gf = 128, 8df = 64).
TEXT, Z, C, GF, DF = 384, 16, 16, 16, 8
# Both Stage-I D encoders start with the same four 4x4 stride-2 down-blocks, 64 -> 4 pixels.
DOWN_BLOCKS = (
    conv(32, 4, 3, DF)
    + conv(16, 4, DF, 2 * DF)
    + conv(8, 4, 2 * DF, 4 * DF)
    + conv(4, 4, 4 * DF, 8 * DF)
)

DEBUG_TF = flops.NetworkMacs(
    generator=(
        TEXT * 2 * C  # CA FC
        + (C + Z) * 4 * 4 * 8 * GF  # FC
        + bottleneck(4, 8 * GF)
        + up(4, 8 * GF, 4 * GF)
        + bottleneck(8, 4 * GF)
        + up(8, 4 * GF, 2 * GF)
        + up(16, 2 * GF, GF)
        + up(32, GF, 3)  # to_image: an up-block conv without BN
    ),
    stage1_generator=0,
    d_encoder=DOWN_BLOCKS + bottleneck(4, 8 * DF),
    d_conditional=TEXT * C + conv(4, 1, 8 * DF + C, 8 * DF) + conv(1, 4, 8 * DF, 1),
    d_unconditional=0,
)

DEBUG_PYTORCH = flops.NetworkMacs(
    generator=(
        TEXT * 2 * C
        + (Z + C) * 16 * 8 * GF
        + up(4, 8 * GF, 4 * GF)
        + up(8, 4 * GF, 2 * GF)
        + up(16, 2 * GF, GF)
        + up(32, GF, GF // 2)
        + conv(64, 3, GF // 2, 3)
    ),
    stage1_generator=0,
    d_encoder=DOWN_BLOCKS,
    d_conditional=conv(4, 3, 8 * DF + C, 8 * DF) + conv(1, 4, 8 * DF, 1),
    d_unconditional=0,
)


@pytest.mark.parametrize("arch, want", [("tf", DEBUG_TF), ("pytorch", DEBUG_PYTORCH)])
def test_network_macs_match_a_hand_count(arch, want):
    config = stage1_configs.get_config("debug")
    config.model.arch = arch
    assert flops.network_macs(config.model, 1) == want


def test_iteration_flops_match_a_hand_count():
    batch, config = 8, stage1_configs.get_config("debug")
    g, d = DEBUG_TF.generator, DEBUG_TF.d_encoder + DEBUG_TF.d_conditional
    # tf: G forward in each update and its backward (2×) in the G update; D forward + backward
    # (2×) on real, wrong and fake in the D update, then forward + input backward (1×) on fake.
    want = 2 * batch * (g * (1 + 3) + d * (3 * 3 + 2))
    assert flops.step_flops(config, batch).total == want

    config.model.arch = "pytorch"
    m = DEBUG_PYTORCH
    # pytorch: one G forward + backward; D encoder on real and fake, head on real, fake and the
    # B - 1 wrong pairs (forward + backward), then encoder and head on fake (forward + input).
    want = 2 * (
        3 * batch * m.generator
        + 3 * (2 * batch * m.d_encoder + (3 * batch - 1) * m.d_conditional)
        + 2 * batch * (m.d_encoder + m.d_conditional)
    )
    result = flops.step_flops(config, batch)
    assert result.total == want
    assert result.forward + result.backward == result.total == sum(result.by_part.values())


def test_stage2_iteration_counts_the_frozen_generator_forward_only():
    batch = 4
    config = stage2_configs.get_config("debug")
    config.model.arch = "pytorch"
    m = flops.network_macs(config.model, 2)
    assert m.stage1_generator == DEBUG_PYTORCH.generator
    assert m.d_unconditional == conv(1, 4, 8 * DF, 1)
    want = 2 * (
        batch * m.stage1_generator
        + 3 * batch * m.generator
        + 3 * (2 * batch * (m.d_encoder + m.d_unconditional) + (3 * batch - 1) * m.d_conditional)
        + 2 * batch * (m.d_encoder + m.d_conditional + m.d_unconditional)
    )
    assert flops.step_flops(config, batch).total == want


def test_upsample_is_counted_as_the_reference_writes_it():
    # Our phase-decomposed form does 16 MACs per output pixel of the low-res grid; the count is
    # the reference's 36 (a 3×3 conv over the upsampled grid).
    module = layers.UpsampleConv(5, layers.conv_init("tf"))
    (layer,) = flops.layer_table(module, jax.ShapeDtypeStruct((1, 6, 7, 4), jnp.float32))
    assert layer.kind == "upsample_conv3x3"
    assert layer.macs == 12 * 14 * 9 * 4 * 5 == 36 * 6 * 7 * 4 * 5


@pytest.mark.parametrize(
    "module, name, generator, discriminator",
    [
        # Forward GFLOP per image, spec §11's table.
        (stage1_configs, "birds", 2.05, 0.24),
        (stage1_configs, "birds_pytorch", 2.44, 0.30),
        (stage2_configs, "birds", 23.1, 5.6),
        (stage2_configs, "birds_pytorch", 23.1, 6.3),
    ],
)
def test_full_size_forward_flops_match_the_spec_table(module, name, generator, discriminator):
    config = module.get_config(name)
    m = flops.network_macs(config.model, config.stage)
    digits = 2 if config.stage == 1 else 1
    assert round(2 * m.generator / 1e9, digits) == generator
    d = m.d_encoder + m.d_conditional + m.d_unconditional
    assert round(2 * d / 1e9, digits) == discriminator


def test_peak_table():
    assert flops.device_peak("NVIDIA H100 80GB HBM3").name == "NVIDIA H100 SXM"
    assert flops.device_peak("NVIDIA H100 PCIe").name == "NVIDIA H100 PCIe"
    assert flops.device_peak("NVIDIA A100-SXM4-80GB").name == "NVIDIA A100"
    assert flops.device_peak("TPU v5 lite").name == "TPU v5e"
    assert flops.device_peak("TPU v5").name == "TPU v5p"
    assert flops.device_peak("cpu") is None
    assert flops.peak_flops("cpu", "float32") == (None, None)
    assert flops.peak_flops("NVIDIA H200", "bfloat16")[0] == 989.4e12
    assert flops.peak_flops("NVIDIA H200", "float32")[0] == 494.7e12  # TF32
    assert flops.peak_flops("NVIDIA H200", "float32", "highest")[0] == 66.9e12
    assert flops.peak_flops("TPU v4", "float32")[0] == 275e12
