"""Pure step functions: one alternating D-then-G update per iteration (spec §7–§8).

The two references differ in what they compute once:

- `tf` (the paper's code) evaluates its graph twice per iteration: the D update sees a fake made
  with fresh z and ε, and the G update draws new ones and generates again, against the updated
  D. D runs separately on the real, wrong and fake images.
- `pytorch` generates once per iteration and shares that forward pass: D is updated on the
  detached fake, then G's gradient is taken through the same forward (here with `jax.vjp`)
  against the updated D. D encodes real and fake images once each and reuses the real features
  for the mismatched pairs (features [0..B-2] with conditions [1..B-1]).

BatchNorm: every call normalises with its own batch statistics, as in the references, and every
call's running-average update is kept, in call order (D's averages are never used at inference;
G's are, and they see the same updates the references apply). In Stage-II the frozen Stage-I
generator runs with batch statistics and keeps updating its averages (`stage1_bn='batch'`) or
uses its stored averages (`'running'`).

Noise comes from `fold_in(key(seed), step)`, so a resumed run draws exactly what an
uninterrupted one would.

Embeddings arrive as the dataset stores them and are normalised here, not in the input
pipeline: the normalisation is part of the trained model (its statistics live in the
checkpoint's meta), so every consumer of raw embeddings (this step, `generation.generate` for
samples and evaluation, new sentences) applies the one `Generators.embedding_norm`.

Opt-in departures from the references (all off in the reference presets; DEVIATIONS.md):
embedding standardisation (`embedding_norm`), the hinge loss and DF-GAN's matching-aware
gradient penalty (`gan_loss`, `ma_gp_weight`), XMC-GAN's image–sentence contrastive loss for
D (real pairs) and G (generated pairs) (`contrastive_weight`), differentiable augmentation of
every image D sees (`augment`), and a moving average of G's weights (`ema_decay`; see
`update_ema`).
"""

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from stackgan_jax import augment as augment_lib
from stackgan_jax import embedding_norm as embedding_norm_lib
from stackgan_jax import generation, losses, models
from stackgan_jax.state import GANState, NetState, Optimizers, as_optimizers

Array = jax.Array
Batch = dict[str, Array]


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """The static part of a training step: the networks and the settings that shape the update.

    Attributes:
      generators: the generator modules and their noise (`generation.Generators`).
      discriminator: the stage's discriminator module.
      kl_coeff: the KL term's weight in G's loss.
      stage1_bn: Stage-II: how the frozen Stage-I generator's BatchNorm runs
        (`generation.STAGE1_BN`).
      seed: the noise seed; step s draws from fold_in(key(seed), s).
      gan_loss: 'bce' (the references) or 'hinge'.
      ma_gp_weight: DF-GAN's matching-aware gradient penalty's weight (0: off).
      augment: the differentiable augmentations of every image D sees.
      ema_decay: the moving average of G's weights (0: none).
      contrastive_weight: XMC-GAN's contrastive loss's weight (0: off).
    """

    generators: generation.Generators
    discriminator: models.Discriminator
    kl_coeff: float
    stage1_bn: str
    seed: int
    gan_loss: str = "bce"
    ma_gp_weight: float = 0.0
    augment: tuple[str, ...] = ()
    ema_decay: float = 0.0
    contrastive_weight: float = 0.0

    @classmethod
    def from_config(
        cls,
        config: ml_collections.ConfigDict,
        embedding_norm: embedding_norm_lib.EmbeddingNorm | None = None,
    ) -> "StepConfig":
        """The step of a training config.

        Args:
          config: a training config.
          embedding_norm: the embeddings' normalisation (`generation.Generators.from_config`).
        """
        model, train = config.model, config.train
        stage1_bn = config.get("stage1_bn", "batch")
        generation.check_stage1_bn(stage1_bn)
        gan_loss = train.get("gan_loss", "bce")
        losses.check_gan_loss(gan_loss)
        augment = tuple(train.get("augment", ()))
        augment_lib.check_policies(augment)
        return cls(
            generators=generation.Generators.from_config(config, embedding_norm),
            discriminator=models.discriminator(model, config.stage),
            kl_coeff=train.kl_coeff,
            stage1_bn=stage1_bn,
            seed=config.seed,
            gan_loss=gan_loss,
            ma_gp_weight=train.get("ma_gp_weight", 0.0),
            augment=augment,
            ema_decay=train.get("ema_decay", 0.0),
            contrastive_weight=(
                train.get("contrastive_weight", 1.0) if model.get("d_contrastive", False) else 0.0
            ),
        )

    @property
    def arch(self) -> str:
        """'tf' or 'pytorch'."""
        return self.generators.arch

    @property
    def stage(self) -> int:
        """1 or 2."""
        return self.generators.stage


