"""StackGAN losses (spec §7) on discriminator logits, and the opt-in alternatives.

Both references use binary cross-entropy with hard 0/1 targets: `tf` on logits, `pytorch` as
`BCELoss` on sigmoid outputs. Here it is always the log-sigmoid form on logits, equal in value to
the `pytorch` one (which only clamps log at −100) and stable for large logits.

`config.train.gan_loss='hinge'` swaps in the hinge loss of DF-GAN (Tao et al., CVPR 2022) with
the same weighting of the terms, and `config.train.ma_gp_weight` adds DF-GAN's matching-aware
gradient penalty (`matching_aware_penalty`); neither is part of StackGAN.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from stackgan_jax.errors import ConfigError

Array = jax.Array


def bce_with_logits(logits: Array, target: float) -> Array:
    """Mean binary cross-entropy of `logits` against a constant 0/1 `target`."""
    logits = logits.astype(jnp.float32)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)))


GAN_LOSSES = ("bce", "hinge")


def check_gan_loss(kind: str) -> None:
    """Raises ValueError for an unknown `config.train.gan_loss`."""
    if kind not in GAN_LOSSES:
        raise ConfigError(f"train.gan_loss must be one of {GAN_LOSSES}, got {kind!r}")


def hinge(logits: Array, target: float) -> Array:
    """Mean hinge loss: mean(relu(1 − x)) for target 1 (real), mean(relu(1 + x)) for 0."""
    logits = logits.astype(jnp.float32)
    sign = 1.0 if target else -1.0
    return jnp.mean(jax.nn.relu(1.0 - sign * logits))


_D_TERMS = {"bce": bce_with_logits, "hinge": hinge}


class DiscriminatorLoss(NamedTuple):
    """The D loss and its terms (unconditional terms are 0 where the arch has none)."""

    total: Array
    real: Array
    wrong: Array
    fake: Array
    real_unconditional: Array
    fake_unconditional: Array


def discriminator_loss(
    real_logits: Array,
    wrong_logits: Array,
    fake_logits: Array,
    real_unconditional_logits: Array | None = None,
    fake_unconditional_logits: Array | None = None,
    kind: str = "bce",
) -> DiscriminatorLoss:
    """The D loss: real + ½(wrong + fake), or ½(real + real_u) + ⅓(fake + wrong + fake_u).

    The second form applies when unconditional logits are given (`pytorch` Stage-II).

    Args:
      real_logits: D(real image, its text).
      wrong_logits: D(mismatched image and text).
      fake_logits: D(generated image, its text).
      real_unconditional_logits: U(real image), or None.
      fake_unconditional_logits: U(generated image), or None.
      kind: each term's loss, 'bce' (the references) or 'hinge'.

    Returns:
      The total and each term.
    """
    term = _D_TERMS[kind]
    real = term(real_logits, 1.0)
    wrong = term(wrong_logits, 0.0)
    fake = term(fake_logits, 0.0)
    if real_unconditional_logits is None:
        zero = jnp.zeros((), jnp.float32)
        return DiscriminatorLoss(real + 0.5 * (wrong + fake), real, wrong, fake, zero, zero)
    real_u = term(real_unconditional_logits, 1.0)
    fake_u = term(fake_unconditional_logits, 0.0)
    total = 0.5 * (real + real_u) + (fake + wrong + fake_u) / 3.0
    return DiscriminatorLoss(total, real, wrong, fake, real_u, fake_u)


def generator_adversarial_loss(
    fake_logits: Array, fake_unconditional_logits: Array | None = None, kind: str = "bce"
) -> Array:
    """G's adversarial loss, plus the same on U(G) where there is an unconditional D.

    'bce': the references' non-saturating BCE(D(G), 1). 'hinge': −mean D(G), the generator side
    of the hinge loss.
    """

    def term(logits: Array) -> Array:
        if kind == "hinge":
            return -jnp.mean(logits.astype(jnp.float32))
        return bce_with_logits(logits, 1.0)

    loss = term(fake_logits)
    if fake_unconditional_logits is not None:
        loss = loss + term(fake_unconditional_logits)
    return loss


class GeneratorLoss(NamedTuple):
    """The G loss and its terms (the contrastive one 0 where it is off)."""

    total: Array
    adversarial: Array
    kl: Array
    contrastive: Array = 0.0


def generator_loss(
    fake_logits: Array,
    fake_unconditional_logits: Array | None,
    mu: Array,
    logvar: Array,
    *,
    kl_coeff: float,
    kind: str = "bce",
    contrastive: Array | None = None,
    contrastive_weight: float = 0.0,
) -> GeneratorLoss:
    """The G loss: adversarial + kl_coeff · KL (spec §7), + the weighted contrastive term if on.

    Args:
      fake_logits: D(generated image, its text).
      fake_unconditional_logits: U(generated image), or None.
      mu: [B, C] the CA means of the generated images' conditions.
      logvar: [B, C] their log σ².
      kl_coeff: the KL term's weight.
      kind: 'bce' (the references) or 'hinge' (`generator_adversarial_loss`).
      contrastive: the image–sentence contrastive loss of the generated pairs, or None.
      contrastive_weight: its weight; 0 leaves it out.

    Returns:
      The total and each term.
    """
    adversarial = generator_adversarial_loss(fake_logits, fake_unconditional_logits, kind=kind)
    kl = kl_loss(mu, logvar)
    total = adversarial + kl_coeff * kl
    if contrastive_weight:
        total = total + contrastive_weight * contrastive
        return GeneratorLoss(total, adversarial, kl, contrastive)
    return GeneratorLoss(total, adversarial, kl)


# DF-GAN's MA-GP constants: 2 · mean(‖∇‖⁶).
MA_GP_POWER = 6.0


def matching_aware_penalty(image_grads: Array, condition_grads: Array, weight: float) -> Array:
    """DF-GAN's matching-aware gradient penalty from D's gradients on real, matching pairs.

    weight · mean over examples of ‖(∂D/∂image, ∂D/∂condition)‖₂⁶, the norm taken per example
    over the image's and the condition's gradients together (DF-GAN's `MA_GP`, weight 2 there).

    Args:
      image_grads: [B, H, W, C], ∂(Σ logits)/∂image for real images with their own text.
      condition_grads: [B, D], the same with respect to D's text condition.
      weight: the penalty's weight k.
    """
    flat = jnp.concatenate(
        [image_grads.reshape(image_grads.shape[0], -1), condition_grads], axis=1
    ).astype(jnp.float32)
    norms = jnp.sqrt(jnp.sum(jnp.square(flat), axis=1))
    return weight * jnp.mean(norms**MA_GP_POWER)


def kl_loss(mu: Array, logvar: Array) -> Array:
    """KL(N(μ, σ²) ‖ N(0, I)) averaged over batch and dimensions (not summed), as both references.

    Args:
      mu: [B, C] CA means.
      logvar: [B, C] log σ².
    """
    return jnp.mean(-0.5 * (1.0 + logvar - jnp.square(mu) - jnp.exp(logvar)))


def contrastive_loss(image: Array, text: Array, temperature: float) -> Array:
    """XMC-GAN's image–sentence contrastive loss (InfoNCE over the batch, both directions).

    Row i of `image` and of `text` are a matching pair; every other row of the batch is a
    negative. The loss is the mean of the cross-entropies of softmax(image · textᵀ / τ) over the
    text for each image and over the images for each text.

    Args:
      image: [B, E] L2-normalised image embeddings.
      text: [B, E] L2-normalised text embeddings.
      temperature: τ (XMC-GAN: 0.1).
    """
    logits = jnp.matmul(image, text.T, precision=jax.lax.Precision.HIGHEST) / temperature
    labels = jnp.arange(logits.shape[0])
    image_to_text = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    text_to_image = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels)
    return 0.5 * (jnp.mean(image_to_text) + jnp.mean(text_to_image))
