"""Differentiable augmentation of D's inputs (DiffAugment, Zhao et al., NeurIPS 2020).

D sees every image (real, mismatched and generated, in D's and in G's update) through the same
random transformations, so it cannot memorise a small training set, and G's gradient passes
through the transformation. Only geometry and occlusion are offered, never colour: colour is
what the captions describe.

The policies follow the authors' `DiffAugment_pytorch.py`:

- `translation`: shift by an integer in [−⌊s/8 + ½⌋, ⌊s/8 + ½⌋] pixels along each axis
  (s = image size), filling with zeros (mid grey in [−1, 1]);
- `cutout`: zero a square of side ⌊s/2 + ½⌋ whose centre is uniform over the image (the square
  is clipped at the borders).

Each image draws its own transformation.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from stackgan_jax.errors import ConfigError

Array = jax.Array
POLICIES = ("translation", "cutout")
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def check_policies(policies: Sequence[str]) -> None:
    """Raises ValueError for an unknown policy name."""
    unknown = sorted(set(policies) - set(POLICIES))
    if unknown:
        raise ConfigError(f"unknown augmentations {unknown}; choose from {list(POLICIES)}")


def _size(length: int, ratio: float) -> int:
    return int(length * ratio + 0.5)


def translate(images: Array, shifts: Array) -> Array:
    """Moves image b's content by `shifts[b]` = (down, right) pixels, zero-filling.

    Args:
        images: [B, H, W, C].
        shifts: int [B, 2].

    Returns:
        [B, H, W, C] with out[b, i, j] = images[b, i − down, j − right], 0 outside the image.
    """

    def one(image: Array, shift: Array) -> Array:
        height, width = image.shape[:2]
        rows = jnp.arange(height) - shift[0]
        cols = jnp.arange(width) - shift[1]
        inside = ((rows >= 0) & (rows < height))[:, None] & ((cols >= 0) & (cols < width))[None]
        moved = image[jnp.clip(rows, 0, height - 1)][:, jnp.clip(cols, 0, width - 1)]
        return jnp.where(inside[:, :, None], moved, jnp.zeros_like(moved))

    return jax.vmap(one)(images, shifts)


def cutout(images: Array, centres: Array, size: int) -> Array:
    """Zeroes a size×size square centred at `centres[b]` = (row, col) in each image b.

    The square covers rows [row − size//2, row − size//2 + size) (likewise columns), clipped to
    the image.
    """
    height, width = images.shape[1:3]
    top = centres[:, 0, None] - size // 2
    left = centres[:, 1, None] - size // 2
    rows = jnp.arange(height)[None]
    cols = jnp.arange(width)[None]
    in_rows = (rows >= top) & (rows < top + size)
    in_cols = (cols >= left) & (cols < left + size)
    hole = in_rows[:, :, None] & in_cols[:, None, :]
    return jnp.where(hole[..., None], jnp.zeros_like(images), images)


def augment(images: Array, key: Array, policies: Sequence[str]) -> Array:
    """Applies `policies` in order, each image with its own random draw.

    Args:
        images: [B, H, W, C] in [−1, 1].
        key: PRNG key.
        policies: names from POLICIES; empty for the identity.

    Returns:
        The augmented images, same shape and dtype.
    """
    batch, height, width = images.shape[:3]
    for policy, policy_key in zip(policies, jax.random.split(key, len(policies)), strict=True):
        if policy == "translation":
            reach = jnp.array([_size(height, TRANSLATION_RATIO), _size(width, TRANSLATION_RATIO)])
            shifts = jax.random.randint(policy_key, (batch, 2), -reach, reach + 1)
            images = translate(images, shifts)
        elif policy == "cutout":
            size = _size(height, CUTOUT_RATIO)
            # The authors draw the centre from [0, s + (1 − size mod 2)).
            high = jnp.array([height + 1 - size % 2, width + 1 - size % 2])
            images = cutout(images, jax.random.randint(policy_key, (batch, 2), 0, high), size)
        else:
            check_policies([policy])
    return images
