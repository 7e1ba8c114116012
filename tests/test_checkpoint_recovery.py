"""What survives a damaged checkpoint or a hard kill: resume, sampling and Stage-II fall back.

A damaged checkpoint is made as a disk error, a full disk or an interrupted copy leaves one: a file
cut short or gone. The runs are the tiny real ones of test_train.py.
"""

import contextlib
import glob
import logging
import os
import random
import re
import shutil
import subprocess
import time

import jax
import pytest
from conftest import debug_config, embeddings_file
from test_sample import run_cli
from test_train import REPOSITORY, STAGE1_RUN, assert_trees_equal, restore_on, train_command

from stackgan_jax import checkpointing, inference, parallel, train
from stackgan_jax import state as state_lib


def truncate(path, size):
    with open(path, "r+b") as f:
        f.truncate(size)


def cut_data_files(item_directory):
    """Cuts every data file of an item (those in its OCDBT `d/` folders) to 50 bytes."""
    paths = glob.glob(os.path.join(item_directory, "**", "d", "*"), recursive=True)
    assert paths
    for path in paths:
        truncate(path, 50)


# Ways to damage a checkpoint: (item, how, the start of the error it gives).
DAMAGE = {
    "data files cut short": ("generator", cut_data_files, "OUT_OF_RANGE: "),
    "tree metadata cut short": (
        "generator",
        lambda item: truncate(os.path.join(item, "_METADATA"), 100),
        "JSONDecodeError: ",
    ),
    "item deleted": ("generator", shutil.rmtree, 'KeyError: Item "generator" was not found'),
    "meta cut short": (
        "meta",
        lambda item: truncate(os.path.join(item, "metadata"), 20),
        "JSONDecodeError: ",
    ),
}


def damage(workdir, step, how="data files cut short"):
    item, damage_item, _ = DAMAGE[how]
    damage_item(os.path.join(workdir, "checkpoints", str(step), item))


def step_path(workdir, step):
    return os.path.join(workdir, "checkpoints", str(step))


def notice(step, workdir, how, used):
    """A regex of the one-line warning that the checkpoint at `step` is damaged."""
    item, _, error = DAMAGE[how]
    return (
        rf"The checkpoint at step {step} in {re.escape(step_path(workdir, step))} is damaged "
        rf"\({item}: {re.escape(error)}[^\n]*\); using step {used}"
    )


def warnings_of(caplog):
    """Our warnings (not Orbax's 'Given directory is read only')."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.module == "checkpointing"
    ]


@pytest.fixture
def damaged_workdir(stage1_run, tmp_path):
    """A copy of the Stage-I run (checkpoints at 2 and 4) with step 4's generator cut short."""
    workdir = str(shutil.copytree(stage1_run[1], tmp_path / "damaged"))
    damage(workdir, 4)
    return workdir


@pytest.mark.parametrize("how", DAMAGE)
def test_loading_skips_a_damaged_checkpoint_and_refuses_it_by_step(
    stage1_run, tmp_path, caplog, how
):
    _, original, _ = stage1_run
    workdir = str(shutil.copytree(original, tmp_path / "run"))
    damage(workdir, 4, how)
    with caplog.at_level(logging.WARNING):
        model = inference.load(workdir)
    assert model.step == 2
    [warning] = warnings_of(caplog)
    assert re.fullmatch(notice(4, workdir, how, used=2) + r"\.", warning)
    assert_trees_equal(model.generator, inference.load(original, 2).generator)
    item, _, error = DAMAGE[how]
    with pytest.raises(
        checkpointing.DamagedCheckpointError,
        match=rf"^The checkpoint at step 4 in {re.escape(step_path(workdir, 4))} is damaged "
        rf"\({item}: {re.escape(error)}.*\)\. Other checkpoints there: \[2\]\.$",
    ):
        inference.load(workdir, 4)
    # Readers move and delete nothing.
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]

    damage(workdir, 2)
    with pytest.raises(
        checkpointing.DamagedCheckpointError,
        match=r"^No checkpoint in .* can be read: The checkpoint at step 4 .*; "
        r"The checkpoint at step 2 .*\(generator: OUT_OF_RANGE: .*\)\. Move them aside",
    ):
        inference.load(workdir)


