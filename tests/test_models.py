"""Model shapes, parameter counts against the references, and the exact upsample rewrite."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import stage1 as stage1_configs
from stackgan_jax import models
from stackgan_jax.models import cpu_conv, layers
from stackgan_jax.models.ca import ConditioningAugmentation, sample_ca_noise


def model_config(arch, gf, df, residual, text_dim=1024, condition_dim=128, z_dim=100):
    return ml_collections.ConfigDict(
        dict(
            arch=arch,
            text_dim=text_dim,
            z_dim=z_dim,
            condition_dim=condition_dim,
            gf_dim=gf,
            df_dim=df,
            num_residual=residual,
            dtype="float32",
        )
    )


def counts(config):
    """Parameter counts of (S-I G, S-I D, S-II G, S-II D) via eval_shape: nothing is allocated."""
    result = []
    for stage in (1, 2):
        for net, inputs in (
            (models.generator(config, stage), models.generator_inputs(config, stage, 2)),
            (models.discriminator(config, stage), models.discriminator_inputs(config, stage, 2)),
        ):
            shapes = jax.eval_shape(
                lambda *a, net=net: models.init_variables(net, jax.random.key(0), a), *inputs
            )
            result.append(models.parameter_count(shapes))
    return result


# Reference counts: StackGAN-Pytorch's modules (torch_reference.py) and the TF layer tables.
@pytest.mark.parametrize(
    "arch, gf, df, residual, expected",
    [
        ("pytorch", 128, 64, 4, [10_301_248, 5_715_713, 26_290_080, 71_269_122]),
        ("pytorch", 192, 96, 2, [20_020_832, 12_407_425, 37_130_480, 159_889_538]),
        ("tf", 128, 64, 4, [14_264_192, 4_029_824, 26_290_080, 48_603_520]),
    ],
)
def test_parameter_counts_match_references(arch, gf, df, residual, expected):
    assert counts(model_config(arch, gf, df, residual)) == expected


def random_variables(module, *inputs, **kwargs):
    """Variables of the right shapes without compiling `init` (slow on CPU): N(0, 0.05)
    parameters, unit running variances."""
    shapes = jax.eval_shape(lambda *a: module.init(jax.random.key(0), *a, **kwargs), *inputs)
    rng = np.random.default_rng(0)

    def fill(path, leaf):
        if jax.tree_util.keystr(path).endswith("['var']"):
            return jnp.ones(leaf.shape)
        return jnp.asarray(rng.normal(0.0, 0.05, leaf.shape), jnp.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def init_and_apply(module, *inputs, real_init=False, **kwargs):
    """Variables (from `init` if `real_init`) and a jitted train-mode apply."""
    if real_init:
        variables = jax.jit(lambda *a: module.init(jax.random.key(0), *a, **kwargs))(*inputs)
    else:
        variables = random_variables(module, *inputs, **kwargs)
    outputs, state = jax.jit(lambda v, *a: module.apply(v, *a, mutable=["batch_stats"], **kwargs))(
        variables, *inputs
    )
    return variables, outputs, state


@pytest.mark.parametrize("arch", ["tf", "pytorch"])
def test_output_shapes_and_dtypes(arch):
    config = model_config(arch, 16, 8, 1, text_dim=24, condition_dim=8, z_dim=8)
    batch = 3
    emb = jax.random.normal(jax.random.key(0), (batch, 24))
    z = jax.random.normal(jax.random.key(1), (batch, 8))
    eps = sample_ca_noise(jax.random.key(2), batch, 8, arch)

    _, (image64, mu, logvar), _ = init_and_apply(
        models.stage1_generator(config), emb, z, eps, train=True
    )
    assert image64.shape == (batch, 64, 64, 3) and mu.shape == logvar.shape == (batch, 8)

    _, (image256, _, _), _ = init_and_apply(
        models.stage2_generator(config), image64, emb, eps, train=True
    )
    assert image256.shape == (batch, 256, 256, 3)

    condition = emb if arch == "tf" else mu
    for stage, images in ((1, image64), (2, image256)):
        d = models.discriminator(config, stage)
        d_vars, (cond, uncond), _ = init_and_apply(d, images, condition)
        assert cond.shape == (batch,) and cond.dtype == jnp.float32
        has_uncond = arch == "pytorch" and stage == 2
        assert (uncond is not None) == has_uncond
        if has_uncond:
            assert uncond.shape == (batch,)
        # Inference mode reads the running averages and mutates nothing.
        cond_eval, _ = jax.jit(lambda v, x, c, d=d: d.apply(v, x, c, train=False))(
            d_vars, images, condition
        )
        assert np.all(np.isfinite(np.asarray(cond_eval)))


def test_bfloat16_computes_in_bfloat16_with_float32_state():
    config = stage1_configs.get_config("debug").model
    config.dtype = "bfloat16"
    g = models.stage1_generator(config)
    variables, (image, mu, _), new_state = init_and_apply(
        g, *models.generator_inputs(config, 1, 2), real_init=True, train=True
    )
    assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    assert image.dtype == jnp.bfloat16 and mu.dtype == jnp.float32
    assert {x.dtype for x in jax.tree.leaves(new_state)} == {jnp.dtype(jnp.float32)}


def test_bfloat16_batch_norm_input_gradient_is_float32_accurate():
    """BatchNorm's input gradient subtracts the upstream gradient's projections on the ones and
    on the normalised input. Here the upstream gradient lies mostly in their span, so the result
    is a small difference of large terms; bfloat16 arithmetic anywhere in it would lose most of
    it. Inputs and upstream gradient are exact in bfloat16, so the only rounding allowed is the
    result's own (relative 2⁻⁹)."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(0.3, 0.1, (8, 4, 4, 16)), jnp.bfloat16)
    x32 = x.astype(jnp.float32)
    normalised = (x32 - x32.mean((0, 1, 2))) / x32.std((0, 1, 2))
    upstream = (1.0 + 0.5 * normalised + 0.01 * rng.normal(size=x.shape)).astype(jnp.bfloat16)
    variables = layers.batch_norm(jnp.float32).init(
        jax.random.key(0), x32, use_running_average=False
    )

    def input_gradient(dtype, x, upstream):
        bn = layers.batch_norm(dtype)
        out, pull_back = jax.vjp(
            lambda x: bn.apply(variables, x, use_running_average=False, mutable=["batch_stats"])[0],
            x,
        )
        return pull_back(upstream.astype(out.dtype))[0]

    got = jax.jit(input_gradient, static_argnums=0)(jnp.bfloat16, x, upstream)
    want = jax.jit(input_gradient, static_argnums=0)(jnp.float32, x32, upstream)
    assert got.dtype == jnp.bfloat16
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert np.linalg.norm(got - want) <= 4e-3 * np.linalg.norm(want)


