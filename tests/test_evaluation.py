"""The evaluation package: metrics by name from `config.eval`, each against a direct count."""

import ast
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from conftest import DATASET, eval_config, record_calls
from PIL import Image

from stackgan_jax import evaluate, visualize
from stackgan_jax.data import source as source_lib
from stackgan_jax.data import synthetic_birds
from stackgan_jax.errors import BadFileError, ConfigError, UserError
from stackgan_jax.evaluation import attributes, evaluator, image_files
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
    defaults = evaluation_config.default_config()
    names = tuple(name for name in defaults if name != "every_steps")
    code = (
        "from absl import flags; from stackgan_jax import evaluate; evaluate._define_flags(); "
        "f = flags.FLAGS; "
        f"print({{n: (f[n].default, f[n].help) for n in {names!r}}})"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
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
    # The TF protocol scores 8-bit pixels, so Stage-I is enlarged from its 8-bit pixels.
    low_8bit = visualize.to_uint8(low) / np.float32(127.5) - 1
    assert report["fid_stage1_upsampled"] == pytest.approx(
        distance(fid_evaluation.upsample(low_8bit, 256)), rel=1e-6
    )
    assert report["fid_stage1_upsampled"] != pytest.approx(report["fid"], rel=1e-3)


FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.mark.slow
def test_images_saved_by_evaluate_score_as_the_generator_that_wrote_them(
    stage1_run, data_dir, tmp_path
):
    _, workdir, _ = stage1_run
    dump = tmp_path / "dump"
    config = eval_config(
        ["attributes", "fid", "clip_score"],
        num_samples=12,
        batch_size=4,
        clip_weights=str(FIXTURES / "clip" / "tiny_clip_hf"),
    )
    generated = evaluate.evaluate(workdir, config, step=4, data_dir=data_dir, save_images=str(dump))
    assert sorted(p.name for p in dump.iterdir()) == ["captions.txt", "stage1"]
    assert len(list((dump / "stage1").iterdir())) == 12
    read = evaluate.evaluate_images(str(dump), config, dataset=DATASET, data_dir=data_dir)
    assert read["num_samples"] == 12 and read["captions"] == str(dump / "captions.txt")
    # TF FID scores 8-bit pixels (as IS does, by the same rounding), so it gives the same
    # number. The attribute classifier and CLIP are fed the generator's floats, so the files'
    # rounding can move them a little (an image at a decision boundary may flip).
    assert read["attributes"]["real"] == generated["attributes"]["real"]
    assert read["attributes"]["stage1"] == pytest.approx(generated["attributes"]["stage1"], abs=0.1)
    assert read["fid"]["fid"] == pytest.approx(generated["fid"]["fid"], rel=1e-6)
    assert read["clip_score"]["clip_score"] == pytest.approx(
        generated["clip_score"]["clip_score"], rel=1e-3
    )
    assert (dump / "evaluation.json").exists()
    with pytest.raises(UserError, match="exists; choose a new directory"):
        evaluate.evaluate(workdir, config, step=4, data_dir=data_dir, save_images=str(dump))


def write_pngs(directory, names, size):
    rng = np.random.default_rng(0)
    for name in names:
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8)).save(path)


def test_any_directory_of_images_is_read_in_the_order_of_its_paths(tmp_path):
    # AttnGAN's and DM-GAN's dump layout: valid/single/<class>/<image>_s-1.png.
    names = ["single/002.b/y_s-1.png", "single/001.a/z_s-1.png", "single/001.a/x_s-1.jpg"]
    write_pngs(tmp_path, names, 256)
    (tmp_path / "single" / "notes.txt").write_text("not an image")
    (tmp_path / "captions.txt").write_text("first\nsecond\nthird\n")
    dump = image_files.find_images(str(tmp_path))
    images = image_files.read_images(dump)
    assert dump.stage == 2 and list(images) == ["stage2"] and len(dump) == 3
    assert dump.captions == ["first", "second", "third"]
    order = sorted(names)
    for i, name in enumerate(order):
        pixels = np.asarray(Image.open(tmp_path / name).convert("RGB"))
        np.testing.assert_array_equal(visualize.to_uint8(images["stage2"][i]), pixels)
    other = tmp_path / "other.txt"
    other.write_text("one\ntwo\n")
    with pytest.raises(BadFileError, match="has 2 lines for the 3 images"):
        image_files.find_images(str(tmp_path), str(other))
    (tmp_path / "captions.txt").unlink()
    write_pngs(tmp_path, ["single/003.c/w_s-1.png"], 64)
    with pytest.raises(BadFileError, match="one stage's images must share a size"):
        image_files.read_images(image_files.find_images(str(tmp_path)))


