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
from stackgan_jax import losses, models
from stackgan_jax.models.ca import sample_ca_noise, sample_z
from stackgan_jax.state import GANState, NetState, Optimizers, as_optimizers

Array = jax.Array
Batch = dict[str, Array]


@dataclasses.dataclass(frozen=True)
class Networks:
    """The static part of a step: modules and the hyper-parameters that shape the update."""

    generator: nn.Module
    discriminator: models.Discriminator
    stage1_generator: nn.Module | None
    arch: str
    stage: int
    z_dim: int
    condition_dim: int
    kl_coeff: float
    embedding_norm: embedding_norm_lib.EmbeddingNorm
    stage1_batch_stats: bool
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
    ) -> "Networks":
        """The networks and update rules of a training config.

        Args:
          config: a training config.
          embedding_norm: the embeddings' normalisation with its statistics (from the training
            split or a checkpoint's meta); None for the config's `model.text_scale`, which is
            all a config with `data.embedding_norm='scale'` needs.
        """
        model, stage, train = config.model, config.stage, config.train
        stage1_bn = config.get("stage1_bn", "batch")
        if stage1_bn not in ("batch", "running"):
            raise ValueError(f"stage1_bn must be 'batch' or 'running', got {stage1_bn!r}")
        if embedding_norm is None:
            if embedding_norm_lib.mode_of(config) != "scale":
                raise ValueError(
                    "data.embedding_norm='standardize' needs the training split's statistics"
                )
            embedding_norm = embedding_norm_lib.scaled(model.get("text_scale", 1.0))
        gan_loss = train.get("gan_loss", "bce")
        losses.check_gan_loss(gan_loss)
        augment = tuple(train.get("augment", ()))
        augment_lib.check_policies(augment)
        return cls(
            generator=models.generator(model, stage),
            discriminator=models.discriminator(model, stage),
            stage1_generator=models.stage1_generator(model) if stage == 2 else None,
            arch=model.arch,
            stage=stage,
            z_dim=model.z_dim,
            condition_dim=model.condition_dim,
            kl_coeff=train.kl_coeff,
            embedding_norm=embedding_norm,
            stage1_batch_stats=stage1_bn == "batch",
            seed=config.seed,
            gan_loss=gan_loss,
            ma_gp_weight=train.get("ma_gp_weight", 0.0),
            augment=augment,
            ema_decay=train.get("ema_decay", 0.0),
            contrastive_weight=(
                train.get("contrastive_weight", 1.0) if model.get("d_contrastive", False) else 0.0
            ),
        )


class Noise(NamedTuple):
    """One generator pass's noise: z (the Stage-I generator's), and CA ε of each stage."""

    z: Array
    ca: Array
    stage1_ca: Array | None


def sample_noise(nets: Networks, key: Array, batch: int) -> Noise:
    """Draws the noise of one generator pass with each architecture's distributions."""
    z_key, ca_key, stage1_key = jax.random.split(key, 3)
    stage1_ca = None
    if nets.stage == 2:
        stage1_ca = sample_ca_noise(stage1_key, batch, nets.condition_dim, nets.arch)
    return Noise(
        sample_z(z_key, batch, nets.z_dim),
        sample_ca_noise(ca_key, batch, nets.condition_dim, nets.arch),
        stage1_ca,
    )


def _apply(module: nn.Module, variables: Any, *args: Any, method: str | None = None) -> Any:
    """Train-mode apply that returns (output, updated batch_stats)."""
    out, updates = module.apply(
        variables, *args, train=True, method=method, mutable=["batch_stats"]
    )
    # A network without BatchNorm (D with `d_batch_norm=False`) has no statistics.
    return out, updates.get("batch_stats", {})


def stage1_images(
    nets: Networks, stage1_variables: Any, embedding: Array, noise: Noise, train_bn: bool
) -> tuple[Array, Any]:
    """The frozen Stage-I generator's 64×64 images (no gradient) and its updated variables."""
    inputs = (embedding, noise.z, noise.stage1_ca)
    if not train_bn:
        images, _, _ = nets.stage1_generator.apply(stage1_variables, *inputs, train=False)
        return jax.lax.stop_gradient(images), stage1_variables
    (images, _, _), stats = _apply(nets.stage1_generator, stage1_variables, *inputs)
    return jax.lax.stop_gradient(images), {**stage1_variables, "batch_stats": stats}


