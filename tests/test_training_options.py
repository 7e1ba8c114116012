"""The opt-in training improvements, each against an independent computation.

Embedding standardisation, the generator's moving average (weights and BatchNorm statistics),
the projection term, separate learning rates, augmentation of every image D sees and the
matching-aware gradient penalty; and the reference presets, which keep every one of them off.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import debug_config as debug_run_config
from conftest import eval_config
from test_steps import (
    BATCH,
    LR,
    assert_trees_close,
    debug_config,
    make_batch,
    one_device_mesh,
    recording,
    run_step,
    sampled_images,
)

from configs import stage1 as stage1_configs
from configs import stage2 as stage2_configs
from stackgan_jax import (
    augment,
    checkpointing,
    evaluate,
    generation,
    inference,
    losses,
    models,
    parallel,
    steps,
    train,
)
from stackgan_jax import embedding_norm as embedding_norm_lib
from stackgan_jax import state as state_lib
from stackgan_jax.data import source as source_lib
from stackgan_jax.models.stage1 import ContrastiveHead, Projection

REFERENCE_PRESETS = ("birds", "flowers", "birds_pytorch", "coco")


@pytest.mark.parametrize("name", REFERENCE_PRESETS)
def test_reference_presets_keep_every_option_off(name):
    for configs in (stage1_configs, stage2_configs):
        config = configs.get_config(name)
        assert config.data.embedding_norm == "scale" and config.data.text_scale == 1.0
        assert config.model.d_projection is False
        assert config.train.gan_loss == "bce" and config.train.ma_gp_weight == 0.0
        assert config.train.augment == () and config.train.ema_decay == 0.0
        assert config.train.g_learning_rate is None and config.train.d_learning_rate is None
        assert state_lib.learning_rates(config.train) == (2e-4, 2e-4)


# --- Embedding standardisation ------------------------------------------------------------


def test_training_statistics_cover_each_valid_caption_once():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(3, 4, 5)).astype(np.float32)
    num_captions = np.array([4, 2, 1])
    mean, std = embedding_norm_lib.training_statistics(embeddings, num_captions)
    rows = [embeddings[i, c] for i in range(3) for c in range(num_captions[i])]
    assert len(rows) == 7
    np.testing.assert_allclose(mean, np.mean(rows, axis=0), rtol=1e-6)
    np.testing.assert_allclose(std, np.std(rows, axis=0), rtol=1e-5)


def test_standardisation_and_its_meta_round_trip():
    mean, std = np.array([1.0, -2.0, 0.5, 0.0]), np.array([2.0, 0.5, 4.0, 1e-9])
    norm = embedding_norm_lib.standardized(mean, std)
    x = np.array([[3.0, -1.0, 0.5, 0.3]], np.float32)
    # (x − m) / s, the last std floored at 0.1 × the median std (0.1 × 1.25).
    want = [[1.0, 2.0, 0.0, 2.4]]
    np.testing.assert_allclose(norm(jnp.asarray(x)), want, rtol=1e-6)
    again = embedding_norm_lib.from_meta(
        {embedding_norm_lib.META_KEY: embedding_norm_lib.to_meta(norm)}
    )
    assert again.mode == "standardize"
    np.testing.assert_array_equal(again.scale, norm.scale)
    np.testing.assert_array_equal(again.shift, norm.shift)
    # A checkpoint from before the field (and before text_scale moved to config.data): the
    # config's text_scale, as reading the checkpoint's meta gives it.
    meta = {"config": {"model": {"text_scale": 3.0}, "data": {}}, "model": {"text_scale": 3.0}}
    meta = checkpointing.upgrade_meta(meta)
    assert meta == {"config": {"model": {}, "data": {"text_scale": 3.0}}, "model": {}}
    old = embedding_norm_lib.from_meta(meta)
    assert old.mode == "scale"
    np.testing.assert_allclose(old(jnp.asarray(x)), 3.0 * x)


def test_standardised_step_equals_the_reference_step_on_standardised_embeddings():
    config = debug_config("tf")
    batch = make_batch(config)
    standardized = debug_config("tf")
    standardized.data.embedding_norm = "standardize"
    rng = np.random.default_rng(5)
    mean = rng.normal(size=config.model.text_dim).astype(np.float32)
    # Powers of two: (e − m) · (1/s) is then exactly NumPy's (e − m) / s.
    std = (2.0 ** rng.integers(-1, 3, config.model.text_dim)).astype(np.float32)
    norm = embedding_norm_lib.standardized(mean, std)
    with pytest.raises(ValueError, match="statistics"):
        steps.StepConfig.from_config(standardized)
    step_config = steps.StepConfig.from_config(standardized, norm)
    optimizer = recording(optax.sgd(LR))
    mesh = one_device_mesh()
    replicated = parallel.replicated(mesh)
    state = jax.jit(
        functools.partial(state_lib.create_state, standardized, optimizer=optimizer),
        out_shardings=replicated,
    )(jax.random.key(1))
    new = jax.jit(functools.partial(steps.train_step, step_config, optimizer))(state, batch)[0]
    want_batch = {**batch, "embedding": (batch["embedding"] - mean) / std}
    _, want_new, _ = run_step(config, optimizer, mesh, want_batch)
    assert_trees_close(new.generator.opt_state[1], want_new.generator.opt_state[1])
    assert_trees_close(new.discriminator.opt_state[1], want_new.discriminator.opt_state[1])
    noise = generation.sample_noise(step_config.generators, jax.random.key(0), BATCH)
    images = sampled_images(step_config.generators, new, batch["embedding"], noise)
    want_generators = generation.Generators.from_config(config)
    want = sampled_images(want_generators, new, want_batch["embedding"], noise)
    np.testing.assert_allclose(images, want, rtol=1e-5, atol=1e-6)


# --- Separate learning rates ----------------------------------------------------------------


def test_separate_learning_rates_give_adams_first_step_of_each_size():
    config = debug_config("tf")
    config.train.g_learning_rate = 1e-3
    config.train.d_learning_rate = 3e-3
    optimizers = state_lib.make_optimizers(config.train, steps_per_epoch=10)
    assert isinstance(optimizers, state_lib.Optimizers)
    initial, new, _ = run_step(config, optimizers, one_device_mesh(), make_batch(config))
    for net, rate in (("generator", 1e-3), ("discriminator", 3e-3)):
        before = jax.tree.leaves(getattr(initial, net).params)
        after = jax.tree.leaves(getattr(new, net).params)
        steps_taken = np.concatenate([np.ravel(b - a) for a, b in zip(before, after, strict=True)])
        # Adam's first step is lr · g / (|g| + ε): lr · sign(g) wherever |g| ≫ ε = 1e-8.
        assert np.max(np.abs(steps_taken)) == pytest.approx(rate, rel=1e-3)
    same = debug_config("tf")
    assert not isinstance(state_lib.make_optimizers(same.train, 10), state_lib.Optimizers)


# --- Projection discriminator ---------------------------------------------------------------


def test_projection_is_pooled_features_dot_projected_text():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(3, 4, 4, 6)).astype(np.float32)
    condition = rng.normal(size=(3, 5)).astype(np.float32)
    projection = Projection()
    params = projection.init(jax.random.key(0), features, condition)
    kernel = np.asarray(params["params"]["fc"]["kernel"], np.float64)
    assert kernel.shape == (5, 6) and set(params["params"]["fc"]) == {"kernel"}
    want = np.sum(features.mean(axis=(1, 2)) * (condition @ kernel), axis=1)
    np.testing.assert_allclose(projection.apply(params, features, condition), want, rtol=1e-5)


@pytest.mark.parametrize("arch", ["tf", "pytorch"])
def test_discriminator_adds_the_projection_to_its_conditional_logits(arch):
    config = debug_config(arch)
    config.model.d_projection = True
    d = models.discriminator(config.model, 1)
    plain = models.discriminator(debug_config(arch).model, 1)
    inputs = models.discriminator_inputs(config.model, 1, 4)
    rng = np.random.default_rng(3)
    inputs = tuple(jnp.asarray(rng.normal(size=x.shape), jnp.float32) for x in inputs)
    variables = models.init_variables(d, jax.random.key(0), inputs)
    assert "projection" in variables["params"]
    apply = functools.partial(d.apply, variables, mutable=["batch_stats"])
    features, _ = apply(inputs[0], method="encode")
    logits, _ = apply(features, inputs[1], method="conditional_logits")
    plain_variables = {
        "params": {k: v for k, v in variables["params"].items() if k != "projection"},
        "batch_stats": variables["batch_stats"],
    }
    head, _ = plain.apply(
        plain_variables, features, inputs[1], method="conditional_logits", mutable=["batch_stats"]
    )
    extra = Projection().apply({"params": variables["params"]["projection"]}, features, inputs[1])
    np.testing.assert_allclose(logits, head + extra, rtol=1e-5, atol=1e-6)


def test_contrastive_head_embeds_pooled_features_and_text_on_the_unit_sphere():
    rng = np.random.default_rng(7)
    features = rng.normal(size=(3, 4, 4, 6)).astype(np.float32)
    condition = rng.normal(size=(3, 5)).astype(np.float32)
    head = ContrastiveHead(dim=4)
    params = head.init(jax.random.key(0), features, condition)["params"]
    image, text = head.apply({"params": params}, features, condition)

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    fc = {k: {n: np.asarray(v, np.float64) for n, v in p.items()} for k, p in params.items()}
    want_image = unit(
        features.mean(axis=(1, 2)) @ fc["image_fc"]["kernel"] + fc["image_fc"]["bias"]
    )
    want_text = unit(condition @ fc["text_fc"]["kernel"] + fc["text_fc"]["bias"])
    np.testing.assert_allclose(image, want_image, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(text, want_text, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["tf", "pytorch"])
def test_contrastive_loss_enters_d_on_real_pairs_and_g_on_generated_ones(arch):
    config = debug_config(arch)
    config.model.d_contrastive = True
    config.train.contrastive_weight = 0.7
    step_config = steps.StepConfig.from_config(config)
    assert step_config.contrastive_weight == 0.7
    discriminator = d_state(config)
    batch = {k: jnp.asarray(v) for k, v in make_batch(config).items()}
    fake = jnp.asarray(make_batch(config, seed=3)["image"])
    condition = batch["embedding"][:, : models.discriminator_condition_dim(config.model)]
    got = steps.discriminator_gradients(step_config, discriminator, batch, fake, condition)
    # Written out: D's features of the real images, its two embeddings, InfoNCE with τ = 0.1.
    variables = discriminator.variables
    features, _ = step_config.discriminator.apply(
        variables, batch["image"], method="encode", mutable=["batch_stats"]
    )
    image, text = step_config.discriminator.apply(
        variables, features, condition, method="contrastive_embeddings"
    )
    want = losses.contrastive_loss(image, text, 0.1)
    assert float(got.contrastive) == pytest.approx(float(want), rel=1e-5)
    plain = dataclasses.replace(step_config, contrastive_weight=0.0)
    without = steps.discriminator_gradients(plain, discriminator, batch, fake, condition)

    def weighted_contrastive(params):
        encoded, _ = step_config.discriminator.apply(
            {**variables, "params": params},
            batch["image"],
            method="encode",
            mutable=["batch_stats"],
        )
        return 0.7 * steps.contrastive_term(step_config, params, encoded, condition)

    extra = jax.grad(weighted_contrastive)(discriminator.params)
    assert_trees_close(got.grads, jax.tree.map(jnp.add, without.grads, extra), 1e-4, 1e-6)
    # G: the same loss on the generated images' features, added with the same weight.
    outputs = (fake, condition[:, : config.model.condition_dim], jnp.zeros_like(condition[:, :1]))
    total, (g_loss, _) = steps.generator_objective(
        step_config, discriminator.params, discriminator.batch_stats, outputs, batch["embedding"]
    )
    assert float(total) == pytest.approx(
        float(g_loss.adversarial + step_config.kl_coeff * g_loss.kl + 0.7 * g_loss.contrastive),
        rel=1e-5,
    )
    assert float(g_loss.contrastive) > 0


# --- Augmentation and the gradient penalty inside the step ----------------------------------


def d_state(config, key=1):
    optimizer = optax.sgd(LR)
    state = jax.jit(functools.partial(state_lib.create_state, config, optimizer=optimizer))(
        jax.random.key(key)
    )
    return state.discriminator


@pytest.mark.parametrize("arch", ["tf", "pytorch"])
def test_d_sees_real_wrong_and_fake_images_each_through_its_own_augmentation(arch):
    config = debug_config(arch)
    config.train.augment = ("translation", "cutout")
    config.train.gan_loss = "hinge"
    step_config = steps.StepConfig.from_config(config)
    batch = {k: jnp.asarray(v) for k, v in make_batch(config).items()}
    fake = jnp.asarray(make_batch(config, seed=9)["image"])
    condition = (
        batch["embedding"]
        if arch == "tf"
        else jnp.asarray(np.random.default_rng(4).normal(size=(BATCH, config.model.condition_dim)))
    )
    discriminator = d_state(config)
    key = jax.random.key(11)
    got = steps.discriminator_gradients(
        step_config, discriminator, batch, fake, condition, key
    ).loss

    # The same loss written out: image set i through augment(·, fold_in(key, i)).
    def seen(images, index):
        return augment.augment(images, jax.random.fold_in(key, index), config.train.augment)

    d = step_config.discriminator
    variables = discriminator.variables

    def encode(images):
        features, _ = d.apply(variables, images, method="encode", mutable=["batch_stats"])
        return features

    def logits(features, condition):
        out, _ = d.apply(
            variables, features, condition, method="conditional_logits", mutable=["batch_stats"]
        )
        return np.asarray(out, np.float64)

    real_features = encode(seen(batch["image"], 0))
    real = logits(real_features, condition)
    fake_logits = logits(encode(seen(fake, 1)), condition)
    if arch == "tf":
        wrong = logits(encode(seen(batch["wrong_image"], 2)), condition)
    else:
        wrong = logits(real_features[:-1], condition[1:])
    hinge = lambda x, s: np.mean(np.maximum(0, 1 - s * x))  # noqa: E731
    want = hinge(real, 1) + 0.5 * (hinge(wrong, -1) + hinge(fake_logits, -1))
    # BatchNorm's running statistics differ in call order, not the logits: batch statistics.
    assert float(got.total) == pytest.approx(want, rel=1e-5)
    plain = steps.StepConfig.from_config(debug_config(arch))
    plain = dataclasses.replace(plain, gan_loss="hinge")
    unaugmented = steps.discriminator_gradients(plain, discriminator, batch, fake, condition, key)
    assert abs(float(unaugmented.loss.total) - want) > 1e-3


def test_gradient_penalty_uses_ds_gradient_in_image_and_text():
    config = debug_config("tf")
    config.train.ma_gp_weight = 2.0
    step_config = steps.StepConfig.from_config(config)
    discriminator = d_state(config)
    rng = np.random.default_rng(6)
    images = jnp.asarray(rng.uniform(-1, 1, (BATCH, 64, 64, 3)), jnp.float32)
    condition = jnp.asarray(rng.normal(size=(BATCH, config.model.text_dim)), jnp.float32)
    params, stats = discriminator.params, discriminator.batch_stats

    def summed(x, c):
        logits, _, _, _ = steps._d_logits(step_config, params, stats, x, c)
        return jnp.sum(logits)

    # The gradient the penalty takes, checked by central differences along random directions.
    grad_x, grad_c = jax.grad(summed, argnums=(0, 1))(images, condition)
    for seed in range(3):
        direction = np.random.default_rng(seed)
        vx, vc = direction.normal(size=images.shape), direction.normal(size=condition.shape)
        # A unit direction and a small step, so the difference crosses few LeakyReLU kinks.
        length = np.sqrt(np.sum(vx**2) + np.sum(vc**2))
        vx, vc = (jnp.asarray(v / length, jnp.float32) for v in (vx, vc))
        h = 1e-2
        numeric = (
            summed(images + h * vx, condition + h * vc)
            - summed(images - h * vx, condition - h * vc)
        ) / (2 * h)
        analytic = jnp.sum(grad_x * vx) + jnp.sum(grad_c * vc)
        assert float(numeric) == pytest.approx(float(analytic), rel=2e-2)
    norms = np.sqrt(
        np.sum(np.asarray(grad_x, np.float64).reshape(BATCH, -1) ** 2, axis=1)
        + np.sum(np.asarray(grad_c, np.float64) ** 2, axis=1)
    )
    penalty = steps.gradient_penalty(step_config, params, stats, images, condition)
    assert float(penalty) == pytest.approx(2.0 * np.mean(norms**6), rel=1e-4)
    # In the D update it is added to the loss being differentiated.
    batch = {k: jnp.asarray(v) for k, v in make_batch(config).items()}
    fake = jnp.asarray(make_batch(config, seed=3)["image"])
    with_gp = steps.discriminator_gradients(step_config, discriminator, batch, fake, condition)
    without = steps.discriminator_gradients(
        dataclasses.replace(step_config, ma_gp_weight=0.0), discriminator, batch, fake, condition
    )
    gp_grads = jax.grad(
        lambda p: steps.gradient_penalty(step_config, p, stats, batch["image"], condition)
    )(params)
    want = jax.tree.map(jnp.add, without.grads, gp_grads)
    assert_trees_close(with_gp.grads, want, rtol=1e-4, atol=1e-6)
    assert float(with_gp.gradient_penalty) > 0 and float(without.gradient_penalty) == 0


# --- The generator's moving average ---------------------------------------------------------


def test_moving_average_weights_and_batchnorm_statistics():
    config = debug_config("tf")
    config.train.ema_decay = 0.5
    batch = make_batch(config)
    # A small step: the NumPy forward below must stay in float range.
    optimizer = recording(optax.sgd(1e-3))
    step_config = steps.StepConfig.from_config(config)
    state0 = jax.jit(functools.partial(state_lib.create_state, config, optimizer=optimizer))(
        jax.random.key(1)
    )
    step = jax.jit(functools.partial(steps.train_step, step_config, optimizer))
    state1, _ = step(state0, batch)
    state2, _ = step(state1, batch)
    theta = [jax.device_get(s.generator.params) for s in (state0, state1, state2)]
    # TF's warm-up: the decay of update t is min(0.5, (1 + t) / (10 + t)): 0.1, then 2/11.
    d0, d1 = 0.1, 2 / 11
    want1 = jax.tree.map(lambda a, b: d0 * a + (1 - d0) * b, theta[0], theta[1])
    want2 = jax.tree.map(lambda a, b: d1 * a + (1 - d1) * b, want1, theta[2])
    assert_trees_close(state1.generator_ema["params"], want1, rtol=1e-6, atol=1e-7)
    assert_trees_close(state2.generator_ema["params"], want2, rtol=1e-6, atol=1e-7)

    # Its first BatchNorm's running mean after update 1, in NumPy: 0.9 · 0 + 0.1 · batch mean
    # of the averaged network's FC output on the G update's inputs.
    params = jax.tree.map(lambda x: np.asarray(x, np.float64), want1)
    _, g_key = jax.random.split(jax.random.fold_in(jax.random.key(config.seed), 0))
    noise = jax.device_get(generation.sample_noise(step_config.generators, g_key, BATCH))
    ca = params["ca"]["fc"]
    h = batch["embedding"] @ ca["kernel"] + ca["bias"]
    h = np.where(h > 0, h, 0.2 * h)
    mu, log_sigma = np.split(h, 2, axis=1)
    condition = mu + np.exp(log_sigma) * noise.ca
    fc = params["fc"]
    x = np.concatenate([condition, noise.z], axis=1) @ fc["kernel"] + fc["bias"]
    stats = state1.generator_ema["batch_stats"]["fc_bn"]
    np.testing.assert_allclose(stats["mean"], 0.1 * x.mean(axis=0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * x.var(axis=0), rtol=1e-4)
    # The trained generator's own statistics are another network's: they differ.
    assert not np.allclose(state1.generator.batch_stats["fc_bn"]["mean"], stats["mean"])

    # Generation uses the average.
    noise = generation.sample_noise(step_config.generators, jax.random.key(4), BATCH)
    images = sampled_images(step_config.generators, state2, batch["embedding"], noise)
    want, _, _ = step_config.generators.generator.apply(
        state2.generator_ema, batch["embedding"], noise.z, noise.ca, train=False
    )
    np.testing.assert_array_equal(images, want)


@pytest.mark.slow
def test_standardised_ema_run_end_to_end(data_dir, tmp_path):
    """Checkpoints keep the average and the statistics; sample, evaluate and Stage-II use them."""
    config = debug_run_config(1, data_dir, num_steps=2)
    config.train.ema_decay = 0.9
    config.data.embedding_norm = "standardize"
    workdir = str(tmp_path / "stage1")
    state = train.train_and_evaluate(config, workdir)

    source = source_lib.load_split(config.data.dataset, "train", data_dir, text_dim=384)
    valid = [
        source.embeddings[i, c] for i in range(len(source)) for c in range(source.num_captions[i])
    ]
    mean, std = np.mean(valid, axis=0), np.std(valid, axis=0)
    manager = checkpointing.make_manager(workdir, read_only=True)
    meta = checkpointing.read_meta(manager, 2)
    stored = meta[embedding_norm_lib.META_KEY]
    np.testing.assert_allclose(stored["shift"], mean, rtol=1e-5, atol=1e-6)
    floored = np.maximum(std, 0.1 * np.median(std))
    np.testing.assert_allclose(1 / np.asarray(stored["scale"]), floored, rtol=1e-5)

    model = inference.load(workdir)
    assert model.uses_ema
    for key in ("params", "batch_stats"):
        for a, b in zip(
            jax.tree.leaves(model.generator[key]),
            jax.tree.leaves(state.generator_ema[key]),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
    sentences = np.asarray(source.embeddings[:3, 0])
    key = jax.random.key(5)
    low, _ = inference.generate(model, sentences, key)
    step_config = steps.StepConfig.from_config(config, embedding_norm_lib.scaled(1.0))
    noise = generation.sample_noise(step_config.generators, key, 3)
    want, _, _ = step_config.generators.generator.apply(
        state.generator_ema, (sentences - mean) / floored, noise.z, noise.ca, train=False
    )
    np.testing.assert_allclose(low, want, rtol=1e-4, atol=1e-5)
    report = evaluate.evaluate(workdir, eval_config(["attributes"], num_samples=8, batch_size=8))
    assert report["generator"] == "moving average (generator_ema)"

    stage2 = debug_run_config(2, data_dir, num_steps=1, stage1_workdir=workdir)
    stage2.data.embedding_norm = "standardize"
    stage2_state = train.train_and_evaluate(stage2, str(tmp_path / "stage2"))
    for a, b in zip(
        jax.tree.leaves(stage2_state.stage1_generator["params"]),
        jax.tree.leaves(state.generator_ema["params"]),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    # A Stage-II config that scales instead does not fit this Stage-I run.
    mismatched = debug_run_config(2, data_dir, num_steps=1, stage1_workdir=workdir)
    with pytest.raises(checkpointing.CheckpointMismatchError, match="embedding_norm"):
        train.train_and_evaluate(mismatched, str(tmp_path / "mismatched"))