def _apply(module: nn.Module, variables: Any, *args: Any, method: str | None = None) -> Any:
    """Train-mode apply that returns (output, updated batch_stats)."""
    out, updates = module.apply(
        variables, *args, train=True, method=method, mutable=["batch_stats"]
    )
    # A network without BatchNorm (D with `d_batch_norm=False`) has no statistics.
    return out, updates.get("batch_stats", {})


def _generator_inputs(
    step_config: StepConfig, stage1_image: Array | None, embedding: Array, noise: generation.Noise
):
    if step_config.stage == 1:
        return embedding, noise.z, noise.ca
    return stage1_image, embedding, noise.ca


def _generator_forward(
    step_config: StepConfig,
    state: GANState,
    embedding: Array,
    noise: generation.Noise,
    stage1_variables: Any,
) -> tuple[Callable[[Any], Any], tuple[Array, ...], Any]:
    """G's forward as a function of its params, its inputs, and the Stage-I variables after it."""
    stage1_image = None
    if step_config.stage == 2:
        stage1_image, stage1_variables = generation.stage1_images(
            step_config.generators, stage1_variables, embedding, noise, step_config.stage1_bn
        )
    inputs = _generator_inputs(step_config, stage1_image, embedding, noise)
    stats = state.generator.batch_stats

    def forward(params: Any) -> tuple[tuple[Array, Array, Array], Any]:
        return _apply(
            step_config.generators.generator, {"params": params, "batch_stats": stats}, *inputs
        )

    return forward, inputs, stage1_variables


def _d_condition(step_config: StepConfig, embedding: Array, mu: Array) -> Array:
    """D's condition: the raw embedding (`tf`) or G's CA mean, detached (`pytorch`)."""
    return embedding if step_config.arch == "tf" else jax.lax.stop_gradient(mu)


def _d_logits(
    step_config: StepConfig, params: Any, stats: Any, images: Array, condition: Array
) -> tuple[Array, Array | None, Array, Any]:
    """D on one set of images: (conditional logits, unconditional or None, features, stats)."""
    d = step_config.discriminator
    features, stats = _apply(d, {"params": params, "batch_stats": stats}, images, method="encode")
    logits, stats = _apply(
        d,
        {"params": params, "batch_stats": stats},
        features,
        condition,
        method="conditional_logits",
    )
    unconditional = None
    if d.unconditional_head is not None:
        unconditional = d.apply({"params": params}, features, method="unconditional_logits")
    return logits, unconditional, features, stats


def _augmented(step_config: StepConfig, images: Array, key: Array, index: int) -> Array:
    """`images` through the config's differentiable augmentation (draw `index` of `key`)."""
    if not step_config.augment:
        return images
    return augment_lib.augment(images, jax.random.fold_in(key, index), step_config.augment)


def gradient_penalty(
    step_config: StepConfig, params: Any, stats: Any, images: Array, condition: Array
) -> Array:
    """DF-GAN's matching-aware gradient penalty of D at real images with their own text."""

    def summed_logits(images: Array, condition: Array) -> Array:
        logits, _, _, _ = _d_logits(step_config, params, stats, images, condition)
        return jnp.sum(logits)

    image_grads, condition_grads = jax.grad(summed_logits, argnums=(0, 1))(images, condition)
    return losses.matching_aware_penalty(image_grads, condition_grads, step_config.ma_gp_weight)


# XMC-GAN's temperature of the contrastive loss.
CONTRASTIVE_TEMPERATURE = 0.1


def contrastive_term(
    step_config: StepConfig, params: Any, features: Array, condition: Array
) -> Array:
    """The image–sentence contrastive loss of D's features and condition (0 when off)."""
    if not step_config.contrastive_weight:
        return jnp.zeros((), jnp.float32)
    image, text = step_config.discriminator.apply(
        {"params": params}, features, condition, method="contrastive_embeddings"
    )
    return losses.contrastive_loss(image, text, CONTRASTIVE_TEMPERATURE)


class DiscriminatorGradients(NamedTuple):
    """D's gradients, loss terms and new batch_stats; its MA-GP and contrastive loss (0: off)."""

    grads: Any
    loss: losses.DiscriminatorLoss
    batch_stats: Any
    gradient_penalty: Array
    contrastive: Array = 0.0


