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
"""

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import ml_collections
import optax

from stackgan_jax import losses, models
from stackgan_jax.models.ca import sample_ca_noise, sample_z
from stackgan_jax.state import GANState, NetState

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
    text_scale: float
    stage1_batch_stats: bool
    seed: int

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "Networks":
        """The networks and update rules of a training config."""
        model, stage = config.model, config.stage
        stage1_bn = config.get("stage1_bn", "batch")
        if stage1_bn not in ("batch", "running"):
            raise ValueError(f"stage1_bn must be 'batch' or 'running', got {stage1_bn!r}")
        return cls(
            generator=models.generator(model, stage),
            discriminator=models.discriminator(model, stage),
            stage1_generator=models.stage1_generator(model) if stage == 2 else None,
            arch=model.arch,
            stage=stage,
            z_dim=model.z_dim,
            condition_dim=model.condition_dim,
            kl_coeff=config.train.kl_coeff,
            text_scale=model.get("text_scale", 1.0),
            stage1_batch_stats=stage1_bn == "batch",
            seed=config.seed,
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
    return out, updates["batch_stats"]


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
) -> tuple[Callable[[Any], Any], Any]:
    """G's forward as a function of its params, and the Stage-I variables after this pass."""
    stage1_image = None
    if nets.stage == 2:
        stage1_image, stage1_variables = stage1_images(
            nets, stage1_variables, embedding, noise, nets.stage1_batch_stats
        )
    inputs = _generator_inputs(nets, stage1_image, embedding, noise)
    stats = state.generator.batch_stats

    def forward(params: Any) -> tuple[tuple[Array, Array, Array], Any]:
        return _apply(nets.generator, {"params": params, "batch_stats": stats}, *inputs)

    return forward, stage1_variables


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


def discriminator_gradients(
    nets: Networks,
    discriminator: NetState,
    batch: Batch,
    fake: Array,
    condition: Array,
) -> tuple[Any, losses.DiscriminatorLoss, Any]:
    """Gradients of the D loss w.r.t. D's params, the loss terms, and D's new batch_stats.

    Args:
      nets: the step's networks.
      discriminator: D's state.
      batch: `image` (and `wrong_image` for `tf`) of the real data.
      fake: generated images (treated as constants).
      condition: D's condition for the batch (see `_d_condition`).
    """
    fake = jax.lax.stop_gradient(fake)

    def loss_fn(params: Any) -> tuple[Array, tuple[losses.DiscriminatorLoss, Any]]:
        stats = discriminator.batch_stats
        real, real_u, real_features, stats = _d_logits(
            nets, params, stats, batch["image"], condition
        )
        if nets.arch == "tf":
            wrong, _, _, stats = _d_logits(nets, params, stats, batch["wrong_image"], condition)
        else:
            wrong, stats = _apply(
                nets.discriminator,
                {"params": params, "batch_stats": stats},
                real_features[:-1],
                condition[1:],
                method="conditional_logits",
            )
        fake_logits, fake_u, _, stats = _d_logits(nets, params, stats, fake, condition)
        loss = losses.discriminator_loss(real, wrong, fake_logits, real_u, fake_u)
        return loss.total, (loss, stats)

    grads, (loss, stats) = jax.grad(loss_fn, has_aux=True)(discriminator.params)
    return grads, loss, stats


class GeneratorLoss(NamedTuple):
    """The G loss and its terms."""

    total: Array
    adversarial: Array
    kl: Array


def generator_loss(
    nets: Networks,
    d_params: Any,
    d_stats: Any,
    outputs: tuple[Array, Array, Array],
    embedding: Array,
) -> tuple[Array, tuple[GeneratorLoss, Any]]:
    """G loss of generator outputs (fake, μ, log σ²) against D: adversarial + kl_coeff · KL."""
    fake, mu, logvar = outputs
    condition = _d_condition(nets, embedding, mu)
    logits, unconditional, _, d_stats = _d_logits(nets, d_params, d_stats, fake, condition)
    adversarial = losses.generator_adversarial_loss(logits, unconditional)
    kl = losses.kl_loss(mu, logvar)
    total = adversarial + nets.kl_coeff * kl
    return total, (GeneratorLoss(total, adversarial, kl), d_stats)


# Name scope of the optimiser updates in the HLO ops' `op_name` metadata (for profiles).
OPTIMIZER_SCOPE = "optimizer"


