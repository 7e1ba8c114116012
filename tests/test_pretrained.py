"""Converters for the released generators (stackgan_jax.pretrained), without torch.

PyTorch: `.pth` files written by the torch-free writer of tests/test_untrusted_torch_pickle.py hold
StackGAN-Pytorch's state-dict names, with the weights of tests/fixtures/torch_parity.npz, so the
converted networks must reproduce the torch outputs stored there.

TensorFlow: a checkpoint written here holds the reference's prettytensor variable names; a
TensorFlow transcription of the reference's generators (stageI/II/model.py, test-phase BN, as
the demo runs them) reading those variables by name must give the converted workdir's images.
"""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow as tf
import test_torch_parity
from conftest import embeddings_file
from test_torch_parity import apply_train, nhwc
from test_untrusted_torch_pickle import write_pth

from configs import stage1 as stage1_configs
from configs import stage2 as stage2_configs
from stackgan_jax import checkpointing, generation, inference, parallel, train
from stackgan_jax import state as state_lib
from stackgan_jax.pretrained import ConversionError, convert, release_step, stackgan_pytorch

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
TOLERANCE = dict(rtol=1e-5, atol=1e-5)

# ---------------------------------------------------------------------------------------------
# Release files.


def with_batch_counters(state):
    """Adds the int64 `num_batches_tracked` every BatchNorm of torch >= 0.4.1 saves."""
    counters = {
        name.replace("running_mean", "num_batches_tracked"): np.array(5, np.int64)
        for name in state
        if name.endswith("running_mean")
    }
    return state | counters


def test_release_step_is_the_last_number_of_the_file_name():
    assert release_step("models/birds_model_164000.ckpt") == 164000
    assert release_step("birds_model_164000.ckpt.data-00000-of-00001") == 164000
    assert release_step("/x/netG_epoch_90.pth") == 90
    assert release_step("generator.pth") == 0


# ---------------------------------------------------------------------------------------------
# StackGAN-Pytorch.


def pytorch_config(stage, **model):
    config = (stage1_configs if stage == 1 else stage2_configs).get_config("birds_pytorch")
    config.model.update(model)
    return config


def parity_state(parity, prefix):
    """The fixture's `prefix` state dict under StackGAN-Pytorch's names, as a release file has."""
    return with_batch_counters(
        {k.removeprefix(prefix): v for k, v in parity.items() if k.startswith(prefix)}
    )


@pytest.fixture(scope="module")
def parity():
    return test_torch_parity.load_fixture()


@pytest.fixture(scope="module")
def pytorch_releases(parity, tmp_path_factory):
    """{stage: (config, .pth path, state dict, converted workdir)} for both stages."""
    directory = tmp_path_factory.mktemp("pytorch_release")
    releases = {}
    for stage, prefix, model in (
        (1, "s1_G.", dict(gf_dim=16, df_dim=8)),
        (2, "s2_G.", dict(gf_dim=16, df_dim=4, num_residual=2)),
    ):
        config = pytorch_config(stage, **model)
        state = parity_state(parity, prefix)
        path = str(directory / f"netG_epoch_{10 * stage}.pth")
        write_pth(path, state)
        workdir = str(directory / f"stage{stage}")
        assert convert(path, config, workdir) == 10 * stage
        releases[stage] = config, path, state, workdir
    return releases


def test_pytorch_stage1_release_reproduces_the_torch_outputs(pytorch_releases, parity):
    config, _, _, workdir = pytorch_releases[1]
    model = inference.load(workdir)
    assert model.step == 10 and model.stage == 1 and model.text_encoder == "char_cnn_rnn"
    inputs = parity["s1_in.embedding"], parity["s1_in.z"], parity["s1_in.eps"]
    net = generation.Generators.from_config(config).generator
    (fake, mu, logvar), _ = apply_train(net, model.generator, *inputs)
    np.testing.assert_allclose(fake, nhwc(parity["s1_out.fake"]), **TOLERANCE)
    np.testing.assert_allclose(mu, parity["s1_out.mu"], **TOLERANCE)
    np.testing.assert_allclose(logvar, parity["s1_out.logvar"], **TOLERANCE)