def test_training_resumes_from_the_newest_readable_checkpoint_and_sets_the_damaged_one_aside(
    stage1_run, damaged_workdir, caplog
):
    config, _, uninterrupted = stage1_run
    workdir = damaged_workdir
    with caplog.at_level(logging.INFO):
        resumed = train.train_and_evaluate(config, workdir)
    [warning] = warnings_of(caplog)
    moved_to = step_path(workdir, 4) + ".damaged"
    assert re.fullmatch(
        notice(4, workdir, "data files cut short", used=2) + rf", moved it to {moved_to}\.",
        warning,
    )
    assert f"Resumed from step 2 in {workdir}." in caplog.messages
    # Steps 3 and 4 trained again and step 4 saved again: the uninterrupted run's state.
    assert int(resumed.step) == 4
    for net in ("generator", "discriminator"):
        assert_trees_equal(getattr(resumed, net), getattr(uninterrupted, net))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4", "4.damaged"]
    assert all(
        os.path.getsize(path) == 50
        for path in glob.glob(os.path.join(moved_to, "generator", "**", "d", "*"), recursive=True)
    )
    assert inference.load(workdir).step == 4

    # Damaged again at the same step: set aside under the next free name.
    damage(workdir, 4)
    manager = checkpointing.make_manager(workdir)
    moved = checkpointing.set_aside(manager, [4])
    assert {step: str(path) for step, path in moved.items()} == {4: f"{moved_to}-2"}
    assert manager.all_steps() == [2]


def test_stage2_takes_its_frozen_stage1_generator_from_the_newest_readable_checkpoint(
    stage1_run, damaged_workdir, data_dir, caplog
):
    _, original, _ = stage1_run
    config = debug_config(2, data_dir, num_steps=2, stage1_workdir=damaged_workdir)
    optimizer = state_lib.make_optimizer(config.train, steps_per_epoch=1)
    abstract = train.abstract_state(config, optimizer, parallel.make_mesh())
    # The fields a Stage-II run checks, as the Stage-I run wrote them.
    meta = checkpointing.read_meta(checkpointing.make_manager(original, read_only=True), 2)
    with caplog.at_level(logging.WARNING):
        variables, step = checkpointing.restore_stage1_generator(
            damaged_workdir, config.stage1_step, abstract.stage1_generator, meta
        )
    assert step == 2
    [warning] = warnings_of(caplog)
    assert re.fullmatch(notice(4, damaged_workdir, "data files cut short", used=2) + r"\.", warning)
    assert_trees_equal(variables, inference.load(original, 2).generator)
    with pytest.raises(checkpointing.DamagedCheckpointError, match=r"step 4 .* \(generator: "):
        checkpointing.restore_stage1_generator(damaged_workdir, 4, abstract.stage1_generator, meta)
    assert sorted(os.listdir(os.path.join(damaged_workdir, "checkpoints"))) == ["2", "4"]


def test_the_clis_fall_back_from_a_damaged_checkpoint_and_refuse_it_by_step(
    damaged_workdir, tmp_path
):
    embeddings = embeddings_file(tmp_path, 384)
    result = run_cli(
        "stackgan_jax.sample",
        f"--workdir={damaged_workdir}",
        f"--embeddings={embeddings}",
        f"--output={tmp_path / 'grid.png'}",
    )
    assert result.returncode == 0, result.stderr
    assert "step 2)" in result.stdout
    assert re.search(notice(4, damaged_workdir, "data files cut short", used=2), result.stderr)
    # The reads still in flight when the damaged one failed report nothing.
    assert "Traceback" not in result.stderr and "Event loop is closed" not in result.stderr

    result = run_cli("stackgan_jax.evaluate", f"--workdir={damaged_workdir}", "--step=4")
    assert result.returncode == 1
    assert "error: The checkpoint at step 4 in" in result.stderr
    assert "Traceback" not in result.stderr


TMP_SUFFIX = ".orbax-checkpoint-tmp"  # Orbax writes a checkpoint here, then renames it.


def committed_steps(checkpoints):
    names = os.listdir(checkpoints) if os.path.isdir(checkpoints) else []
    return sorted(int(name) for name in names if name.isdigit())