def _update(
    optimizer: optax.GradientTransformation, net: NetState, grads: Any, batch_stats: Any
) -> NetState:
    with jax.named_scope(OPTIMIZER_SCOPE):
        updates, opt_state = optimizer.update(grads, net.opt_state, net.params)
        return NetState(optax.apply_updates(net.params, updates), batch_stats, opt_state)


def train_step(
    nets: Networks,
    optimizer: optax.GradientTransformation,
    state: GANState,
    batch: Batch,
) -> tuple[GANState, dict[str, Array]]:
    """One iteration: a D update, then a G update against the updated D.

    Args:
      nets: the step's networks (static).
      optimizer: the optimiser of both networks (static).
      state: the training state.
      batch: `image` [B, S, S, 3] in [-1, 1], `embedding` [B, text_dim], and for `tf`
        `wrong_image` [B, S, S, 3].

    Returns:
      The new state and scalar metrics.
    """
    embedding = batch["embedding"] * nets.text_scale
    batch_size = embedding.shape[0]
    d_key, g_key = jax.random.split(jax.random.fold_in(jax.random.key(nets.seed), state.step))

    # D update on a fake made for it.
    noise = sample_noise(nets, d_key, batch_size)
    forward, stage1_variables = _generator_forward(
        nets, state, embedding, noise, state.stage1_generator
    )
    if nets.arch == "tf":
        outputs, g_stats = forward(state.generator.params)
    else:
        outputs, pull_back, g_stats = jax.vjp(forward, state.generator.params, has_aux=True)
    fake, mu, _ = outputs
    d_grads, d_loss, d_stats = discriminator_gradients(
        nets, state.discriminator, batch, fake, _d_condition(nets, embedding, mu)
    )
    discriminator = _update(optimizer, state.discriminator, d_grads, d_stats)

    # G update against the updated D.
    if nets.arch == "tf":
        generator = state.generator.replace(batch_stats=g_stats)
        forward, stage1_variables = _generator_forward(
            nets,
            state.replace(generator=generator),
            embedding,
            sample_noise(nets, g_key, batch_size),
            stage1_variables,
        )

        def loss_fn(params: Any) -> tuple[Array, Any]:
            outputs, g_stats = forward(params)
            total, aux = generator_loss(
                nets, discriminator.params, discriminator.batch_stats, outputs, embedding
            )
            return total, (aux, g_stats)

        g_grads, ((g_loss, d_stats), g_stats) = jax.grad(loss_fn, has_aux=True)(generator.params)
    else:
        output_grads, (g_loss, d_stats) = jax.grad(
            lambda o: generator_loss(
                nets, discriminator.params, discriminator.batch_stats, o, embedding
            ),
            has_aux=True,
        )(outputs)
        (g_grads,) = pull_back(output_grads)
    generator = _update(optimizer, state.generator, g_grads, g_stats)

    new_state = GANState(
        step=state.step + 1,
        generator=generator,
        discriminator=discriminator.replace(batch_stats=d_stats),
        stage1_generator=stage1_variables,
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
    return new_state, metrics


def generate(
    nets: Networks, state: GANState, embedding: Array, noise: Noise
) -> tuple[Array, Array | None]:
    """Images for `embedding` with inference-mode BatchNorm (the stored running averages).

    `embedding` is as the dataset stores it; `nets.text_scale` is applied here, as in training.

    Returns:
      (64×64 images, 256×256 images or None), in [-1, 1]. In Stage-II the 64×64 images are the
      frozen Stage-I generator's.
    """
    embedding = embedding * nets.text_scale
    if nets.stage == 1:
        images, _, _ = nets.generator.apply(
            state.generator.variables, embedding, noise.z, noise.ca, train=False
        )
        return images, None
    low, _ = stage1_images(nets, state.stage1_generator, embedding, noise, train_bn=False)
    high, _, _ = nets.generator.apply(
        state.generator.variables, low, embedding, noise.ca, train=False
    )
    return low, high


def generate_from_key(
    nets: Networks, state: GANState, embedding: Array, key: Array
) -> tuple[Array, Array | None]:
    """`generate` with the noise drawn from `key` by `sample_noise`.

    Sampling and evaluation draw their noise this way, inside the jitted function, so a key and
    embeddings give the same images from a checkpoint as from the training state it saved.
    """
    return generate(nets, state, embedding, sample_noise(nets, key, len(embedding)))