def test_pytorch_stage2_release_reproduces_the_torch_outputs(pytorch_releases, parity):
    config, _, _, workdir = pytorch_releases[2]
    model = inference.load(workdir)
    assert model.step == 20 and model.stage == 2
    generators = generation.Generators.from_config(config)
    embedding = parity["s2_in.embedding"]
    (low, _, _), _ = apply_train(
        generators.stage1_generator,
        model.stage1_generator,
        embedding,
        parity["s2_in.z"],
        parity["s2_in.eps1"],
    )
    np.testing.assert_allclose(low, nhwc(parity["s2_out.stage1_fake"]), **TOLERANCE)
    # Stage-II is fed the reference's own Stage-I image, so each network is checked on its own.
    (high, mu, _), _ = apply_train(
        generators.generator,
        model.generator,
        nhwc(parity["s2_out.stage1_fake"]),
        embedding,
        parity["s2_in.eps2"],
    )
    np.testing.assert_allclose(high, nhwc(parity["s2_out.fake"]), **TOLERANCE)
    np.testing.assert_allclose(mu, parity["s2_out.mu"], **TOLERANCE)


@pytest.mark.parametrize("stage", [1, 2])
def test_pytorch_workdir_generates_what_the_mapped_weights_do(pytorch_releases, stage):
    config, path, state, workdir = pytorch_releases[stage]
    model = inference.load(workdir)
    # The same weights, mapped in memory from the state dict instead of read from the workdir.
    what = os.path.basename(path)
    layouts = {1: stackgan_pytorch.stage1_generator_layout()}
    layouts[2] = stackgan_pytorch.stage2_generator_layout(config.model.num_residual)
    generator = stackgan_pytorch.variables(state, layouts[stage], "", model.generator, what)
    stage1_generator = None
    if stage == 2:
        stage1_generator = stackgan_pytorch.variables(
            state, layouts[1], stackgan_pytorch.STAGE1_PREFIX, model.stage1_generator, what
        )
    embedding = np.random.default_rng(stage).normal(size=(3, 1024)).astype(np.float32)
    key = jax.random.key(7)
    got = inference.generate(model, embedding, key)
    want = model.jitted_generate(generator, stage1_generator, embedding, key)
    for got_images, want_images in zip(got, want, strict=True):
        np.testing.assert_array_equal(got_images, want_images)


def test_pytorch_errors_name_the_tensor(pytorch_releases, parity, tmp_path):
    config, path, state, _ = pytorch_releases[1]

    def convert_state(name, state):
        write_pth(tmp_path / name, state)
        return convert(str(tmp_path / name), config, str(tmp_path / name.replace(".pth", "")))

    with pytest.raises(FileNotFoundError, match="missing.pth"):
        convert(str(tmp_path / "missing.pth"), config, str(tmp_path / "missing"))
    with pytest.raises(ConversionError, match="has no tensor 'ca_net.fc.weight'"):
        convert_state("discriminator.pth", parity_state(parity, "s1_D."))
    with pytest.raises(ConversionError, match="the first is 'extra.weight'"):
        convert_state("extra.pth", state | {"extra.weight": np.zeros(3, np.float32)})
    wider = pytorch_config(1, gf_dim=32)
    with pytest.raises(
        ConversionError,
        match=r"'fc.0.weight' has shape \(2048, 228\), but the config needs \(4096, 228\)",
    ):
        convert(path, wider, str(tmp_path / "wider"))
    with pytest.raises(ConversionError, match="is a Stage-II generator"):
        convert(pytorch_releases[2][1], config, str(tmp_path / "stage2_as_stage1"))
    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        convert(path, config, pytorch_releases[1][3])


