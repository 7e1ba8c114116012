"""Differentiable augmentation against a NumPy transcription of DiffAugment's PyTorch code."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stackgan_jax import augment


def diffaugment_translation(x, tx, ty):
    """`rand_translation` of DiffAugment_pytorch.py for given shifts, NHWC.

    It pads one zero pixel on each side and gathers padded[clamp(i + t + 1, 0, H + 1)], which
    reads zeros wherever i + t leaves the image.
    """
    batch, height, width, _ = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.empty_like(x)
    for b in range(batch):
        rows = np.clip(np.arange(height) + tx[b] + 1, 0, height + 1)
        cols = np.clip(np.arange(width) + ty[b] + 1, 0, width + 1)
        out[b] = padded[b][rows][:, cols]
    return out


def diffaugment_cutout(x, offset_x, offset_y, size):
    """`rand_cutout` of DiffAugment_pytorch.py for given offsets, NHWC."""
    batch, height, width, _ = x.shape
    mask = np.ones((batch, height, width), x.dtype)
    for b in range(batch):
        rows = np.clip(np.arange(size) + offset_x[b] - size // 2, 0, height - 1)
        cols = np.clip(np.arange(size) + offset_y[b] - size // 2, 0, width - 1)
        mask[b][np.ix_(rows, cols)] = 0
    return x * mask[..., None]


IMAGES = np.random.default_rng(0).uniform(-1, 1, (6, 16, 16, 3)).astype(np.float32)


def test_translate_matches_diffaugment():
    # DiffAugment's shift t reads pixel i + t; ours moves content by `shift` (reads i − shift).
    tx, ty = np.array([-2, 0, 2, 1, -1, 2]), np.array([1, -2, 0, 2, -1, -2])
    got = augment.translate(jnp.asarray(IMAGES), jnp.stack([-tx, -ty], axis=1))
    np.testing.assert_array_equal(got, diffaugment_translation(IMAGES, tx, ty))


def test_cutout_matches_diffaugment_including_clipped_squares():
    size = augment._size(16, augment.CUTOUT_RATIO)
    assert size == 8
    ox, oy = np.array([0, 16, 8, 3, 15, 1]), np.array([0, 16, 2, 12, 8, 5])
    got = augment.cutout(jnp.asarray(IMAGES), jnp.stack([ox, oy], axis=1), size)
    np.testing.assert_array_equal(got, diffaugment_cutout(IMAGES, ox, oy, size))


def test_augment_draws_within_diffaugments_ranges():
    images = jnp.ones((256, 64, 64, 1))
    translated = augment.augment(images, jax.random.key(0), ("translation",))
    # Shifts of at most round(64 / 8) = 8 pixels: at most 8 zero rows or columns at an edge.
    empty_rows = np.sum(np.all(np.asarray(translated) == 0, axis=(2, 3)), axis=1)
    assert empty_rows.max() == 8 and empty_rows.min() == 0
    cut = np.asarray(augment.augment(images, jax.random.key(1), ("cutout",)))
    # A 32×32 square, clipped at the borders: between 16×16 and 32×32 zeros per image.
    holes = np.sum(cut == 0, axis=(1, 2, 3))
    assert holes.max() == 32 * 32 and holes.min() >= 16 * 16


def test_each_image_draws_its_own_augmentation_and_none_is_the_identity():
    images = jnp.asarray(np.repeat(IMAGES[:1], 8, axis=0))
    out = np.asarray(augment.augment(images, jax.random.key(2), ("translation", "cutout")))
    assert len({out[i].tobytes() for i in range(8)}) > 1
    np.testing.assert_array_equal(augment.augment(images, jax.random.key(2), ()), images)


def test_augmentation_passes_gradients_to_the_kept_pixels():
    key = jax.random.key(3)
    grads = jax.grad(lambda x: jnp.sum(augment.augment(x, key, ("translation", "cutout"))))(
        jnp.asarray(IMAGES)
    )
    # Every input pixel either lands once in the output (gradient 1) or is dropped (0).
    assert set(np.unique(np.asarray(grads))) <= {0.0, 1.0}
    assert 0 < np.mean(np.asarray(grads)) < 1


def test_colour_policies_are_refused():
    with pytest.raises(ValueError, match="unknown augmentations"):
        augment.check_policies(["color"])
