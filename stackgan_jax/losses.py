"""StackGAN losses (spec §7) on discriminator logits.

Both references use binary cross-entropy with hard 0/1 targets: `tf` on logits, `pytorch` as
`BCELoss` on sigmoid outputs. Here it is always the log-sigmoid form on logits, equal in value to
the `pytorch` one (which only clamps log at −100) and stable for large logits.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def bce_with_logits(logits: Array, target: float) -> Array:
    """Mean binary cross-entropy of `logits` against a constant 0/1 `target`."""
    logits = logits.astype(jnp.float32)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)))


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
) -> DiscriminatorLoss:
    """The D loss: real + ½(wrong + fake), or ½(real + real_u) + ⅓(fake + wrong + fake_u).

    The second form applies when unconditional logits are given (`pytorch` Stage-II).

    Args:
      real_logits: D(real image, its text).
      wrong_logits: D(mismatched image and text).
      fake_logits: D(generated image, its text).
      real_unconditional_logits: U(real image), or None.
      fake_unconditional_logits: U(generated image), or None.

    Returns:
      The total and each term.
    """
    real = bce_with_logits(real_logits, 1.0)
    wrong = bce_with_logits(wrong_logits, 0.0)
    fake = bce_with_logits(fake_logits, 0.0)
    if real_unconditional_logits is None:
        zero = jnp.zeros((), jnp.float32)
        return DiscriminatorLoss(real + 0.5 * (wrong + fake), real, wrong, fake, zero, zero)
    real_u = bce_with_logits(real_unconditional_logits, 1.0)
    fake_u = bce_with_logits(fake_unconditional_logits, 0.0)
    total = 0.5 * (real + real_u) + (fake + wrong + fake_u) / 3.0
    return DiscriminatorLoss(total, real, wrong, fake, real_u, fake_u)


def generator_adversarial_loss(
    fake_logits: Array, fake_unconditional_logits: Array | None = None
) -> Array:
    """Non-saturating G loss: BCE(D(G), 1), plus BCE(U(G), 1) where there is an unconditional D."""
    loss = bce_with_logits(fake_logits, 1.0)
    if fake_unconditional_logits is not None:
        loss = loss + bce_with_logits(fake_unconditional_logits, 1.0)
    return loss


def kl_loss(mu: Array, logvar: Array) -> Array:
    """KL(N(μ, σ²) ‖ N(0, I)) averaged over batch and dimensions (not summed), as both references.

    Args:
      mu: [B, C] CA means.
      logvar: [B, C] log σ².
    """
    return jnp.mean(-0.5 * (1.0 + logvar - jnp.square(mu) - jnp.exp(logvar)))