def test_a_converted_workdir_is_not_resumed_but_serves_as_stage1(pytorch_releases):
    config, _, state, workdir = pytorch_releases[1]
    optimizer = state_lib.make_optimizer(config.train, steps_per_epoch=1)
    abstract = train.abstract_state(config, optimizer, parallel.make_mesh())
    manager = checkpointing.make_manager(workdir, read_only=True)
    with pytest.raises(checkpointing.CheckpointMismatchError, match="converted from netG_epoch_10"):
        checkpointing.restore(manager, abstract, {})
    # A Stage-II run of the same widths takes it as its frozen Stage-I generator.
    stage2 = pytorch_config(2, gf_dim=16, df_dim=8)
    abstract = train.abstract_state(stage2, optimizer, parallel.make_mesh())
    meta = checkpointing.make_meta(
        stage2,
        text_encoder={"name": stage2.data.text_encoder, "dim": stage2.model.text_dim},
        dataset={},
        steps_per_epoch=1,
    )
    variables, step = checkpointing.restore_stage1_generator(
        workdir, -1, abstract.stage1_generator, meta
    )
    assert step == 10
    np.testing.assert_array_equal(variables["params"]["fc"]["kernel"], state["fc.0.weight"].T)


def test_cli_converts_and_the_sampling_cli_reads_the_workdir(pytorch_releases, tmp_path):
    _, path, _, _ = pytorch_releases[1]
    workdir = tmp_path / "cli"
    run = cli_runner()
    converted = run(
        "stackgan_jax.pretrained",
        "--config=configs/stage1.py:birds_pytorch",
        "--config.model.gf_dim=16",
        f"--input={path}",
        f"--workdir={workdir}",
    )
    assert f"Wrote {workdir} (stage 1, step 10)" in converted.stdout
    embeddings = embeddings_file(tmp_path, 1024)
    sampled = run(
        "stackgan_jax.sample",
        f"--workdir={workdir}",
        f"--embeddings={embeddings}",
        "--num_samples=2",
        f"--output={tmp_path / 'grid.png'}",
    )
    assert "Wrote" in sampled.stdout and (tmp_path / "grid.png").stat().st_size > 0


def cli_runner():
    """Runs `python -m MODULE ARGS` from the repository root; fails the test on an error."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def run(module, *args):
        result = subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    return run


# ---------------------------------------------------------------------------------------------
# The paper's TensorFlow release.


def numbered(method, k):
    """prettytensor's name for the k-th call (from 0) of `method` in a scope."""
    return f"{method}_{k}" if k else method


class ReferenceVariables:
    """The reference's variables by name, made on first use (as tf.get_variable) with fixed seeds.

    Weights are drawn with standard deviation 1/sqrt(fan-in), and the BatchNorm statistics and
    affine parameters around their neutral values, so activations stay of order 1 and the test
    images are far from tanh's saturation.
    """

    def __init__(self):
        self.arrays = {}
        self.rng = np.random.default_rng(0)

    def get(self, name, shape):
        if name not in self.arrays:
            leaf = name.rsplit("/", 1)[1]
            if leaf in ("w", "Matrix"):
                value = self.rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1]))
            elif leaf == "gamma":
                value = 1 + 0.1 * self.rng.normal(size=shape)
            elif leaf == "variance":
                value = self.rng.uniform(0.5, 1.5, size=shape)
            else:  # bias, beta, mean
                value = 0.1 * self.rng.normal(size=shape)
            self.arrays[name] = value.astype(np.float32)
        assert self.arrays[name].shape == tuple(shape), name
        return self.arrays[name]

    # The reference's layers, by prettytensor method (misc/custom_ops.py), test phase.

    def fc(self, scope, k, x, out):
        name = f"{scope}/{numbered('custom_fully_connected', k)}/Linear"
        return x @ self.get(f"{name}/Matrix", (x.shape[-1], out)) + self.get(f"{name}/bias", (out,))

    def conv(self, scope, k, x, out, size=3, stride=1):
        name = numbered("custom_conv2d", k)
        w = self.get(f"{scope}/{name}/{name}/w", (size, size, x.shape[-1], out))
        return tf.nn.conv2d(x, w, stride, "SAME").numpy()

    def batch_norm(self, prefix, x):
        shape = (x.shape[-1],)
        mean, variance = self.get(f"{prefix}/mean", shape), self.get(f"{prefix}/variance", shape)
        beta, gamma = self.get(f"{prefix}/beta", shape), self.get(f"{prefix}/gamma", shape)
        return tf.nn.batch_normalization(x, mean, variance, beta, gamma, 1e-5).numpy()

    def bn(self, scope, k, x):
        name = numbered("conv_batch_norm", k)
        return self.batch_norm(f"{scope}/{name}/{name}", x)

    def condition(self, scope, embedding, eps, dim=128):
        """generate_condition + sample_encoded_context: LReLU(FC), μ + exp(log σ) ε."""
        h = self.fc(scope, 0, embedding, 2 * dim)
        h = np.maximum(h, 0.2 * h)
        return h[:, :dim] + np.exp(h[:, dim:]) * eps