def straightforward_upsample_conv(x, kernel):
    """The definition: nearest-neighbour ×2, then a 3×3 convolution with zero padding 1."""
    up = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return jax.lax.conv_general_dilated(
        up, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@pytest.mark.parametrize("shape", [(2, 4, 4, 5, 3), (1, 7, 3, 2, 4), (3, 1, 1, 4, 2)])
def test_phase_decomposed_upsample_equals_straightforward(shape):
    batch, height, width, cin, cout = shape
    kx, kk, kg = jax.random.split(jax.random.key(sum(shape)), 3)
    x = jax.random.normal(kx, (batch, height, width, cin))
    kernel = jax.random.normal(kk, (3, 3, cin, cout))
    upstream = jax.random.normal(kg, (batch, 2 * height, 2 * width, cout))

    fast = layers.upsample_conv(x, kernel)
    slow = straightforward_upsample_conv(x, kernel)
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5)

    def grads(fn):
        return jax.grad(lambda a, k: jnp.sum(fn(a, k) * upstream), argnums=(0, 1))(x, kernel)

    for got, want in zip(
        grads(layers.upsample_conv), grads(straightforward_upsample_conv), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def straightforward_conv(x, kernel, stride, padding):
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        (stride, stride),
        ((padding, padding),) * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


# (batch, height, width, cin, cout, kernel, stride, padding): the references' 3×3 / pad 1, 4×4
# stride 2 / pad 1 (odd size too), 1×1, D's final 4×4 stride 4, and a 3-channel image layer.
@pytest.mark.parametrize(
    "shape",
    [
        (2, 6, 6, 3, 8, 3, 1, 1),
        (2, 8, 8, 3, 9, 4, 2, 1),
        (1, 7, 5, 2, 8, 4, 2, 1),
        (3, 4, 4, 5, 10, 1, 1, 0),
        (2, 4, 4, 6, 8, 4, 4, 0),
        (2, 6, 6, 5, 3, 3, 1, 1),
    ],
)
def test_conv_with_matmul_kernel_gradient_equals_xla_convolution(shape):
    batch, height, width, cin, cout, size, stride, padding = shape
    kx, kk, kg = jax.random.split(jax.random.key(sum(shape)), 3)
    x = jax.random.normal(kx, (batch, height, width, cin))
    kernel = jax.random.normal(kk, (size, size, cin, cout))
    # The per-tap path itself, whatever `conv2d` would dispatch to for this width.
    per_tap = cpu_conv._conv_matmul_kernel_grad
    out = per_tap(x, kernel, stride, padding)
    np.testing.assert_array_equal(out, straightforward_conv(x, kernel, stride, padding))
    upstream = jax.random.normal(kg, out.shape)

    def grads(fn):
        loss = lambda a, k: jnp.sum(fn(a, k, stride, padding) * upstream)  # noqa: E731
        return jax.grad(loss, argnums=(0, 1))(x, kernel)

    for got, want in zip(grads(per_tap), grads(straightforward_conv), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_conv2d_uses_the_per_tap_kernel_gradient_from_enough_output_channels():
    x = jnp.zeros((1, 4, 4, 2))
    widths = cpu_conv.MATMUL_KERNEL_GRAD_MIN_FEATURES, cpu_conv.MATMUL_KERNEL_GRAD_MIN_FEATURES - 1
    primitives = [
        [
            equation.primitive.name
            for equation in jax.make_jaxpr(cpu_conv.conv2d, static_argnums=(2, 3))(
                x, jnp.zeros((3, 3, 2, cout)), 1, 1
            ).eqns
        ]
        for cout in widths
    ]
    assert primitives == [["custom_vjp_call"], ["conv_general_dilated"]]


@pytest.mark.parametrize("arch", ["tf", "pytorch"])
def test_conditioning_augmentation_matches_its_formula(arch):
    ca = ConditioningAugmentation(4, arch)
    emb = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    eps = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    variables = ca.init(jax.random.key(0), emb, eps)
    c, mu, logvar = ca.apply(variables, emb, eps)
    fc = variables["params"]["fc"]
    h = emb @ np.asarray(fc["kernel"]) + np.asarray(fc["bias"])
    if arch == "tf":  # LeakyReLU, second half is log σ
        h = np.where(h > 0, h, 0.2 * h)
        want_mu, want_logvar = h[:, :4], 2 * h[:, 4:]
    else:  # ReLU, second half is log σ²
        h = np.maximum(h, 0)
        want_mu, want_logvar = h[:, :4], h[:, 4:]
    np.testing.assert_allclose(mu, want_mu, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(logvar, want_logvar, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(c, want_mu + np.exp(0.5 * want_logvar) * eps, rtol=1e-5)


def test_ca_noise_distributions():
    tf_eps = sample_ca_noise(jax.random.key(0), 4000, 16, "tf")
    pt_eps = sample_ca_noise(jax.random.key(0), 4000, 16, "pytorch")
    assert float(jnp.max(jnp.abs(tf_eps))) <= 2.0
    assert float(jnp.max(jnp.abs(pt_eps))) > 3.0
    # Variance of a standard normal truncated at ±2.
    assert abs(float(jnp.var(tf_eps)) - 0.7737) < 0.02


def test_tf_truncated_normal_is_not_rescaled():
    w = layers.tf_truncated_normal(0.02)(jax.random.key(0), (200_000,))
    assert float(jnp.max(jnp.abs(w))) <= 0.04
    # TF1 truncates N(0, 0.02) at 2σ without rescaling: std = 0.02 · 0.8796.
    assert abs(float(jnp.std(w)) - 0.02 * 0.8796) < 2e-4
