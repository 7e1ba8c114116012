"""The DAMSM image encoder against DM-GAN's CNN_ENCODER (fixtures/make_damsm_image_golden.py)."""

import pathlib

import numpy as np
import pytest
from conftest import eval_config
from test_r_precision import fixture_source

from stackgan_jax.evaluation import evaluator
from stackgan_jax.evaluation import r_precision as r_precision_evaluation
from stackgan_jax.metrics import damsm_captions, damsm_text
from stackgan_jax.metrics import r_precision as r_precision_lib
from stackgan_jax.untrusted import RefusedFileError, torch_pickle

# Built on the torchvision Inception trunk of branch dfgan-fid; runs once that is merged.
damsm_image = pytest.importorskip(
    "stackgan_jax.metrics.damsm_image", exc_type=ImportError, reason="needs torchvision_inception"
)

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def test_align_corners_resize_lines_up_the_corner_pixels():
    np.testing.assert_allclose(damsm_image.align_corners_matrix(2, 3), [[1, 0], [0.5, 0.5], [0, 1]])
    weights = damsm_image.align_corners_matrix(64, 299)
    ramp = weights @ np.arange(64, dtype=np.float32)
    # Output pixel j reads input position j * 63 / 298: a linear ramp stays linear, end to end.
    np.testing.assert_allclose(ramp, np.arange(299) * 63 / 298, atol=1e-4)
    np.testing.assert_allclose(weights.sum(axis=1), 1, atol=1e-6)


def test_image_codes_and_regions_match_dm_gans_cnn_encoder():
    golden = dict(np.load(FIXTURES / "damsm_image_golden.npz"))
    images = [
        np.repeat(np.repeat(low, r, 0), r, 1)
        for low, r in zip(golden["lows"], golden["repeats"], strict=True)
    ]
    encoder = damsm_image.load_image_encoder(FIXTURES / "damsm_image_encoder.pth")
    codes, regions = [], []
    for batch in (np.stack(images[:3]), np.stack(images[3:])):
        # The jitted, batched path the metric uses (a last batch padded), and the module itself.
        codes.append(encoder.image_codes(batch, batch_size=2))
        batch_regions, _ = encoder.module.apply(encoder.variables, batch)
        regions.append(np.asarray(batch_regions)[..., :16].transpose(0, 3, 1, 2))
    got = {"codes": np.concatenate(codes), "regions": np.concatenate(regions)}
    for name, value in got.items():
        scale = np.abs(golden[name]).max()
        np.testing.assert_allclose(value, golden[name], rtol=1e-4, atol=1e-4 * scale)


def test_a_state_dict_of_another_network_is_refused_naming_the_file():
    state = torch_pickle.load_state_dict(FIXTURES / "damsm_text_encoder.pth")
    with pytest.raises(RefusedFileError, match=r"text\.pth is not an AttnGAN CNN_ENCODER"):
        damsm_image.image_encoder_from_state_dict(state, "text.pth")
    state = torch_pickle.load_state_dict(FIXTURES / "damsm_image_encoder.pth")
    del state["Mixed_6e.branch7x7_1.bn.running_mean"]
    with pytest.raises(RefusedFileError, match=r"image\.pth: .*Mixed_6e\.branch7x7_1"):
        damsm_image.image_encoder_from_state_dict(state, "image.pth")


def test_the_r_precision_metric_scores_the_last_stage_with_the_seeded_draws(tmp_path):
    golden = dict(np.load(FIXTURES / "damsm_golden.npz"))
    source = fixture_source(golden)
    _, captions = evaluator.held_out_conditions(source, 20)
    context = evaluator.Context(source, captions, "birds", 1, 3, str(tmp_path))
    config = eval_config(
        ["r_precision"],
        damsm_text_encoder=str(FIXTURES / "damsm_text_encoder.pth"),
        damsm_image_encoder=str(FIXTURES / "damsm_image_encoder.pth"),
        damsm_captions=str(FIXTURES / "damsm_captions.pickle"),
    )
    metric = r_precision_evaluation.make_metric(config, context)
    images = np.random.default_rng(0).uniform(-1, 1, (20, 64, 64, 3)).astype(np.float32)
    report = metric({"stage1": images})
    # The same trials by hand: the draws and the shuffle both come from the context's seed.
    vocabulary = damsm_captions.load_captions(config.damsm_captions)
    text = damsm_text.load_text_encoder(config.damsm_text_encoder)
    trials = r_precision_evaluation.prepare_trials(
        context, vocabulary.wordtoix, text, 25, np.random.default_rng(3)
    )
    codes = damsm_image.load_image_encoder(config.damsm_image_encoder).image_codes(images)
    candidates = np.concatenate([trials.true_codes[:, None], trials.codes[trials.mismatched]], 1)
    hits = r_precision_lib.top1_hits(codes, candidates)
    mean, std = r_precision_lib.grouped_mean_std(hits, np.random.default_rng(3))
    assert report["r_precision"] == pytest.approx(mean) and report["std"] == pytest.approx(std)
    assert report["stage"] == "stage1" and report["trials"] == 20
    assert report["protocol"] == "attngan" and report["mismatched"] == 99
    assert report["image_encoder"] == config.damsm_image_encoder
    assert evaluator.scalars({"r_precision": report})["eval/r_precision/r_precision"] == mean