def up(x):
    return tf.compat.v1.image.resize_nearest_neighbor(x, [2 * x.shape[1], 2 * x.shape[2]]).numpy()


def relu(x):
    return np.maximum(x, 0)


def reference_stage1(v, gf, embedding, z, eps):
    """stageI/model.py CondGAN.generator in scope g_net."""
    s = "g_net"
    h = v.fc(s, 1, np.concatenate([v.condition(s, embedding, eps), z], 1), 4 * 4 * 8 * gf)
    h0 = v.batch_norm(f"{s}/fc_batch_norm/batch_norm", h).reshape(-1, 4, 4, 8 * gf)
    r = relu(v.bn(s, 0, v.conv(s, 0, h0, 2 * gf, size=1)))
    r = relu(v.bn(s, 1, v.conv(s, 1, r, 2 * gf)))
    h1 = relu(h0 + v.bn(s, 2, v.conv(s, 2, r, 8 * gf)))
    h2 = v.bn(s, 3, v.conv(s, 3, up(h1), 4 * gf))
    r = relu(v.bn(s, 4, v.conv(s, 4, h2, gf, size=1)))
    r = relu(v.bn(s, 5, v.conv(s, 5, r, gf)))
    h2 = relu(h2 + v.bn(s, 6, v.conv(s, 6, r, 4 * gf)))
    h = relu(v.bn(s, 7, v.conv(s, 7, up(h2), 2 * gf)))
    h = relu(v.bn(s, 8, v.conv(s, 8, up(h), gf)))
    return np.tanh(v.conv(s, 9, up(h), 3))


