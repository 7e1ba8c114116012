"""Conditioning Augmentation (spec §2) and the noise that the generators consume.

The noise is an explicit input rather than an internal RNG stream, so a generator is a pure
function of (variables, embedding, z, ε) and a test can replay any reference's draws.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from stackgan_jax.models.layers import DENSE_INIT, Array, DType, leaky_relu


class ConditioningAugmentation(nn.Module):
    """Maps a text embedding to ĉ = μ + σ ⊙ ε and returns (ĉ, μ, log σ²).

    `tf`: FC → LeakyReLU(0.2) on both halves, the second half is log σ.
    `pytorch`: FC → ReLU on both halves, the second half is log σ² (so σ ≥ 1, a quirk of the
    reference kept for fidelity). Both return log σ², which is what the KL term needs.
    """

    condition_dim: int
    arch: str
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, embedding: Array, noise: Array) -> tuple[Array, Array, Array]:
        h = nn.Dense(2 * self.condition_dim, kernel_init=DENSE_INIT, dtype=self.dtype, name="fc")(
            embedding
        )
        if self.arch == "tf":
            h = leaky_relu(h)
            mu, log_sigma = jnp.split(h, 2, axis=-1)
            logvar = 2.0 * log_sigma
        else:
            h = nn.relu(h)
            mu, logvar = jnp.split(h, 2, axis=-1)
        condition = mu + jnp.exp(0.5 * logvar) * noise.astype(h.dtype)
        return condition, mu.astype(jnp.float32), logvar.astype(jnp.float32)


def sample_ca_noise(key: Array, batch: int, condition_dim: int, arch: str) -> Array:
    """ε for Conditioning Augmentation: truncated normal at ±2 (`tf`) or standard normal."""
    if arch == "tf":
        return jax.random.truncated_normal(key, -2.0, 2.0, (batch, condition_dim))
    return jax.random.normal(key, (batch, condition_dim))


def sample_z(key: Array, batch: int, z_dim: int) -> Array:
    """Generator noise z ~ N(0, I)."""
    return jax.random.normal(key, (batch, z_dim))
