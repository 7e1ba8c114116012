"""Numerical parity of the `pytorch` architecture with StackGAN-Pytorch (tests/fixtures/).

The fixture holds a tiny PyTorch reference's weights, inputs and train-mode outputs, made by
tests/fixtures/make_torch_parity.py from ../shared/bench/torch_reference.py. The weights are
loaded into our Flax modules through the StackGAN-Pytorch name mapping that converts released
`.pth` files (`stackgan_jax.pretrained.stackgan_pytorch`), and every output must match.
"""

import functools
import pathlib
import re

import jax
import ml_collections
import numpy as np
import pytest

from stackgan_jax import models
from stackgan_jax.pretrained import stackgan_pytorch

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "torch_parity.npz"
TOLERANCE = dict(rtol=1e-5, atol=1e-5)

# torch_reference.py builds StackGAN-Pytorch's modules (code/model.py), with the same
# nn.Sequential indices, under shorter attribute names. These renames give the fixture's keys
# StackGAN-Pytorch's state-dict names.
STACKGAN_PYTORCH_NAMES = (
    (r"\.g1\.", ".STAGE1_G."),
    (r"\.ca\.", ".ca_net."),
    (r"\.ups\.(\d)\.", lambda m: f".upsample{int(m[1]) + 1}."),
    (r"^(s2_G(?:_after)?)\.enc\.", r"\1.encoder."),
    (r"^(s\d_D)\.enc\.", r"\1.encode_img."),
    (r"\.joint\.", ".hr_joint."),
    (r"\.res\.(\d+)\.b\.", r".residual.\1.block."),
    (r"\.cond\.f\.", ".get_cond_logits.outlogits."),
    (r"\.uncond\.f\.", ".get_uncond_logits.outlogits."),
)


def stackgan_pytorch_name(key):
    """A fixture key with torch_reference's module names replaced by StackGAN-Pytorch's."""
    for pattern, replacement in STACKGAN_PYTORCH_NAMES:
        key = re.sub(pattern, replacement, key)
    return key


def load_fixture():
    with np.load(FIXTURE) as data:
        return {stackgan_pytorch_name(k): v for k, v in data.items()}


@pytest.fixture(scope="module")
def fixture():
    return load_fixture()


def config(gf, df, residual):
    return ml_collections.ConfigDict(
        dict(
            arch="pytorch",
            text_dim=1024,
            z_dim=100,
            condition_dim=128,
            gf_dim=gf,
            df_dim=df,
            num_residual=residual,
            dtype="float32",
        )
    )


def nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


def load(state, prefix, layout, abstract_variables):
    """{'params', 'batch_stats'} from the state-dict entries `prefix` + `layout`'s names."""
    return stackgan_pytorch.variables(state, layout, prefix, abstract_variables, FIXTURE.name)


def discriminator_shapes(cfg, stage):
    net = models.discriminator(cfg, stage)
    return jax.eval_shape(
        functools.partial(models.init_variables, net),
        jax.random.key(0),
        models.discriminator_inputs(cfg, stage, 2),
    )


def discriminator_layout(num_down, reduce_convs=0):
    # torch Sequential indices: conv, LReLU for the first block; conv, BN, LReLU after that.
    block = stackgan_pytorch.block
    layout = block("encoder/down1", "encode_img.0")
    index = 2
    for i in range(2, num_down + 1):
        layout |= block(f"encoder/down{i}", f"encode_img.{index}", f"encode_img.{index + 1}")
        index += 3
    for i in range(1, reduce_convs + 1):
        layout |= block(f"encoder/reduce{i}", f"encode_img.{index}", f"encode_img.{index + 1}")
        index += 3
    head = "get_cond_logits.outlogits"
    layout |= block("conditional_head/joint", f"{head}.0", f"{head}.1")
    return layout | {"conditional_head/logit/conv": ("conv_bias", f"{head}.3")}


def apply_train(module, variables, *args, method=None):
    fn = jax.jit(
        lambda v, *a: module.apply(v, *a, train=True, mutable=["batch_stats"], method=method)
    )
    return fn(variables, *args)


def check_running_statistics(new_stats, fixture, prefix, layout, counts):
    """Means must equal torch's; variances are biased here and unbiased in torch (n/(n-1))."""
    for path, (kind, name) in layout.items():
        if kind != "bn":
            continue
        node = new_stats
        for p in path.split("/"):
            node = node[p]
        before_var = fixture[f"{prefix}.{name}.running_var"]
        after_mean = fixture[f"{prefix}_after.{name}.running_mean"]
        after_var = fixture[f"{prefix}_after.{name}.running_var"]
        np.testing.assert_allclose(node["mean"], after_mean, **TOLERANCE)
        n = counts[path.split("/")[0]]
        unbiased_batch_var = (after_var - 0.9 * before_var) / 0.1
        want_var = 0.9 * before_var + 0.1 * unbiased_batch_var * (n - 1) / n
        np.testing.assert_allclose(node["var"], want_var, rtol=1e-4, atol=1e-5)


