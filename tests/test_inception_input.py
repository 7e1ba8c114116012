"""The FID Inception's input conventions: pixel ranges and the two bilinear resizes."""

import numpy as np
import pytest

from stackgan_jax.metrics import inception_input


def test_input_convention():
    # 299x299 inputs are not resized, so pixel values come through one to one.
    uint8 = np.zeros((1, 299, 299, 3), np.uint8)
    uint8[0, 0, 0] = [0, 128, 255]
    np.testing.assert_array_equal(
        inception_input.to_inception_input(uint8)[0, 0, 0], [-1.0, 0.0, 127 / 128]
    )
    # Generator range: clipped to [-1, 1], (x + 1) * 127.5, rounded (0.01 -> 128.775 -> 129).
    floats = np.zeros((1, 299, 299, 1), np.float32)  # one channel: repeated to three
    floats[0, 0, :5, 0] = [-1.5, -1.0, 0.01, 1.0, 2.0]
    expected_pixels = np.array([0, 0, 129, 255, 255])
    converted = inception_input.to_inception_input(floats)
    assert converted.shape == (1, 299, 299, 3)
    np.testing.assert_allclose(converted[0, 0, :5, 2], expected_pixels / 128 - 1, atol=1e-6)
    unrounded = inception_input.to_inception_input(floats, quantize=False)[0, 0, 2, 0]
    np.testing.assert_allclose(unrounded, 128.775 / 128 - 1, atol=1e-6)
    with pytest.raises(TypeError, match="uint8 or float"):
        inception_input.to_inception_input(np.zeros((1, 4, 4, 3), np.int32))


def test_resize_is_tf1_bilinear():
    # Output pixel j reads input position j * in / out; past the last pixel, the last pixel.
    np.testing.assert_allclose(
        inception_input.resize_matrix(2, 4), [[1, 0], [0.5, 0.5], [0, 1], [0, 1]]
    )
    np.testing.assert_allclose(inception_input.resize_matrix(4, 2), [[1, 0, 0, 0], [0, 0, 1, 0]])
    np.testing.assert_array_equal(inception_input.resize_matrix(299, 299), np.eye(299))
    weights = inception_input.resize_matrix(64, 299)
    np.testing.assert_allclose(weights.sum(axis=1), 1, atol=1e-6)


def test_resize_with_half_pixel_centres_is_pytorchs():
    # F.interpolate(bilinear, align_corners=False): output pixel j reads (j + 0.5) * in / out -
    # 0.5, clamped to the image.
    np.testing.assert_allclose(
        inception_input.resize_matrix(2, 4, half_pixel_centres=True),
        [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]],
    )
    np.testing.assert_allclose(
        inception_input.resize_matrix(4, 2, half_pixel_centres=True),
        [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]],
    )
    np.testing.assert_array_equal(inception_input.resize_matrix(299, 299, True), np.eye(299))