class Attempt:
    """One start of the training command, its output in a file."""

    def __init__(self, command, env, log_path):
        self.started_ns = time.time_ns()
        self.log_path = log_path
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=REPOSITORY, env=env
            )

    def unfinished_writes(self, checkpoints):
        """The steps whose checkpoints this attempt has begun but not finished writing.

        An earlier attempt killed mid-write leaves the same directory behind, older.
        """
        steps = []
        for name in os.listdir(checkpoints) if os.path.isdir(checkpoints) else []:
            with contextlib.suppress(FileNotFoundError):  # renamed meanwhile
                changed = os.stat(os.path.join(checkpoints, name)).st_ctime_ns
                if name.endswith(TMP_SUFFIX) and changed >= self.started_ns:
                    steps.append(int(name.removesuffix(TMP_SUFFIX)))
        return steps

    def reached(self, event, step, checkpoints):
        """Whether step's checkpoint is being written by this attempt ('write') or 'committed'."""
        if event == "write":
            return step in self.unfinished_writes(checkpoints)
        return step in committed_steps(checkpoints)

    def kill_after(self, event, step, checkpoints, delay, timeout=300):
        """SIGKILLs the process `delay` seconds after `reached`, unless it has ended by then.

        Returns:
          The process's return code: -9 if killed.
        """
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and not self.reached(event, step, checkpoints):
            assert time.monotonic() < deadline, self.output()[-3000:]
            time.sleep(0.005)
        time.sleep(delay)
        self.process.kill()
        return self.process.wait()

    def output(self):
        with open(self.log_path) as log:
            return log.read()


@pytest.mark.slow
def test_sigkill_at_random_moments_then_restarts_end_as_the_uninterrupted_run(
    stage1_run, data_dir, tmp_path
):
    config, _, uninterrupted = stage1_run
    workdir = tmp_path / "killed"
    checkpoints = str(workdir / "checkpoints")
    command = train_command(data_dir, workdir, **STAGE1_RUN)
    # The matmul precision of the in-process run it is compared with (conftest).
    env = {**os.environ, "JAX_DEFAULT_MATMUL_PRECISION": "highest"}
    rng = random.Random(17)
    # (what the kill waits for, then a random delay of up to this many seconds). A process's
    # first checkpoint write takes seconds (Orbax compiles a slice per array), so kills 1 and 3
    # land in a write: of a fresh run, then of a resumed one. Kill 2 lands anywhere in the
    # second half of a run: a step, the write of step 4 or the last moments before it exits.
    plan = [("write", 2, 0.0), ("committed", 2, 1.0), ("write", 4, 0.2)]
    kills = []
    for index, (event, step, max_delay) in enumerate(plan):
        resumed_from = max(committed_steps(checkpoints), default=0)
        if step <= resumed_from:
            continue  # A kill came too late to stop the previous attempt before this moment.
        attempt = Attempt(command, env, tmp_path / f"attempt_{index}.log")
        delay = rng.uniform(0.0, max_delay)
        returncode = attempt.kill_after(event, step, checkpoints, delay)
        if resumed_from:
            assert f"Resumed from step {resumed_from} " in attempt.output()
        seconds = (time.time_ns() - attempt.started_ns) / 1e9
        cut_short = attempt.unfinished_writes(checkpoints)
        kills.append((event, step, round(delay, 2), returncode, cut_short, round(seconds, 1)))
    print("kills (after, step, delay, return code, writes cut short, seconds):", kills)
    assert kills[0][3:5] == (-9, [2]), kills

    resumed_from = max(committed_steps(checkpoints), default=0)
    last = subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=REPOSITORY, env=env
    )
    assert last.returncode == 0, last.stderr[-3000:]
    if resumed_from:
        assert f"Resumed from step {resumed_from} " in last.stderr
    # Every unfinished write was replaced when its step was saved again.
    assert sorted(os.listdir(checkpoints)) == ["2", "4"]
    restored = restore_on(str(workdir), config, jax.devices())
    assert int(restored.step) == 4
    for net in ("generator", "discriminator"):
        assert_trees_equal(getattr(restored, net), getattr(uninterrupted, net))
