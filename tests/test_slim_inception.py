"""StackGAN's IS network: the slim Inception-v3 vs Keras's, its checkpoint reader, `evaluate`."""

import json
import pathlib

import jax
import numpy as np
import pytest
import scipy.special
import tensorflow as tf
from conftest import eval_config, record_calls, stackgan_inception_score
from PIL import Image
from sklearn.datasets import load_sample_image

from stackgan_jax import evaluate, visualize
from stackgan_jax.metrics import slim_inception
from stackgan_jax.weights import MissingWeightsError

NUM_CLASSES = 51  # the birds model: 50 test classes and the background
SHADOW = slim_inception.MOVING_AVERAGE_SUFFIX


def _creation_order(layers):
    """Keras names layers conv2d, conv2d_1, ... as it makes them; `model.layers` is graph order."""

    def index(layer):
        suffix = layer.name.rpartition("_")[2]
        return int(suffix) if suffix.isdigit() else 0

    return sorted(layers, key=index)


def _write_checkpoint(prefix, variables, *, v1=False):
    """What `tf.compat.v1.train.Saver` writes: its V2 save op, or the V1 format of TF <= 0.11.

    The raw ops save 22M parameters in a second; variables in a graph take half a minute.
    """
    names, values = list(variables), [np.asarray(v, np.float32) for v in variables.values()]
    if v1:
        tf.raw_ops.Save(filename=str(prefix), tensor_names=names, data=values)
    else:
        slices = [""] * len(names)
        tf.raw_ops.SaveV2(
            prefix=str(prefix), tensor_names=names, shape_and_slices=slices, tensors=values
        )
    return str(prefix)


def _assert_params_equal(params, variables):
    expected = slim_inception.params_from_slim_variables(variables, "expected")
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), params, expected)


@pytest.fixture(scope="module")
def photos():
    return np.stack([load_sample_image("china.jpg"), load_sample_image("flower.jpg")])


@pytest.fixture(scope="module")
def keras_net(photos):
    """(Keras InceptionV3, its weights under slim's variable names, the photos' network input).

    The input is `preprocess`'s output, as `class_probabilities` passes it: one compiled network.

    Random weights; batch-norm statistics set by one training-mode pass over the photos (momentum
    0), so activations keep their scale through the 94 layers and the logits depend on the image,
    then perturbed, with random betas and logit biases.
    """
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.applications.InceptionV3(
        weights=None, classes=NUM_CLASSES, classifier_activation=None
    )
    layers = model.layers
    convs = _creation_order(x for x in layers if isinstance(x, tf.keras.layers.Conv2D))
    norms = _creation_order(x for x in layers if isinstance(x, tf.keras.layers.BatchNormalization))
    inputs = slim_inception.preprocess(photos)
    rng = np.random.default_rng(0)
    for norm in norms:
        channels = norm.beta.shape[0]
        norm.set_weights([rng.normal(0, 0.2, channels), np.zeros(channels), np.ones(channels)])
        norm.momentum = 0.0
    model(np.asarray(inputs), training=True)
    for norm in norms:
        beta, mean, var = norm.get_weights()
        shift = rng.normal(0, 0.1, mean.shape) * np.sqrt(var)
        norm.set_weights([beta, mean + shift, var * rng.uniform(0.7, 1.4, var.shape)])
    dense = model.get_layer("predictions")
    dense.set_weights([dense.get_weights()[0], rng.normal(0, 0.5, NUM_CLASSES)])

    # Keras's conv2d_bn layers come in slim's order: the i-th is slim's i-th convolution.
    variables = {}
    for (_, scope), conv, norm in zip(slim_inception.conv_scopes(), convs, norms, strict=True):
        variables[f"{scope}/weights"] = conv.get_weights()[0]
        statistics = ("beta", "moving_mean", "moving_variance")
        for name, value in zip(statistics, norm.get_weights(), strict=True):
            variables[f"{scope}/BatchNorm/{name}"] = value
    logits = slim_inception.LOGITS_VARIABLES
    variables[logits["kernel"]], variables[logits["bias"]] = dense.get_weights()
    return model, variables, inputs


