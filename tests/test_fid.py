"""FID maths: feature statistics, their files and the Fréchet distance."""

import numpy as np
import pytest
import scipy.linalg

from stackgan_jax.metrics import fid


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