def discriminator_gradients(
    step_config: StepConfig,
    discriminator: NetState,
    batch: Batch,
    fake: Array,
    condition: Array,
    augment_key: Array | None = None,
) -> DiscriminatorGradients:
    """Gradients of the D loss w.r.t. D's params, the loss terms, and D's new batch_stats.

    Args:
      step_config: the step's networks.
      discriminator: D's state.
      batch: `image` (and `wrong_image` for `tf`) of the real data.
      fake: generated images (treated as constants).
      condition: D's condition for the batch (see `_d_condition`).
      augment_key: the key of this update's augmentations (used only if `step_config.augment`).
    """
    fake = jax.lax.stop_gradient(fake)
    real_images = _augmented(step_config, batch["image"], augment_key, 0)
    fake = _augmented(step_config, fake, augment_key, 1)

    def loss_fn(params: Any) -> tuple[Array, tuple[losses.DiscriminatorLoss, Any, Array, Array]]:
        stats = discriminator.batch_stats
        real, real_u, real_features, stats = _d_logits(
            step_config, params, stats, real_images, condition
        )
        if step_config.arch == "tf":
            wrong_images = _augmented(step_config, batch["wrong_image"], augment_key, 2)
            wrong, _, _, stats = _d_logits(step_config, params, stats, wrong_images, condition)
        else:
            # StackGAN-Pytorch's mismatched pairs: real features [0..B-2] with conditions
            # [1..B-1], made here because they reuse D's encoding of the real images (`tf`'s
            # wrong images come from the input pipeline; see `input_pipeline.make_dataset`).
            wrong, stats = _apply(
                step_config.discriminator,
                {"params": params, "batch_stats": stats},
                real_features[:-1],
                condition[1:],
                method="conditional_logits",
            )
        fake_logits, fake_u, _, stats = _d_logits(step_config, params, stats, fake, condition)
        loss = losses.discriminator_loss(
            real, wrong, fake_logits, real_u, fake_u, kind=step_config.gan_loss
        )
        penalty = jnp.zeros((), jnp.float32)
        if step_config.ma_gp_weight:
            penalty = gradient_penalty(
                step_config, params, discriminator.batch_stats, real_images, condition
            )
        contrastive = contrastive_term(step_config, params, real_features, condition)
        total = loss.total + penalty + step_config.contrastive_weight * contrastive
        return total, (loss, stats, penalty, contrastive)

    grads, aux = jax.grad(loss_fn, has_aux=True)(discriminator.params)
    return DiscriminatorGradients(grads, *aux)


def generator_objective(
    step_config: StepConfig,
    d_params: Any,
    d_stats: Any,
    outputs: tuple[Array, Array, Array],
    embedding: Array,
    augment_key: Array | None = None,
) -> tuple[Array, tuple[losses.GeneratorLoss, Any]]:
    """G's loss (`losses.generator_loss`) of generator outputs (fake, μ, log σ²) against D.

    With `step_config.augment`, D sees the fake through the augmentation drawn from `augment_key`.

    Returns:
      (the total, (the loss terms, D's batch_stats after the pass)).
    """
    fake, mu, logvar = outputs
    condition = _d_condition(step_config, embedding, mu)
    fake = _augmented(step_config, fake, augment_key, 0)
    logits, unconditional, features, d_stats = _d_logits(
        step_config, d_params, d_stats, fake, condition
    )
    contrastive = None
    if step_config.contrastive_weight:
        contrastive = contrastive_term(step_config, d_params, features, condition)
    loss = losses.generator_loss(
        logits,
        unconditional,
        mu,
        logvar,
        kl_coeff=step_config.kl_coeff,
        kind=step_config.gan_loss,
        contrastive=contrastive,
        contrastive_weight=step_config.contrastive_weight,
    )
    return loss.total, (loss, d_stats)


# Name scope of the optimiser updates in the HLO ops' `op_name` metadata (for profiles).
OPTIMIZER_SCOPE = "optimizer"


def _update(
    optimizer: optax.GradientTransformation, net: NetState, grads: Any, batch_stats: Any
) -> NetState:
    with jax.named_scope(OPTIMIZER_SCOPE):
        updates, opt_state = optimizer.update(grads, net.opt_state, net.params)
        return NetState(optax.apply_updates(net.params, updates), batch_stats, opt_state)


def ema_decay_at(decay: float, step: Array) -> Array:
    """The average's decay at update `step` (0-based): min(decay, (1 + step) / (10 + step)).

    TF's `ExponentialMovingAverage(num_updates=step)` warm-up: early averages forget their
    random start quickly, later ones average over ~1 / (1 − decay) steps.
    """
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def update_ema(
    step_config: StepConfig, average: Any, params: Any, step: Array, inputs: tuple[Array, ...]
) -> Any:
    """One update of the generator's moving average, weights and BatchNorm statistics.

    The weights: a ← d·a + (1 − d)·θ with d = `ema_decay_at(step_config.ema_decay, step)`. The
    BatchNorm running averages must be those of the averaged network (its activations differ
    from the trained network's), so the averaged generator runs once in training mode on this
    step's inputs and keeps its own running-average update; its output is discarded.

    Args:
      step_config: the step's networks.
      average: the average's `{'params', 'batch_stats'}`.
      params: the generator's parameters after this step's update.
      step: this update's index.
      inputs: the generator's inputs in this step's G update.

    Returns:
      The new `{'params', 'batch_stats'}` of the average.
    """
    decay = ema_decay_at(step_config.ema_decay, step)
    new_params = optax.incremental_update(params, average["params"], 1.0 - decay)
    variables = {"params": new_params, "batch_stats": average["batch_stats"]}
    _, stats = _apply(step_config.generators.generator, variables, *inputs)
    return {"params": new_params, "batch_stats": stats}