def test_images_without_captions_or_dataset_allow_only_the_metrics_that_need_neither(tmp_path):
    write_pngs(tmp_path, ["imgs_n000000_gpu0.png", "imgs_n000001_gpu0.png"], 64)
    dump = image_files.find_images(str(tmp_path))
    assert dump.stage == 1 and dump.captions is None
    with pytest.raises(ConfigError, match="pass --captions=FILE"):
        evaluate.evaluate_images(str(tmp_path), eval_config(["clip_score"]))
    with pytest.raises(ConfigError, match="fid without --ref_stats needs the dataset's test"):
        evaluate.evaluate_images(str(tmp_path), eval_config(["fid"]))
    with pytest.raises(ConfigError, match="attributes needs the dataset's test split"):
        evaluate.evaluate_images(str(tmp_path), eval_config(["attributes"]))


def test_captions_map_to_their_test_images_for_the_class_draws(data_dir):
    source = source_lib.load_split(DATASET, "test", data_dir)
    order = evaluator.held_out_order(source, 6)
    captions = [source.captions[i][c] for i, c in order]
    np.testing.assert_array_equal(evaluator.caption_images(source, captions), [i for i, _ in order])
    # In another order, by their text: each maps to a test image that has it.
    shuffled = captions[::-1]
    for image, caption in zip(evaluator.caption_images(source, shuffled), shuffled, strict=True):
        assert caption in source.captions[image]
    with pytest.raises(ConfigError, match="1 of the 2 captions are not captions of the test"):
        evaluator.caption_images(source, [captions[0], "a bird no test image has"])


def test_a_protocol_sets_its_fields_and_flags_given_beside_it_override_them():
    code = (
        "from absl import flags; from stackgan_jax import evaluate; evaluate._define_flags(); "
        "flags.FLAGS(['x', '--images_dir=d', '--protocol=dfgan', '--num_samples=500']); "
        "c = evaluate.eval_config_from_flags(); "
        "print((c.metrics, c.fid_protocol, c.num_samples, c.batch_size))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert ast.literal_eval(result.stdout.strip()) == (("fid", "clip_score"), "dfgan", 500, 100)
    stackgan = evaluation_config.with_protocol(evaluation_config.default_config(), "stackgan")
    assert (stackgan.metrics, stackgan.num_samples) == (("is",), 30_000)
    with pytest.raises(ConfigError, match="unknown protocol 'nosuch'"):
        evaluation_config.with_protocol(stackgan, "nosuch")


def test_fid_and_the_imagenet_score_load_pytorch_fids_file_once(monkeypatch, tmp_path):
    calls = record_calls(monkeypatch, inception_weights, "load_fid_inception")
    weights = str(FIXTURES / "pytorch_fid_random.pth")
    ref_stats = tmp_path / "ref.npz"
    fid.save_statistics(ref_stats, np.zeros(2048), np.eye(2048))
    config = eval_config(
        ["fid", "is"], fid_weights=weights, inception_checkpoint=weights, ref_stats=str(ref_stats)
    )
    context = evaluator.Context(None, None, "images", 1, 0, None)
    evaluator.load_metrics(config, context)
    assert [call[0] for call in calls] == [weights]