def _generator_inputs(nets: Networks, stage1_image: Array | None, embedding: Array, noise: Noise):
    if nets.stage == 1:
        return embedding, noise.z, noise.ca
    return stage1_image, embedding, noise.ca


def _generator_forward(
    nets: Networks, state: GANState, embedding: Array, noise: Noise, stage1_variables: Any
) -> tuple[Callable[[Any], Any], tuple[Array, ...], Any]:
    """G's forward as a function of its params, its inputs, and the Stage-I variables after it."""
    stage1_image = None
    if nets.stage == 2:
        stage1_image, stage1_variables = stage1_images(
            nets, stage1_variables, embedding, noise, nets.stage1_batch_stats
        )
    inputs = _generator_inputs(nets, stage1_image, embedding, noise)
    stats = state.generator.batch_stats

    def forward(params: Any) -> tuple[tuple[Array, Array, Array], Any]:
        return _apply(nets.generator, {"params": params, "batch_stats": stats}, *inputs)

    return forward, inputs, stage1_variables


def _d_condition(nets: Networks, embedding: Array, mu: Array) -> Array:
    """D's condition: the raw embedding (`tf`) or G's CA mean, detached (`pytorch`)."""
    return embedding if nets.arch == "tf" else jax.lax.stop_gradient(mu)


def _d_logits(
    nets: Networks, params: Any, stats: Any, images: Array, condition: Array
) -> tuple[Array, Array | None, Array, Any]:
    """D on one set of images: (conditional logits, unconditional or None, features, stats)."""
    d = nets.discriminator
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


def _augmented(nets: Networks, images: Array, key: Array, index: int) -> Array:
    """`images` through the config's differentiable augmentation (draw `index` of `key`)."""
    if not nets.augment:
        return images
    return augment_lib.augment(images, jax.random.fold_in(key, index), nets.augment)


def gradient_penalty(
    nets: Networks, params: Any, stats: Any, images: Array, condition: Array
) -> Array:
    """DF-GAN's matching-aware gradient penalty of D at real images with their own text."""

    def summed_logits(images: Array, condition: Array) -> Array:
        logits, _, _, _ = _d_logits(nets, params, stats, images, condition)
        return jnp.sum(logits)

    image_grads, condition_grads = jax.grad(summed_logits, argnums=(0, 1))(images, condition)
    return losses.matching_aware_penalty(image_grads, condition_grads, nets.ma_gp_weight)


# XMC-GAN's temperature of the contrastive loss.
CONTRASTIVE_TEMPERATURE = 0.1


def contrastive_term(nets: Networks, params: Any, features: Array, condition: Array) -> Array:
    """The image–sentence contrastive loss of D's features and condition (0 when off)."""
    if not nets.contrastive_weight:
        return jnp.zeros((), jnp.float32)
    image, text = nets.discriminator.apply(
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
    nets: Networks,
    discriminator: NetState,
    batch: Batch,
    fake: Array,
    condition: Array,
    augment_key: Array | None = None,
) -> DiscriminatorGradients:
    """Gradients of the D loss w.r.t. D's params, the loss terms, and D's new batch_stats.

    Args:
      nets: the step's networks.
      discriminator: D's state.
      batch: `image` (and `wrong_image` for `tf`) of the real data.
      fake: generated images (treated as constants).
      condition: D's condition for the batch (see `_d_condition`).
      augment_key: the key of this update's augmentations (used only if `nets.augment`).
    """
    fake = jax.lax.stop_gradient(fake)
    real_images = _augmented(nets, batch["image"], augment_key, 0)
    fake = _augmented(nets, fake, augment_key, 1)

    def loss_fn(params: Any) -> tuple[Array, tuple[losses.DiscriminatorLoss, Any, Array, Array]]:
        stats = discriminator.batch_stats
        real, real_u, real_features, stats = _d_logits(nets, params, stats, real_images, condition)
        if nets.arch == "tf":
            wrong_images = _augmented(nets, batch["wrong_image"], augment_key, 2)
            wrong, _, _, stats = _d_logits(nets, params, stats, wrong_images, condition)
        else:
            wrong, stats = _apply(
                nets.discriminator,
                {"params": params, "batch_stats": stats},
                real_features[:-1],
                condition[1:],
                method="conditional_logits",
            )
        fake_logits, fake_u, _, stats = _d_logits(nets, params, stats, fake, condition)
        loss = losses.discriminator_loss(
            real, wrong, fake_logits, real_u, fake_u, kind=nets.gan_loss
        )
        penalty = jnp.zeros((), jnp.float32)
        if nets.ma_gp_weight:
            penalty = gradient_penalty(
                nets, params, discriminator.batch_stats, real_images, condition
            )
        contrastive = contrastive_term(nets, params, real_features, condition)
        total = loss.total + penalty + nets.contrastive_weight * contrastive
        return total, (loss, stats, penalty, contrastive)

    grads, aux = jax.grad(loss_fn, has_aux=True)(discriminator.params)
    return DiscriminatorGradients(grads, *aux)


