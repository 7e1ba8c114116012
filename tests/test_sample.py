"""Sampling and evaluation from a real (tiny) training workdir."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from absl import app
from conftest import eval_config, record_calls, stackgan_inception_score
from PIL import Image

from stackgan_jax import evaluate, inference, sample
from stackgan_jax.evaluation import fid as fid_evaluation
from stackgan_jax.metrics import fid, inception_features

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTORCH_FID_RANDOM = os.path.join(REPOSITORY, "tests", "fixtures", "pytorch_fid_random.pth")


def run_cli(module, *flags):
    return subprocess.run(
        [sys.executable, "-m", module, *flags],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPOSITORY,
    )


def test_sampling_cli_writes_the_grid_and_single_images(stage1_run, tmp_path):
    _, workdir, _ = stage1_run
    grid, singles = tmp_path / "grid.png", tmp_path / "singles"
    result = run_cli(
        "stackgan_jax.sample",
        f"--workdir={workdir}",
        "--text=this bird has a red body and blue wings.",
        "--text=a small yellow bird.",
        "--num_samples=3",
        f"--output={grid}",
        f"--individual_dir={singles}",
    )
    assert result.returncode == 0, result.stderr
    picture = np.asarray(Image.open(grid))
    # Two sentences, each a caption band and one row of three 64-pixel images.
    assert picture.shape[1] == 3 * (64 + 2) + 2
    assert picture.shape[0] == 2 * (24 + 64 + 2 * 2)
    assert len(os.listdir(singles)) == 6
    assert np.asarray(Image.open(singles / "001_a_small_yellow_bird_2.png")).shape == (64, 64, 3)


def test_the_same_seed_gives_the_same_images_and_another_seed_others(stage1_run):
    _, workdir, state = stage1_run
    model = inference.load(workdir)
    assert model.step == 4
    embeddings = np.random.default_rng(0).normal(size=(2, 384)).astype(np.float32)
    first, _ = sample.sample(model, embeddings, num_samples=3, seed=7)
    again, _ = sample.sample(model, embeddings, num_samples=3, seed=7)
    other, _ = sample.sample(model, embeddings, num_samples=3, seed=8)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    assert first.shape == (2, 3, 64, 64, 3)
    # The checkpoint's generator, with its stored running averages, is what sampling ran.
    for got, want in zip(
        jax.tree.leaves(model.generator),
        jax.tree.leaves(state.generator.variables),
        strict=True,
    ):
        np.testing.assert_array_equal(got, want)


def test_sampling_errors_are_clear(stage1_run, tmp_path):
    _, workdir, _ = stage1_run
    with pytest.raises(app.UsageError, match="must not be empty"):
        sample.read_sentences(["a bird", "  "], None)
    with pytest.raises(inference.NoCheckpointError, match="no checkpoints/ folder"):
        inference.load(str(tmp_path / "missing"))
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(inference.NoCheckpointError, match="holds no finished checkpoint"):
        inference.load(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match=r"embeddings must be \[N, 384\]"):
        inference.generate(inference.load(workdir), np.zeros((2, 100)), jax.random.key(0))
    result = run_cli("stackgan_jax.sample", f"--workdir={tmp_path / 'missing'}", "--text=a bird")
    assert result.returncode == 1
    assert "error:" in result.stderr and "Traceback" not in result.stderr


def test_evaluate_writes_a_report_with_the_real_image_ceiling_and_fid(stage1_run, data_dir):
    _, workdir, _ = stage1_run
    report = evaluate.evaluate(
        workdir, eval_config(["attributes", "fid"], num_samples=12, batch_size=8)
    )
    assert report["num_samples"] == 12 and report["step"] == 4
    scores = report["attributes"]
    assert set(scores) == {"stage1", "real"}
    assert scores["real"]["stage1"]["body_colour"] >= 0.9
    assert all(0.0 <= v <= 1.0 for v in scores["stage1"].values())
    # Untrained 64-pixel birds are far from the real ones; the real statistics are cached.
    assert report["fid"]["stage"] == "stage1" and report["fid"]["fid"] > 10
    # Cached per network: the input convention and the weight file's digest name the file.
    assert pathlib.Path(workdir, "eval", "fid_reference_64px_tf_7ff4a85c.npz").exists()
    assert report["fid"]["input_convention"] == "tf"
    assert report["fid"]["protocol"] == "ttur" and report["fid"]["num_images"] == 12
    written = json.loads(pathlib.Path(workdir, "eval", "step_00000004.json").read_text())
    assert written["attributes"] == scores


def test_evaluate_reads_pytorch_fids_file_for_fid_and_the_imagenet_score(
    stage1_run, tmp_path, monkeypatch
):
    # A copy: other tests read the shared run's eval/ scalars, which this report would overwrite.
    workdir = str(shutil.copytree(stage1_run[1], tmp_path / "stage1"))
    calls = record_calls(monkeypatch, inception_features, "imagenet_probabilities")
    with pytest.warns(UserWarning, match="not comparable"):  # random weights, not the release
        report = evaluate.evaluate(
            workdir,
            eval_config(
                ["fid", "is"],
                num_samples=12,
                batch_size=8,
                fid_weights=PYTORCH_FID_RANDOM,
                inception_checkpoint=PYTORCH_FID_RANDOM,
            ),
            seed=3,
        )
    [(network, images, probabilities)] = calls
    assert images.shape == (12, 64, 64, 3) and probabilities.shape == (12, 1008)

    # FID: the .pth network in pytorch-fid's convention, against real statistics cached for it.
    assert report["fid"]["input_convention"] == "pytorch-fid"
    assert report["fid"]["protocol"] == "pytorch-fid"
    assert report["fid"]["weights"] == PYTORCH_FID_RANDOM
    cache = fid_evaluation.reference_statistics_path(workdir, 64, network)
    assert cache.name.startswith("fid_reference_64px_pytorch-fid_")
    mu, sigma = fid.feature_statistics(inception_features.fid_features(network, images))
    expected = fid.frechet_distance(mu, sigma, *fid.load_statistics(cache))
    assert report["fid"]["fid"] == pytest.approx(expected, rel=1e-6)

    # IS: improved-gan's 1008-way softmax, 10 splits of the images shuffled with the seed.
    scores = report["is"]
    assert scores["classifier"] == "imagenet_1008" and scores["splits"] == 10
    assert scores["stage1"] == pytest.approx(stackgan_inception_score(probabilities, seed=3))
    assert scores["stage1"]["mean"] > 1
