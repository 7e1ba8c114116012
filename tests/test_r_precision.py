"""R-precision's maths by hand, and against DM-GAN's code (fixtures/make_damsm_text_golden.py)."""

import pathlib

import numpy as np
import pytest
from conftest import eval_config

from stackgan_jax.data import source as source_lib
from stackgan_jax.evaluation import evaluator
from stackgan_jax.evaluation import r_precision as r_precision_evaluation
from stackgan_jax.metrics import damsm_captions, damsm_text
from stackgan_jax.metrics import r_precision as r_precision_lib
from stackgan_jax.weights import MissingWeightsError

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


class Identity:
    """A stand-in generator whose shuffle keeps the order: the groups can be counted by hand."""

    def permutation(self, x):
        return np.asarray(x)


def test_cosine_scores_and_hits_by_hand():
    image = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    captions = np.array(
        [
            [[2.0, 2.0], [0.0, 1.0], [1.0, -0.1]],  # true at 45°, a mismatch nearer (5.7°): miss
            [[0.0, 5.0], [1.0, 1.0], [0.0, 0.0]],  # true parallel; a zero caption scores 0: hit
            [[3.0, 4.0], [6.0, 8.0], [-3.0, -4.0]],  # a tie with the true caption: hit
        ]
    )
    scores = r_precision_lib.cosine_scores(image, captions)
    np.testing.assert_allclose(
        scores,
        [[np.sqrt(0.5), 0.0, 1 / np.sqrt(1.01)], [1.0, np.sqrt(0.5), 0.0], [1.0, 1.0, -1.0]],
    )
    assert r_precision_lib.top1_hits(image, captions).tolist() == [False, True, True]


def test_pooled_hits_gathers_the_mismatched_rows():
    rng = np.random.default_rng(0)
    image, true, pool = rng.normal(size=(7, 4)), rng.normal(size=(7, 4)), rng.normal(size=(9, 4))
    rows = rng.integers(0, 9, (7, 3))
    want = r_precision_lib.top1_hits(image, np.concatenate([true[:, None], pool[rows]], axis=1))
    got = r_precision_lib.pooled_hits(image, true, pool, rows, chunk=3)
    assert got.tolist() == want.tolist()


def test_grouped_mean_std_drops_each_groups_last_trial_as_dm_gan_does():
    # 10 groups of 2; DM-GAN's slice R[i * size:(i + 1) * size - 1] scores only the first.
    hits = np.array([1, 0] * 10, bool)
    assert r_precision_lib.grouped_mean_std(hits, Identity()) == (1.0, 0.0)
    # Groups of 4 scored over 3: group i has i % 4 hits among its first three (0, 1, 2, 3, ...).
    hits = np.concatenate([[1] * (i % 4) + [0] * (3 - i % 4) + [1] for i in range(10)])
    scores = np.array([i % 4 for i in range(10)]) / 3
    mean, std = r_precision_lib.grouped_mean_std(hits, Identity())
    assert mean == pytest.approx(scores.mean()) and std == pytest.approx(scores.std())
    with pytest.raises(ValueError, match="at least 20 trials"):
        r_precision_lib.grouped_mean_std(np.ones(19), Identity())


def test_grouped_mean_std_shuffles_as_numpys_legacy_shuffle():
    hits = np.random.default_rng(3).random(300) < 0.6
    legacy = hits.astype(float)
    np.random.seed(7)  # noqa: NPY002 - DM-GAN's own RNG calls
    np.random.shuffle(legacy)  # noqa: NPY002
    scores = [np.average(legacy[i * 30 : (i + 1) * 30 - 1]) for i in range(10)]
    got = r_precision_lib.grouped_mean_std(hits, np.random.RandomState(7))
    assert got == pytest.approx((np.average(scores), np.std(scores)))


def test_draw_mismatched_never_draws_the_trials_class():
    rng = np.random.default_rng(0)
    pool_classes = np.array([0, 0, 1, 2, 2, 2])
    counts = np.array([1, 2, 3, 4, 5, 10])
    trials = np.array([0, 2, 1, 7])
    images, captions = r_precision_lib.draw_mismatched(trials, pool_classes, counts, rng, 500)
    assert images.shape == captions.shape == (4, 500)
    assert not np.any(pool_classes[images] == trials[:, None])
    assert np.all(captions < counts[images]) and np.all(captions >= 0)
    # Every allowed image is drawn, about uniformly: the trial of class 1 sees five images.
    assert set(images[2]) == {0, 1, 3, 4, 5}
    assert set(captions[3][images[3] == 5]) == set(range(10))
    with pytest.raises(ValueError, match="no image of another class"):
        r_precision_lib.draw_mismatched(np.array([2]), np.array([2, 2]), np.array([1, 1]), rng)