def reference_stage2(v, gf, image, embedding, eps):
    """stageII/model.py CondGAN.hr_get_generator in scope hr_g_net (4 residual blocks)."""
    s = "hr_g_net"
    c = v.condition(s, embedding, eps)
    h = relu(v.conv(s, 0, image, gf))
    h = relu(v.bn(s, 0, v.conv(s, 1, h, 2 * gf, size=4, stride=2)))
    h = relu(v.bn(s, 1, v.conv(s, 2, h, 4 * gf, size=4, stride=2)))
    h = np.concatenate([h, np.broadcast_to(c[:, None, None], (*h.shape[:3], c.shape[1]))], 3)
    h = relu(v.bn(s, 2, v.conv(s, 3, h, 4 * gf)))
    for r in range(4):
        t = relu(v.bn(s, 3 + 2 * r, v.conv(s, 4 + 2 * r, h, 4 * gf)))
        h = relu(h + v.bn(s, 4 + 2 * r, v.conv(s, 5 + 2 * r, t, 4 * gf)))
    for i, width in enumerate((2 * gf, gf, gf // 2, gf // 4)):
        h = relu(v.bn(s, 11 + i, v.conv(s, 12 + i, up(h), width)))
    return np.tanh(v.conv(s, 16, h, 3))


TF_GF = 16


def write_tf_checkpoint(prefix, arrays):
    tf.raw_ops.SaveV2(
        prefix=str(prefix),
        tensor_names=list(arrays),
        shape_and_slices=[""] * len(arrays),
        tensors=[tf.constant(a) for a in arrays.values()],
    )


@pytest.fixture(scope="module")
def tf_release(tmp_path_factory):
    """(config, reference variables, checkpoint prefix, converted Stage-II workdir)."""
    config = stage2_configs.get_config("birds")
    config.model.gf_dim = TF_GF
    variables = ReferenceVariables()
    # One pass makes every variable, as building the reference's graph does.
    zeros = np.zeros((1, 1024), np.float32), np.zeros((1, 128), np.float32)
    low = reference_stage1(variables, TF_GF, zeros[0], np.zeros((1, 100), np.float32), zeros[1])
    reference_stage2(variables, TF_GF, low, *zeros)
    # A release checkpoint also holds the discriminators and Adam's slots; they are not read.
    extra = {
        "d_net/custom_conv2d/custom_conv2d/w": np.ones((4, 4, 3, 8), np.float32),
        "g_net/custom_conv2d/custom_conv2d/w/Adam": np.ones((1, 1, 128, 32), np.float32),
        "beta1_power": np.float32(0.5),
    }
    prefix = tmp_path_factory.mktemp("tf_release") / "birds_model_164000.ckpt"
    write_tf_checkpoint(prefix, variables.arrays | extra)
    workdir = str(prefix.parent / "stage2")
    assert convert(f"{prefix}.index", config, workdir) == 164000
    return config, variables, prefix, workdir


def test_tf_release_generates_what_the_reference_graph_does(tf_release):
    config, variables, _, workdir = tf_release
    model = inference.load(workdir)
    embedding = np.random.default_rng(1).normal(size=(3, 1024)).astype(np.float32)
    key = jax.random.key(3)
    low, high = inference.generate(model, embedding, key)
    # The noise inference.generate draws from `key`, fed to the reference.
    noise = generation.sample_noise(generation.Generators.from_config(config), key, len(embedding))
    z, eps1, eps2 = (np.asarray(x) for x in (noise.z, noise.stage1_ca, noise.ca))
    want_low = reference_stage1(variables, TF_GF, embedding, z, eps1)
    want_high = reference_stage2(variables, TF_GF, want_low, embedding, eps2)
    assert np.std(want_high) > 0.05 and np.mean(np.abs(want_high) > 0.99) < 0.2
    np.testing.assert_allclose(low, want_low, **TOLERANCE)
    np.testing.assert_allclose(high, want_high, **TOLERANCE)


def test_tf_stage1_config_reads_g_net_only(tf_release, tmp_path):
    _, variables, prefix, _ = tf_release
    config = stage1_configs.get_config("birds")
    config.model.gf_dim = TF_GF
    convert(prefix, config, str(tmp_path / "stage1"), step=5)
    model = inference.load(str(tmp_path / "stage1"))
    assert model.step == 5 and model.stage1_generator is None
    np.testing.assert_array_equal(
        model.generator["params"]["up8"]["conv"]["kernel"],
        variables.arrays["g_net/custom_conv2d_3/custom_conv2d_3/w"],
    )


def test_tf_errors_name_the_variable(tf_release, tmp_path):
    config, variables, _, _ = tf_release
    name = "hr_g_net/conv_batch_norm_7/conv_batch_norm_7/gamma"
    missing = {k: v for k, v in variables.arrays.items() if k != name}
    write_tf_checkpoint(tmp_path / "missing.ckpt", missing)
    with pytest.raises(ConversionError, match=f"has no tensor '{name}'"):
        convert(tmp_path / "missing.ckpt", config, str(tmp_path / "a"))
    name = "g_net/custom_conv2d_5/custom_conv2d_5/w"
    wrong = variables.arrays | {name: np.zeros((3, 3, 16, 32), np.float32)}
    write_tf_checkpoint(tmp_path / "wrong.ckpt", wrong)
    with pytest.raises(
        ConversionError,
        match=rf"'{name}' has shape \(3, 3, 16, 32\), but the config needs \(3, 3, 16, 16\)",
    ):
        convert(tmp_path / "wrong.ckpt", config, str(tmp_path / "b"))
    stage1_only = {k: v for k, v in variables.arrays.items() if k.startswith("g_net/")}
    write_tf_checkpoint(tmp_path / "stage1.ckpt", stage1_only)
    with pytest.raises(ConversionError, match="has no Stage-II generator"):
        convert(tmp_path / "stage1.ckpt", config, str(tmp_path / "c"))
    with pytest.raises(FileNotFoundError, match="no TensorFlow checkpoint"):
        convert(tmp_path / "nothing.ckpt", config, str(tmp_path / "d"))
    with pytest.raises(ConversionError, match="is not a TensorFlow checkpoint"):
        convert(os.path.join(FIXTURES, "torch_state_dict.pth"), config, str(tmp_path / "e"))