class GeneratorLoss(NamedTuple):
    """The G loss and its terms (the contrastive one 0 where off)."""

    total: Array
    adversarial: Array
    kl: Array
    contrastive: Array = 0.0


def generator_loss(
    nets: Networks,
    d_params: Any,
    d_stats: Any,
    outputs: tuple[Array, Array, Array],
    embedding: Array,
    augment_key: Array | None = None,
) -> tuple[Array, tuple[GeneratorLoss, Any]]:
    """G loss of generator outputs (fake, μ, log σ²) against D: adversarial + kl_coeff · KL.

    With `nets.augment`, D sees the fake through the augmentation drawn from `augment_key`.
    """
    fake, mu, logvar = outputs
    condition = _d_condition(nets, embedding, mu)
    fake = _augmented(nets, fake, augment_key, 0)
    logits, unconditional, features, d_stats = _d_logits(nets, d_params, d_stats, fake, condition)
    adversarial = losses.generator_adversarial_loss(logits, unconditional, kind=nets.gan_loss)
    kl = losses.kl_loss(mu, logvar)
    total = adversarial + nets.kl_coeff * kl
    if nets.contrastive_weight:
        contrastive = contrastive_term(nets, d_params, features, condition)
        total = total + nets.contrastive_weight * contrastive
        return total, (GeneratorLoss(total, adversarial, kl, contrastive), d_stats)
    return total, (GeneratorLoss(total, adversarial, kl), d_stats)


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
    nets: Networks, average: Any, params: Any, step: Array, inputs: tuple[Array, ...]
) -> Any:
    """One update of the generator's moving average, weights and BatchNorm statistics.

    The weights: a ← d·a + (1 − d)·θ with d = `ema_decay_at(nets.ema_decay, step)`. The
    BatchNorm running averages must be those of the averaged network (its activations differ
    from the trained network's), so the averaged generator runs once in training mode on this
    step's inputs and keeps its own running-average update; its output is discarded.

    Args:
      nets: the step's networks.
      average: the average's `{'params', 'batch_stats'}`.
      params: the generator's parameters after this step's update.
      step: this update's index.
      inputs: the generator's inputs in this step's G update.

    Returns:
      The new `{'params', 'batch_stats'}` of the average.
    """
    decay = ema_decay_at(nets.ema_decay, step)
    new_params = optax.incremental_update(params, average["params"], 1.0 - decay)
    variables = {"params": new_params, "batch_stats": average["batch_stats"]}
    _, stats = _apply(nets.generator, variables, *inputs)
    return {"params": new_params, "batch_stats": stats}