def train_step(
    step_config: StepConfig,
    optimizer: optax.GradientTransformation | Optimizers,
    state: GANState,
    batch: Batch,
) -> tuple[GANState, dict[str, Array]]:
    """One iteration: a D update, then a G update against the updated D.

    Args:
      step_config: the step's networks (static).
      optimizer: the optimiser of both networks, or `Optimizers` with one each (static).
      state: the training state.
      batch: `image` [B, S, S, 3] in [-1, 1], `embedding` [B, text_dim], and for `tf`
        `wrong_image` [B, S, S, 3].

    Returns:
      The new state and scalar metrics.
    """
    optimizers = as_optimizers(optimizer)
    embedding = step_config.generators.embedding_norm(batch["embedding"])
    batch_size = embedding.shape[0]
    d_key, g_key = jax.random.split(
        jax.random.fold_in(jax.random.key(step_config.seed), state.step)
    )
    # Augmentation keys apart from the noise keys, so that the noise is the same with or without.
    d_augment_key, g_augment_key = (jax.random.fold_in(k, 1) for k in (d_key, g_key))

    # D update on a fake made for it.
    noise = generation.sample_noise(step_config.generators, d_key, batch_size)
    forward, g_inputs, stage1_variables = _generator_forward(
        step_config, state, embedding, noise, state.stage1_generator
    )
    if step_config.arch == "tf":
        outputs, g_stats = forward(state.generator.params)
    else:
        outputs, pull_back, g_stats = jax.vjp(forward, state.generator.params, has_aux=True)
    fake, mu, _ = outputs
    d_result = discriminator_gradients(
        step_config,
        state.discriminator,
        batch,
        fake,
        _d_condition(step_config, embedding, mu),
        d_augment_key,
    )
    d_loss = d_result.loss
    discriminator = _update(
        optimizers.discriminator, state.discriminator, d_result.grads, d_result.batch_stats
    )

    # G update against the updated D.
    if step_config.arch == "tf":
        generator = state.generator.replace(batch_stats=g_stats)
        forward, g_inputs, stage1_variables = _generator_forward(
            step_config,
            state.replace(generator=generator),
            embedding,
            generation.sample_noise(step_config.generators, g_key, batch_size),
            stage1_variables,
        )

        def loss_fn(params: Any) -> tuple[Array, Any]:
            outputs, g_stats = forward(params)
            total, aux = generator_objective(
                step_config,
                discriminator.params,
                discriminator.batch_stats,
                outputs,
                embedding,
                g_augment_key,
            )
            return total, (aux, g_stats)

        g_grads, ((g_loss, d_stats), g_stats) = jax.grad(loss_fn, has_aux=True)(generator.params)
    else:
        output_grads, (g_loss, d_stats) = jax.grad(
            lambda o: generator_objective(
                step_config,
                discriminator.params,
                discriminator.batch_stats,
                o,
                embedding,
                g_augment_key,
            ),
            has_aux=True,
        )(outputs)
        (g_grads,) = pull_back(output_grads)
    generator = _update(optimizers.generator, state.generator, g_grads, g_stats)
    generator_ema = state.generator_ema
    if generator_ema is not None:
        generator_ema = update_ema(
            step_config, generator_ema, generator.params, state.step, g_inputs
        )

    new_state = GANState(
        step=state.step + 1,
        generator=generator,
        discriminator=discriminator.replace(batch_stats=d_stats),
        stage1_generator=stage1_variables,
        generator_ema=generator_ema,
    )
    metrics = {
        "d_loss": d_loss.total,
        "d_real": d_loss.real,
        "d_wrong": d_loss.wrong,
        "d_fake": d_loss.fake,
        "g_loss": g_loss.total,
        "g_adversarial": g_loss.adversarial,
        "kl": g_loss.kl,
    }
    if step_config.discriminator.unconditional_head is not None:
        metrics["d_real_unconditional"] = d_loss.real_unconditional
        metrics["d_fake_unconditional"] = d_loss.fake_unconditional
    if step_config.ma_gp_weight:
        metrics["d_gradient_penalty"] = d_result.gradient_penalty
    if step_config.contrastive_weight:
        metrics["d_contrastive"] = d_result.contrastive
        metrics["g_contrastive"] = g_loss.contrastive
    return new_state, metrics