def test_stage1_generator_matches_reference(fixture):
    cfg = config(16, 8, 0)
    net = models.stage1_generator(cfg)
    layout = stackgan_pytorch.stage1_generator_layout()
    variables = load(fixture, "s1_G.", layout, models.generator_shapes(cfg, 1))
    inputs = fixture["s1_in.embedding"], fixture["s1_in.z"], fixture["s1_in.eps"]
    (fake, mu, logvar), new_state = apply_train(net, variables, *inputs)
    np.testing.assert_allclose(fake, nhwc(fixture["s1_out.fake"]), **TOLERANCE)
    np.testing.assert_allclose(mu, fixture["s1_out.mu"], **TOLERANCE)
    np.testing.assert_allclose(logvar, fixture["s1_out.logvar"], **TOLERANCE)
    # Elements per channel that each BatchNorm averaged over: batch × spatial.
    counts = {"fc_bn": 4, "up8": 4 * 64, "up16": 4 * 256, "up32": 4 * 1024, "up64": 4 * 4096}
    check_running_statistics(new_state["batch_stats"], fixture, "s1_G", layout, counts)


def check_discriminator(net, variables, fixture, stage):
    out = f"s{stage}_out."
    real = nhwc(fixture[f"s{stage}_in.real"])
    fake = nhwc(fixture[f"{out}fake"])
    mu = fixture[f"{out}mu"]
    real_features, _ = apply_train(net, variables, real, method="encode")
    fake_features, _ = apply_train(net, variables, fake, method="encode")
    np.testing.assert_allclose(real_features, nhwc(fixture[f"{out}D_real_feat"]), **TOLERANCE)
    np.testing.assert_allclose(fake_features, nhwc(fixture[f"{out}D_fake_feat"]), **TOLERANCE)
    # The reference's wrong pairs: real features [0..B-2] with the conditions [1..B-1].
    pairs = {
        "real": (real_features, mu),
        "wrong": (real_features[:-1], mu[1:]),
        "fake": (fake_features, mu),
    }
    for name, (features, condition) in pairs.items():
        logits, _ = apply_train(net, variables, features, condition, method="conditional_logits")
        np.testing.assert_allclose(logits, fixture[f"{out}cond_{name}_logit"], **TOLERANCE)
        probabilities = jax.nn.sigmoid(logits)
        np.testing.assert_allclose(probabilities, fixture[f"{out}cond_{name}_prob"], **TOLERANCE)
    return real_features, fake_features


def test_stage1_discriminator_matches_reference(fixture):
    cfg = config(16, 8, 0)
    net = models.discriminator(cfg, 1)
    variables = load(fixture, "s1_D.", discriminator_layout(4), discriminator_shapes(cfg, 1))
    check_discriminator(net, variables, fixture, 1)


def test_stage2_generator_matches_reference(fixture):
    cfg = config(16, 4, 2)
    stage1 = load(
        fixture,
        "s2_G.STAGE1_G.",
        stackgan_pytorch.stage1_generator_layout(),
        models.generator_shapes(cfg, 1),
    )
    inputs = fixture["s2_in.embedding"], fixture["s2_in.z"], fixture["s2_in.eps1"]
    (stage1_image, _, _), _ = apply_train(models.stage1_generator(cfg), stage1, *inputs)
    np.testing.assert_allclose(stage1_image, nhwc(fixture["s2_out.stage1_fake"]), **TOLERANCE)

    # Stage-II is fed the reference's own Stage-I image so each network is checked on its own.
    variables = load(
        fixture,
        "s2_G.",
        stackgan_pytorch.stage2_generator_layout(2),
        models.generator_shapes(cfg, 2),
    )
    (fake, mu, logvar), _ = apply_train(
        models.stage2_generator(cfg),
        variables,
        nhwc(fixture["s2_out.stage1_fake"]),
        fixture["s2_in.embedding"],
        fixture["s2_in.eps2"],
    )
    np.testing.assert_allclose(fake, nhwc(fixture["s2_out.fake"]), **TOLERANCE)
    np.testing.assert_allclose(mu, fixture["s2_out.mu"], **TOLERANCE)
    np.testing.assert_allclose(logvar, fixture["s2_out.logvar"], **TOLERANCE)


def test_stage2_discriminator_matches_reference(fixture):
    cfg = config(16, 4, 2)
    net = models.discriminator(cfg, 2)
    layout = discriminator_layout(6, reduce_convs=2)
    layout["unconditional_head/logit/conv"] = ("conv_bias", "get_uncond_logits.outlogits.0")
    variables = load(fixture, "s2_D.", layout, discriminator_shapes(cfg, 2))
    real_features, fake_features = check_discriminator(net, variables, fixture, 2)
    for name, features in (("real", real_features), ("fake", fake_features)):
        logits = jax.jit(lambda v, f: net.apply(v, f, method="unconditional_logits"))(
            variables, features
        )
        np.testing.assert_allclose(logits, fixture[f"s2_out.uncond_{name}_logit"], **TOLERANCE)