@pytest.fixture(scope="module")
def checkpoint(keras_net, tmp_path_factory):
    """A V2 checkpoint whose moving-average shadows hold the Keras weights; the raw ones differ."""
    _, variables, _ = keras_net
    stored = {name: value + 1.0 for name, value in variables.items()}
    stored |= {f"{name}/{SHADOW}": value for name, value in variables.items()}
    directory = tmp_path_factory.mktemp("birds_valid299")
    return _write_checkpoint(directory / "model.ckpt-5000", stored)


def test_matches_keras_inception_v3(keras_net, photos):
    model, variables, inputs = keras_net
    params = slim_inception.params_from_slim_variables(variables, "keras")
    expected = model(np.asarray(inputs), training=False).numpy()
    actual = np.asarray(slim_inception.slim_forward(params, inputs))
    # The two photos' logits differ: the comparison sees the images, not just the biases.
    assert np.abs(expected[0] - expected[1]).max() > 0.1 * np.abs(expected).max()
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * scale)
    # Probabilities over the 50 known classes: the background logit dropped before the softmax.
    probabilities = slim_inception.class_probabilities(params, photos, batch_size=2)
    assert probabilities.shape == (2, NUM_CLASSES - 1)
    np.testing.assert_allclose(
        probabilities, scipy.special.softmax(expected[:, 1:], axis=1), rtol=1e-4, atol=1e-7
    )


def test_name_map_covers_the_network_in_slim_order():
    names = slim_inception.variable_names()
    assert set(names) == set(slim_inception.parameter_shapes(NUM_CLASSES))
    assert len(set(names.values())) == len(names) == 94 * 4 + 2
    scopes = [scope for _, scope in slim_inception.conv_scopes()]
    assert scopes[:6] == ["conv0", "conv1", "conv2", "conv3", "conv4"] + [
        "mixed_35x35x256a/branch1x1/Conv"
    ]
    assert scopes[-2:] == [
        "mixed_8x8x2048b/branch3x3dbl/Conv_3",
        "mixed_8x8x2048b/branch_pool/Conv",
    ]
    assert names["mixed_8x8x2048a/tower_1_mixed_conv/var"] == (
        "mixed_8x8x2048a/branch3x3dbl/Conv_2/BatchNorm/moving_variance"
    )


def test_reader_prefers_the_moving_averages(keras_net, checkpoint):
    _, variables, _ = keras_net
    params = slim_inception.load_slim_inception(checkpoint)
    assert slim_inception.num_classes_of(params) == NUM_CLASSES
    _assert_params_equal(params, variables)


def test_reader_without_moving_averages_reads_the_variables(keras_net, tmp_path):
    _, variables, _ = keras_net
    # The V1 format (a single file), which TF 0.11 and older wrote; no shadows in it.
    prefix = _write_checkpoint(tmp_path / "model.ckpt-5000", variables, v1=True)
    _assert_params_equal(slim_inception.load_slim_inception(prefix), variables)
    # A folder with a `checkpoint` state file names its latest checkpoint.
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-5000"\n')
    params = slim_inception.load_slim_inception(tmp_path, num_classes=NUM_CLASSES)
    _assert_params_equal(params, variables)


