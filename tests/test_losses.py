"""Losses against hand-computed references and the KL closed form."""

import numpy as np
import pytest

from stackgan_jax import losses


def np_bce(logits, target):
    p = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))
    return float(np.mean(-(target * np.log(p) + (1 - target) * np.log(1 - p))))


REAL = np.array([2.0, -1.0, 0.5, 3.0], np.float32)
WRONG = np.array([0.3, -2.0, 1.5], np.float32)
FAKE = np.array([-0.7, 0.1, -3.0, 2.2], np.float32)
REAL_U = np.array([1.0, 0.0, -0.5, 4.0], np.float32)
FAKE_U = np.array([-1.0, 2.0, 0.25, -4.0], np.float32)


def test_bce_matches_sigmoid_cross_entropy_by_hand():
    # log(1 + e^-2) by hand for a single logit 2 with target 1.
    assert float(losses.bce_with_logits(np.array([2.0]), 1.0)) == pytest.approx(0.126928, 1e-5)
    assert float(losses.bce_with_logits(FAKE, 0.0)) == pytest.approx(np_bce(FAKE, 0), 1e-6)


def test_bce_is_stable_for_huge_logits():
    assert float(losses.bce_with_logits(np.array([-200.0]), 1.0)) == pytest.approx(200.0)
    assert float(losses.bce_with_logits(np.array([200.0]), 1.0)) == pytest.approx(0.0, abs=1e-12)


def test_discriminator_loss_without_unconditional_terms():
    loss = losses.discriminator_loss(REAL, WRONG, FAKE)
    want = np_bce(REAL, 1) + 0.5 * (np_bce(WRONG, 0) + np_bce(FAKE, 0))
    assert float(loss.total) == pytest.approx(want, 1e-6)
    assert float(loss.real_unconditional) == 0.0 and float(loss.fake_unconditional) == 0.0


def test_discriminator_loss_with_unconditional_terms():
    loss = losses.discriminator_loss(REAL, WRONG, FAKE, REAL_U, FAKE_U)
    want = (
        0.5 * (np_bce(REAL, 1) + np_bce(REAL_U, 1))
        + (np_bce(FAKE, 0) + np_bce(WRONG, 0) + np_bce(FAKE_U, 0)) / 3
    )
    assert float(loss.total) == pytest.approx(want, 1e-6)
    assert float(loss.wrong) == pytest.approx(np_bce(WRONG, 0), 1e-6)


def test_generator_loss():
    assert float(losses.generator_adversarial_loss(FAKE)) == pytest.approx(np_bce(FAKE, 1), 1e-6)
    both = losses.generator_adversarial_loss(FAKE, FAKE_U)
    assert float(both) == pytest.approx(np_bce(FAKE, 1) + np_bce(FAKE_U, 1), 1e-6)


def test_kl_equals_closed_form_in_the_tf_parametrisation():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(6, 5)).astype(np.float32)
    log_sigma = rng.normal(scale=0.5, size=(6, 5)).astype(np.float32)
    # The TF reference's form: -log σ + ½(-1 + σ² + μ²), averaged.
    want = np.mean(-log_sigma + 0.5 * (-1 + np.exp(2 * log_sigma) + mu**2))
    assert float(losses.kl_loss(mu, 2 * log_sigma)) == pytest.approx(float(want), 1e-5)


def test_kl_of_standard_normal_is_zero_and_grows_with_mean():
    zero = np.zeros((3, 4), np.float32)
    assert float(losses.kl_loss(zero, zero)) == 0.0
    # KL(N(1, 1) ‖ N(0, 1)) = ½ per dimension.
    assert float(losses.kl_loss(np.ones((3, 4), np.float32), zero)) == pytest.approx(0.5)


# --- Opt-in losses (DF-GAN) ------------------------------------------------------------------


def np_hinge(logits, real):
    x = np.asarray(logits, np.float64)
    return float(np.mean(np.maximum(0.0, 1.0 - x) if real else np.maximum(0.0, 1.0 + x)))


