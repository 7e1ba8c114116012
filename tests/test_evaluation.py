"""The evaluation package: metrics by name from `config.eval`, each against a direct count."""

import ast
import subprocess
import sys

import numpy as np
import pytest
from conftest import eval_config
from PIL import Image

from stackgan_jax.data import source as source_lib
from stackgan_jax.data import synthetic_birds
from stackgan_jax.evaluation import attributes, evaluator
from stackgan_jax.evaluation import config as evaluation_config
from stackgan_jax.evaluation import fid as fid_evaluation
from stackgan_jax.metrics import attribute_classifier, fid, inception_features, inception_weights


def test_training_imports_no_metric_until_one_is_asked_for():
    code = (
        "import sys, stackgan_jax.train; "
        "print(sorted(m for m in sys.modules if m.startswith('stackgan_jax.metrics')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_evaluate_cli_has_one_flag_per_eval_config_field():
    code = (
        "from absl import flags; from stackgan_jax import evaluate; evaluate._define_flags(); "
        "f = flags.FLAGS; "
        "print({n: (f[n].default, f[n].help) for n in "
        "('metrics', 'num_samples', 'batch_size', 'ref_stats', 'fid_protocol', 'fid_weights', "
        "'inception_checkpoint')})"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    defaults = evaluation_config.default_config()
    want = {
        name: (list(value) if name == "metrics" else value, evaluation_config.HELP[name])
        for name, value in defaults.items()
        if name != "every_steps"
    }
    assert ast.literal_eval(result.stdout.strip()) == want


def test_an_unknown_metric_is_refused_before_anything_loads(data_dir):
    test = source_lib.load_split("synthetic_birds/4_per_species_2_species", "test", data_dir)
    with pytest.raises(ValueError, match=r"unknown metrics \['ssim'\]; choose from"):
        evaluator.make_evaluator(
            eval_config(["attributes", "ssim"]),
            test,
            dataset="synthetic_birds",
            stage=1,
            seed=0,
            workdir="unused",
        )


def test_attribute_accuracy_reads_the_attributes_captions_name(data_dir):
    test = source_lib.load_split("synthetic_birds/4_per_species_2_species", "test", data_dir)
    classifier = attribute_classifier.load_classifier()
    real = attribute_classifier.center_crop(test.images_small, 64)
    captions = [c[0] for c in test.captions]
    scores = attributes.attribute_accuracy(classifier, real, captions)
    # Real birds with their own captions: as good as the classifier on real renders.
    assert scores["body_colour"] >= 0.9
    # The same birds under captions of other birds mostly disagree.
    shuffled = captions[1:] + captions[:1]
    wrong = attributes.attribute_accuracy(classifier, real, shuffled)
    assert wrong["body_colour"] < scores["body_colour"]
    # A direct count for one attribute.
    predicted = attribute_classifier.predict(classifier, real)["body_colour"]
    named = [synthetic_birds.caption_attributes(c).get("body_colour") for c in captions]
    rows = [i for i, value in enumerate(named) if value is not None]
    assert scores["body_colour"] == pytest.approx(np.mean([predicted[i] == named[i] for i in rows]))


def test_upsample_is_bicubic_interpolation():
    rng = np.random.default_rng(0)
    images = rng.uniform(-0.8, 0.8, (2, 16, 16, 3)).astype(np.float32)
    got = fid_evaluation.upsample(images, 64)
    # PIL's bicubic (Keys, a = −0.5) on each float channel; away from the borders, where the two
    # extend the image differently.
    want = np.stack(
        [
            np.stack(
                [
                    np.asarray(Image.fromarray(images[n, :, :, c], "F").resize((64, 64), 3))
                    for c in range(3)
                ],
                axis=-1,
            )
            for n in range(2)
        ]
    )
    np.testing.assert_allclose(got[:, 8:-8, 8:-8], want[:, 8:-8, 8:-8], atol=1e-4)
    assert np.abs(fid_evaluation.upsample(np.full((1, 4, 4, 3), 1.0, np.float32), 16)).max() <= 1.0


def test_stage2_fid_also_scores_the_enlarged_stage1_images(data_dir, tmp_path):
    source = source_lib.load_split(
        "synthetic_birds/4_per_species_2_species", "test", data_dir, text_dim=384
    )
    context = evaluator.Context(source, [], "synthetic_birds", 2, 0, str(tmp_path))
    metric = fid_evaluation.make_metric(eval_config(["fid"]), context)
    rng = np.random.default_rng(1)
    low = rng.uniform(-1, 1, (6, 64, 64, 3)).astype(np.float32)
    high = rng.uniform(-1, 1, (6, 256, 256, 3)).astype(np.float32)
    report = metric({"stage1": low, "stage2": high})
    network = inception_weights.load_fid_inception(None)
    reference = fid.load_statistics(
        fid_evaluation.reference_statistics_path(str(tmp_path), 256, network)
    )

    def distance(images):
        features = inception_features.fid_features(network, images)
        return fid.frechet_distance(*fid.feature_statistics(features), *reference)

    assert report["stage"] == "stage2"
    assert report["fid"] == pytest.approx(distance(high), rel=1e-6)
    assert report["fid_stage1_upsampled"] == pytest.approx(
        distance(fid_evaluation.upsample(low, 256)), rel=1e-6
    )
    assert report["fid_stage1_upsampled"] != pytest.approx(report["fid"], rel=1e-3)