def test_r_precision_matches_dm_gans_computation():
    golden = dict(np.load(FIXTURES / "damsm_golden.npz"))
    vocabulary = damsm_captions.load_captions(FIXTURES / "damsm_captions.pickle")
    encoder = damsm_text.load_text_encoder(FIXTURES / "damsm_text_encoder.pth")
    # The pool: every test caption, tokenised from its file's lines (80, ten per image).
    pool = [
        indices
        for lines in golden["test_lines"]
        for indices in (damsm_captions.caption_indices(line, vocabulary.wordtoix) for line in lines)
        if indices
    ]
    rng = np.random.default_rng(0)  # unused: no caption is longer than WORDS_NUM
    padded = [damsm_captions.pad_caption(caption, 25, rng) for caption in pool]
    _, codes = encoder.encode(np.stack([p[0] for p in padded]), np.array([p[1] for p in padded]))
    trials = golden["trial_rows"]
    rows = golden["mismatched_rows"].astype(int)
    # The reference's draws kept away from each trial's class.
    classes = golden["test_classes"]
    assert not np.any(classes[rows // 10] == classes[trials // 10][:, None])
    hits = r_precision_lib.pooled_hits(golden["image_codes"], codes[trials], codes, rows)
    assert np.mean(hits != golden["hits"]) <= 0.01
    mean, std = r_precision_lib.grouped_mean_std(
        hits, np.random.RandomState(int(golden["shuffle_seed"]))
    )
    assert mean == pytest.approx(float(golden["r_mean"]), abs=1e-3)
    assert std == pytest.approx(float(golden["r_std"]), abs=1e-3)
    assert 0.3 < mean < 0.9  # neither all hits nor none: the test can tell a wrong encoder


def fixture_source(golden):
    """An ArraySource of the fixture's 8 test images: the captions AttnGAN keeps, the classes."""
    captions = [
        [line for line in lines if damsm_captions.tokenize(line)] for lines in golden["test_lines"]
    ]
    n = len(captions)
    return source_lib.ArraySource(
        images=np.zeros((n, 1, 1, 3), np.uint8),
        images_small=np.zeros((n, 1, 1, 3), np.uint8),
        embeddings=np.zeros((n, 10, 1), np.float32),
        num_captions=np.array([len(c) for c in captions], np.int32),
        labels=golden["test_classes"].astype(np.int64),
        captions=captions,
        file_names=[str(i) for i in range(n)],
        attributes={},
    )


def test_missing_damsm_files_stop_before_any_work_naming_file_source_and_flag(tmp_path):
    config = eval_config(["r_precision"], damsm_text_encoder=str(tmp_path / "text_encoder200.pth"))
    with pytest.raises(MissingWeightsError) as error:
        r_precision_evaluation.weight_paths(config)
    message = str(error.value)
    for flag, name in [
        ("--damsm_text_encoder", "text_encoder200.pth"),
        ("--damsm_image_encoder", str(tmp_path / "image_encoder200.pth")),
        ("--damsm_captions", "birds.zip"),
    ]:
        assert flag in message and name in message
    assert "DAMSM release" in message and "captions.pickle" in message
    with pytest.raises(MissingWeightsError, match="--damsm_captions: not set"):
        r_precision_evaluation.make_metric(eval_config(["r_precision"]), None)


def test_trials_embed_the_test_captions_and_draw_other_classes():
    golden = dict(np.load(FIXTURES / "damsm_golden.npz"))
    vocabulary = damsm_captions.load_captions(FIXTURES / "damsm_captions.pickle")
    encoder = damsm_text.load_text_encoder(FIXTURES / "damsm_text_encoder.pth")
    source = fixture_source(golden)
    _, captions = evaluator.held_out_conditions(source, 30)
    context = evaluator.Context(source, captions, "birds", 2, 0, "unused")
    trials = r_precision_evaluation.prepare_trials(
        context, vocabulary.wordtoix, encoder, 25, np.random.default_rng(0)
    )
    # Caption-major order: caption c of image i is row 10 i + c of the golden embeddings.
    order = evaluator.held_out_order(source, 30)
    want = golden["sentences"][[10 * i + c for i, c in order]]
    scale = np.abs(want).max()
    np.testing.assert_allclose(trials.true_codes, want, rtol=1e-4, atol=1e-5 * scale)
    # The pool is the 80 test captions (none longer than 25 words), in image order.
    np.testing.assert_allclose(trials.codes, golden["sentences"], rtol=1e-4, atol=1e-5 * scale)
    classes = golden["test_classes"]
    drawn = classes[trials.mismatched // 10]
    assert trials.mismatched.shape == (30, 99)
    assert not np.any(drawn == classes[[i for i, _ in order]][:, None])
    # Captions in another order (images scored from a directory) draw by their own images.
    reordered = r_precision_evaluation.prepare_trials(
        evaluator.Context(source, captions[::-1], "birds", 2, 0, "unused"),
        vocabulary.wordtoix,
        encoder,
        25,
        np.random.default_rng(0),
    )
    own = classes[[i for i, _ in order][::-1]]
    assert not np.any(classes[reordered.mismatched // 10] == own[:, None])
    np.testing.assert_allclose(reordered.true_codes, trials.true_codes[::-1], rtol=1e-5)