def train_step(
    nets: Networks,
    optimizer: optax.GradientTransformation | Optimizers,
    state: GANState,
    batch: Batch,
) -> tuple[GANState, dict[str, Array]]:
    """One iteration: a D update, then a G update against the updated D.

    Args:
      nets: the step's networks (static).
      optimizer: the optimiser of both networks, or `Optimizers` with one each (static).
      state: the training state.
      batch: `image` [B, S, S, 3] in [-1, 1], `embedding` [B, text_dim], and for `tf`
        `wrong_image` [B, S, S, 3].

    Returns:
      The new state and scalar metrics.
    """
    optimizers = as_optimizers(optimizer)
    embedding = nets.embedding_norm(batch["embedding"])
    batch_size = embedding.shape[0]
    d_key, g_key = jax.random.split(jax.random.fold_in(jax.random.key(nets.seed), state.step))
    # Augmentation keys apart from the noise keys, so that the noise is the same with or without.
    d_augment_key, g_augment_key = (jax.random.fold_in(k, 1) for k in (d_key, g_key))

    # D update on a fake made for it.
    noise = sample_noise(nets, d_key, batch_size)
    forward, g_inputs, stage1_variables = _generator_forward(
        nets, state, embedding, noise, state.stage1_generator
    )
    if nets.arch == "tf":
        outputs, g_stats = forward(state.generator.params)
    else:
        outputs, pull_back, g_stats = jax.vjp(forward, state.generator.params, has_aux=True)
    fake, mu, _ = outputs
    d_result = discriminator_gradients(
        nets, state.discriminator, batch, fake, _d_condition(nets, embedding, mu), d_augment_key
    )
    d_loss = d_result.loss
    discriminator = _update(
        optimizers.discriminator, state.discriminator, d_result.grads, d_result.batch_stats
    )

    # G update against the updated D.
    if nets.arch == "tf":
        generator = state.generator.replace(batch_stats=g_stats)
        forward, g_inputs, stage1_variables = _generator_forward(
            nets,
            state.replace(generator=generator),
            embedding,
            sample_noise(nets, g_key, batch_size),
            stage1_variables,
        )

        def loss_fn(params: Any) -> tuple[Array, Any]:
            outputs, g_stats = forward(params)
            total, aux = generator_loss(
                nets,
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
            lambda o: generator_loss(
                nets, discriminator.params, discriminator.batch_stats, o, embedding, g_augment_key
            ),
            has_aux=True,
        )(outputs)
        (g_grads,) = pull_back(output_grads)
    generator = _update(optimizers.generator, state.generator, g_grads, g_stats)
    generator_ema = state.generator_ema
    if generator_ema is not None:
        generator_ema = update_ema(nets, generator_ema, generator.params, state.step, g_inputs)

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
    if nets.discriminator.unconditional_head is not None:
        metrics["d_real_unconditional"] = d_loss.real_unconditional
        metrics["d_fake_unconditional"] = d_loss.fake_unconditional
    if nets.ma_gp_weight:
        metrics["d_gradient_penalty"] = d_result.gradient_penalty
    if nets.contrastive_weight:
        metrics["d_contrastive"] = d_result.contrastive
        metrics["g_contrastive"] = g_loss.contrastive
    return new_state, metrics


def generate(
    nets: Networks, state: GANState, embedding: Array, noise: Noise
) -> tuple[Array, Array | None]:
    """Images for `embedding` with inference-mode BatchNorm (the stored running averages).

    `embedding` is as the dataset stores it; `nets.embedding_norm` is applied here, as in
    training. The generator's moving average is used when the state keeps one.

    Returns:
      (64×64 images, 256×256 images or None), in [-1, 1]. In Stage-II the 64×64 images are the
      frozen Stage-I generator's.
    """
    embedding = nets.embedding_norm(embedding)
    variables = state.generator.variables
    if state.generator_ema is not None:
        variables = state.generator_ema
    if nets.stage == 1:
        images, _, _ = nets.generator.apply(variables, embedding, noise.z, noise.ca, train=False)
        return images, None
    low, _ = stage1_images(nets, state.stage1_generator, embedding, noise, train_bn=False)
    high, _, _ = nets.generator.apply(variables, low, embedding, noise.ca, train=False)
    return low, high


def generate_from_key(
    nets: Networks, state: GANState, embedding: Array, key: Array
) -> tuple[Array, Array | None]:
    """`generate` with the noise drawn from `key` by `sample_noise`.

    Sampling and evaluation draw their noise this way, inside the jitted function, so a key and
    embeddings give the same images from a checkpoint as from the training state it saved.
    """
    return generate(nets, state, embedding, sample_noise(nets, key, len(embedding)))