def test_reader_errors_name_the_file_and_the_variable(keras_net, checkpoint, tmp_path):
    _, variables, _ = keras_net
    with pytest.raises(MissingWeightsError, match=r"nor .*model\.ckpt-5000\.index.*birds_valid299"):
        slim_inception.load_slim_inception(tmp_path / "model.ckpt-5000")
    with pytest.raises(MissingWeightsError, match="StackGAN-inception-model"):
        slim_inception.resolve_checkpoint(None)
    # 50 logits asked of the birds model, which has 51 (the background is one).
    with pytest.raises(ValueError, match=r"logits/logits/weights has shape \(2048, 51\), the"):
        slim_inception.load_slim_inception(checkpoint, num_classes=50)

    lost = "mixed_17x17x768c/branch7x7dbl/Conv_3/BatchNorm/moving_mean"
    partial = {name: value for name, value in variables.items() if name != lost}
    prefix = _write_checkpoint(tmp_path / "partial.ckpt", partial)
    with pytest.raises(ValueError, match=f"lacks 1 of the 378 variables .*: {lost}\\."):
        slim_inception.load_slim_inception(prefix)

    # The 1x3 and 3x1 convolutions of a branch swapped.
    swapped = "mixed_8x8x2048a/branch3x3/Conv_1/weights"
    transposed = variables | {swapped: variables[swapped].transpose(1, 0, 2, 3)}
    prefix = _write_checkpoint(tmp_path / "transposed.ckpt", transposed)
    with pytest.raises(
        ValueError, match=rf"{swapped} has shape \(3, 1, 384, 384\), the network needs \(1, 3,"
    ):
        slim_inception.load_slim_inception(prefix)


def test_preprocess_is_scipy_imresize_bilinear(photos):
    rng = np.random.default_rng(0)
    for image in [rng.integers(0, 256, (64, 64, 3), np.uint8), photos[0][:256, :256], photos[1]]:
        pil = Image.fromarray(image).resize((299, 299), Image.BILINEAR)
        expected = np.asarray(pil, np.float32) / 127.5 - 1
        actual = np.asarray(slim_inception.preprocess(image[None]))[0]
        # PIL's fixed-point weights round a few ties the other way.
        levels = np.abs(actual - expected) * 127.5
        assert levels.max() < 1.001 and (levels > 0.5).mean() < 0.01, image.shape
    # Generator-range floats read as the 8-bit PNGs sample.py writes; 299 pixels pass as they are.
    floats = rng.uniform(-1.2, 1.2, (1, 299, 299, 3)).astype(np.float32)
    np.testing.assert_allclose(
        slim_inception.preprocess(floats), visualize.to_uint8(floats) / 127.5 - 1, atol=1e-6
    )


def test_evaluate_reports_the_inception_score_of_each_stage(
    stage1_run, keras_net, checkpoint, tmp_path, monkeypatch
):
    _, workdir, _ = stage1_run
    with pytest.raises(MissingWeightsError, match="StackGAN-inception-model"):
        evaluate.evaluate(
            workdir, eval_config(["is"], inception_checkpoint=str(tmp_path / "absent"))
        )
    calls = record_calls(monkeypatch, slim_inception, "class_probabilities")
    report = evaluate.evaluate(
        workdir,
        eval_config(["is"], num_samples=12, batch_size=8, inception_checkpoint=checkpoint),
        seed=3,
    )
    scores = report["is"]
    assert scores["splits"] == 10 and scores["checkpoint"] == checkpoint
    assert set(scores) == {"stage1", "splits", "checkpoint", "classifier"}
    assert scores["classifier"] == "stackgan_finetuned"

    # The network read the checkpoint's shadows (the Keras weights) and the 12 Stage-I images.
    [(params, images, probabilities)] = calls
    _assert_params_equal(params, keras_net[1])
    assert images.shape == (12, 64, 64, 3) and probabilities.shape == (12, NUM_CLASSES - 1)
    # inception_score.py's formula on each of 10 splits of the rows shuffled with the seed.
    assert np.isfinite(list(scores["stage1"].values())).all() and scores["stage1"]["mean"] > 1
    assert scores["stage1"] == pytest.approx(stackgan_inception_score(probabilities, seed=3))

    eval_dir = pathlib.Path(workdir, "eval")
    written = json.loads((eval_dir / "step_00000004.json").read_text())
    assert written["is"] == scores
    logged = {
        value.tag: float(tf.make_ndarray(value.tensor))
        for events in eval_dir.glob("events.out.tfevents.*")
        for event in tf.compat.v1.train.summary_iterator(str(events))
        for value in event.summary.value
    }
    assert logged["eval/is/stage1/mean"] == pytest.approx(scores["stage1"]["mean"])
    assert logged["eval/is/stage1/std"] == pytest.approx(scores["stage1"]["std"])
