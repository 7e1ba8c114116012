"""Inception Score maths, by the StackGAN protocol."""

import numpy as np
import pytest

from stackgan_jax.metrics import inception_score


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