def test_hinge_discriminator_loss_by_hand():
    loss = losses.discriminator_loss(REAL, WRONG, FAKE, kind="hinge")
    # DF-GAN: relu(1 − real) + ½(relu(1 + fake) + relu(1 + mismatched)).
    want = np_hinge(REAL, True) + 0.5 * (np_hinge(WRONG, False) + np_hinge(FAKE, False))
    assert float(loss.total) == pytest.approx(want, 1e-6)
    # Written out for the first terms: relu(1 − [2, −1, 0.5, 3]) = [0, 2, 0.5, 0].
    assert float(loss.real) == pytest.approx(2.5 / 4, 1e-6)
    with_u = losses.discriminator_loss(REAL, WRONG, FAKE, REAL_U, FAKE_U, kind="hinge")
    want_u = (
        0.5 * (np_hinge(REAL, True) + np_hinge(REAL_U, True))
        + (np_hinge(FAKE, False) + np_hinge(WRONG, False) + np_hinge(FAKE_U, False)) / 3
    )
    assert float(with_u.total) == pytest.approx(want_u, 1e-6)


def test_hinge_generator_loss_is_minus_the_mean_logit():
    got = losses.generator_adversarial_loss(FAKE, kind="hinge")
    assert float(got) == pytest.approx(-np.mean(FAKE.astype(np.float64)), 1e-6)
    both = losses.generator_adversarial_loss(FAKE, FAKE_U, kind="hinge")
    assert float(both) == pytest.approx(-np.mean(FAKE) - np.mean(FAKE_U), 1e-6)


def test_unknown_gan_loss_is_refused():
    with pytest.raises(ValueError, match="gan_loss must be one of"):
        losses.check_gan_loss("wasserstein")


def test_matching_aware_penalty_is_dfgans_formula():
    rng = np.random.default_rng(1)
    image_grads = rng.normal(scale=0.1, size=(3, 4, 4, 3)).astype(np.float32)
    text_grads = rng.normal(scale=0.1, size=(3, 7)).astype(np.float32)
    # DF-GAN's MA_GP: per example, the L2 norm over both gradients together; 2 · mean(norm⁶).
    norms = [
        np.sqrt(np.sum(image_grads[i].astype(np.float64) ** 2) + np.sum(text_grads[i] ** 2.0))
        for i in range(3)
    ]
    want = 2.0 * np.mean(np.array(norms) ** 6)
    got = losses.matching_aware_penalty(image_grads, text_grads, weight=2.0)
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_contrastive_loss_is_symmetric_infonce_by_hand():
    rng = np.random.default_rng(2)
    image = rng.normal(size=(4, 6))
    text = rng.normal(size=(4, 6))
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    logits = image @ text.T / 0.1
    # −log softmax of the matching pair, over texts for each image and over images for each text.
    rows = [-(logits[i, i] - np.log(np.sum(np.exp(logits[i])))) for i in range(4)]
    cols = [-(logits[i, i] - np.log(np.sum(np.exp(logits[:, i])))) for i in range(4)]
    want = 0.5 * (np.mean(rows) + np.mean(cols))
    got = losses.contrastive_loss(image.astype(np.float32), text.astype(np.float32), 0.1)
    assert float(got) == pytest.approx(want, rel=1e-5)
    # Perfectly separated pairs cost almost nothing.
    eye = np.eye(4, 6, dtype=np.float32)
    assert float(losses.contrastive_loss(eye, eye, 0.01)) < 1e-6


def test_generator_loss_adds_the_weighted_kl_and_contrastive_terms():
    mu = np.array([[0.3, -1.2], [0.5, 0.1]], np.float32)
    logvar = np.array([[0.2, -0.4], [0.0, 0.7]], np.float32)
    kl = np.mean(-0.5 * (1 + logvar - mu**2 - np.exp(logvar)))
    loss = losses.generator_loss(FAKE, None, mu, logvar, kl_coeff=2.0)
    assert float(loss.total) == pytest.approx(np_bce(FAKE, 1) + 2.0 * kl, 1e-6)
    assert float(loss.kl) == pytest.approx(kl, 1e-6)
    with_contrastive = losses.generator_loss(
        FAKE, FAKE_U, mu, logvar, kl_coeff=0.5, contrastive=np.float32(1.5), contrastive_weight=0.4
    )
    want = np_bce(FAKE, 1) + np_bce(FAKE_U, 1) + 0.5 * kl + 0.4 * 1.5
    assert float(with_contrastive.total) == pytest.approx(want, 1e-6)
    assert float(with_contrastive.contrastive) == pytest.approx(1.5)
