"""Fréchet Inception Distance: feature statistics, their `.npz` files and the distance.

FID = |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)) between Gaussians fitted to
two sets of Inception pool_3 features (`stackgan_jax.metrics.inception_features.fid_features`).
The maths follows pytorch-fid, whose `calculate_frechet_distance` DM-GAN, DF-GAN and GALIP copy:
float64 statistics, the unbiased covariance, `scipy.linalg.sqrtm` of the product, and an epsilon
on the diagonals when that square root is not finite. Statistics files hold `mu` [D] and `sigma`
[D, D], the layout of DM-GAN's `bird_val.npz`, DF-GAN's `bird_val256_FIDK0.npz` and pytorch-fid's
`--save-stats`.

    network = inception_weights.load_fid_inception("inception_v3_google-0cc3c7bd.pth", "dfgan")
    mu, sigma = feature_statistics(inception_features.fid_features(network, images))
    fid = frechet_distance(mu, sigma, *load_statistics("bird_val256_FIDK0.npz"))  # DF-GAN's
"""

from __future__ import annotations

import pathlib
import warnings

import numpy as np
import scipy.linalg
from etils import epath

from stackgan_jax.errors import BadFileError

# Added to both covariance diagonals when sqrtm(sigma1 @ sigma2) is not finite (pytorch-fid).
SQRTM_EPSILON = 1e-6
# Largest imaginary part tolerated on the square root's diagonal before it is dropped.
IMAGINARY_TOLERANCE = 1e-3


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of a feature set, in float64.

    Args:
      features: [N, D], N >= 2 (one feature vector per image).

    Returns:
      (mu [D], sigma [D, D]); sigma is the unbiased (N - 1) sample covariance, as `np.cov`.

    Raises:
      ValueError: for fewer than two rows or a non-2-d array.
    """
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"expected [N >= 2, D] features, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    """`scipy.linalg.sqrtm`, its singular-matrix warning silenced (the caller checks)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        return scipy.linalg.sqrtm(matrix)


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    eps: float = SQRTM_EPSILON,
) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    If `sqrtm(sigma1 @ sigma2)` is not finite (a singular product, e.g. from fewer samples than
    feature dimensions), `eps` is added to both diagonals and the root taken again, with a
    warning. A complex root (from rounding) keeps its real part when the imaginary parts of its
    diagonal stay below `IMAGINARY_TOLERANCE`.

    Args:
      mu1: [D] mean of the first set (generated images, say).
      sigma1: [D, D] its covariance.
      mu2: [D] mean of the second set (the reference statistics).
      sigma2: [D, D] its covariance.
      eps: the diagonal offset for the retry.

    Returns:
      The distance (>= 0 up to rounding).

    Raises:
      ValueError: on mismatched shapes, or a square root with a large imaginary part.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    dim = mu1.shape[0]
    if mu1.shape != mu2.shape or sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(
            f"statistics do not match: mu {mu1.shape} / {mu2.shape},"
            f" sigma {sigma1.shape} / {sigma2.shape}"
        )
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(
            f"FID: sqrtm(sigma1 @ sigma2) is singular; adding {eps} to the covariance diagonals",
            RuntimeWarning,
            stacklevel=2,
        )
        offset = np.eye(dim) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        largest = np.abs(np.diagonal(covmean).imag).max()
        if largest > IMAGINARY_TOLERANCE:
            raise ValueError(f"FID: the covariance square root has imaginary part {largest}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID between two feature sets ([N1, D] and [N2, D])."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


def save_statistics(path: str | pathlib.Path, mu: np.ndarray, sigma: np.ndarray) -> None:
    """Writes `mu` and `sigma` (float64) to an `.npz` file, like DM-GAN's `bird_val.npz`.

    Args:
      path: the file (local or any filesystem `etils.epath` reaches, e.g. gs://).
      mu: [D] mean.
      sigma: [D, D] covariance.

    Raises:
      ValueError: if the shapes do not fit together.
    """
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"expected mu [D] and sigma [D, D], got {mu.shape} and {sigma.shape}")
    with epath.Path(path).open("wb") as file:
        np.savez(file, mu=mu, sigma=sigma)


def load_statistics(path: str | pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    """Reads `mu` and `sigma` from an `.npz` statistics file (ours, pytorch-fid's, DM-GAN's).

    Args:
      path: the file (local or any filesystem `etils.epath` reaches, e.g. gs://).

    Returns:
      (mu [D], sigma [D, D]) in float64.

    Raises:
      KeyError: if the file lacks `mu` or `sigma`.
    """
    with epath.Path(path).open("rb") as file, np.load(file, allow_pickle=False) as stats:
        missing = {"mu", "sigma"} - set(stats.files)
        if missing:
            raise BadFileError(f"{path}: no {sorted(missing)} among {stats.files}")
        return np.asarray(stats["mu"], np.float64), np.asarray(stats["sigma"], np.float64)
