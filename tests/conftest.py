"""Test setup: 8 virtual CPU devices and a persistent compilation cache.

Both must be in place before JAX is imported anywhere. `JAX_NUM_CPU_DEVICES` is used instead of
`XLA_FLAGS`, which TensorFlow in the same process parses too.
"""

import importlib.util
import os
import pathlib
import subprocess
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["JAX_NUM_CPU_DEVICES"] = "8"
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(pathlib.Path(__file__).resolve().parents[1] / ".jax_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from configs import stage1 as stage1_configs  # noqa: E402
from configs import stage2 as stage2_configs  # noqa: E402
from stackgan_jax.evaluation import config as evaluation_config  # noqa: E402

# Tests compare numbers computed on different paths; full float32 matmul precision everywhere.
jax.config.update("jax_default_matmul_precision", "highest")

# Fixtures shared by the end-to-end tests: a real prepared dataset and a trained Stage-I workdir.


# 2 species x 4 images per split: one global batch of 8 per epoch.
DATASET = "synthetic_birds/4_per_species_2_species"


FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def fixture_script(name):
    """tests/fixtures/`name`.py as a module (the scripts import torch only in their main).

    The fixtures folder goes on `sys.path`, as it is when a script runs, so that the scripts'
    imports of each other and of `golden_common` work here too.
    """
    if str(FIXTURES) not in sys.path:
        sys.path.append(str(FIXTURES))
    spec = importlib.util.spec_from_file_location(name, FIXTURES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def embeddings_file(directory, dim):
    """`directory`/embeddings.npy: two random caption embeddings of `dim`, for the sample CLI."""
    path = directory / "embeddings.npy"
    np.save(path, np.random.default_rng(0).normal(size=(2, dim)).astype(np.float32))
    return path


def eval_config(metrics, **fields):
    """`config.eval` as the `evaluate` CLI's defaults make it, with `metrics` and `fields`."""
    config = evaluation_config.default_config()
    config.update(metrics=tuple(metrics), **fields)
    return config


def debug_config(stage, data_dir, num_steps, **overrides):
    """The `debug` config on the tiny prepared dataset, saving every 2 steps."""
    config = (stage1_configs if stage == 1 else stage2_configs).get_config("debug")
    config.data.dataset = DATASET
    config.data.data_dir = data_dir
    config.train.num_steps = num_steps
    config.checkpoint_every_steps = 2
    config.sample_every_steps = 1000
    config.update(overrides)
    return config


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A TFDS data dir holding DATASET, made by the prepare CLI."""
    directory = tmp_path_factory.mktemp("tfds")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "stackgan_jax.data.prepare",
            "--dataset=synthetic_birds",
            f"--data_dir={directory}",
            "--images_per_species=4",
            "--species_per_split=2",
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return str(directory)


@pytest.fixture(scope="session")
def stage1_run(data_dir, tmp_path_factory):
    """(config, workdir, final state) of four uninterrupted Stage-I debug steps."""
    from stackgan_jax import train

    workdir = str(tmp_path_factory.mktemp("stage1"))
    config = debug_config(1, data_dir, num_steps=4)
    return config, workdir, train.train_and_evaluate(config, workdir)


def record_calls(monkeypatch, module, name):
    """Wraps `module.name` so that each call's positional arguments and result are recorded.

    Returns:
      The list that receives `(*args, result)` per call.
    """
    original = getattr(module, name)
    calls = []

    def recorded(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append((*args, result))
        return result

    monkeypatch.setattr(module, name, recorded)
    return calls


def stackgan_inception_score(probabilities, seed, splits=10):
    """StackGAN's `inception_score.py` formula, written out independently of our code.

    The rows are shuffled with `seed`; then exp(mean KL(p(y|x) || p(y))) on each of `splits`
    parts.

    Returns:
      {"mean", "std"} over the parts.
    """
    shuffled = probabilities[np.random.default_rng(seed).permutation(len(probabilities))]
    scores = []
    for i in range(splits):
        part = shuffled[i * len(shuffled) // splits : (i + 1) * len(shuffled) // splits]
        kl = part * (np.log(part) - np.log(part.mean(axis=0, keepdims=True)))
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return {"mean": np.mean(scores), "std": np.std(scores)}
