"""Trains StackGAN Stage-I or Stage-II.

    python -m stackgan_jax.main --config=configs/stage1.py:birds [--workdir=DIR]
    python -m stackgan_jax.main --config=configs/stage2.py:birds --config.stage1_workdir=DIR

This file is kept short: the loop lives in `train.py`, the step in `steps.py`.
"""

import logging as pylogging
import os

import jax
from absl import app, flags, logging
from etils import epath
from ml_collections import config_flags

from stackgan_jax import cli, parallel, presets, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Training config, e.g. configs/stage1.py:birds.", lock_config=True
)
flags.DEFINE_string(
    "workdir", None, "Run directory (local or gs://); default runs/<name>/stage<N>."
)
flags.DEFINE_bool(
    "jax_distributed",
    False,
    "Call jax.distributed.initialize() first: needed on multi-host TPU pods and GPU clusters.",
)
flags.DEFINE_string(
    "coordinator_address",
    None,
    "With --jax_distributed where the cluster is not auto-detected: process 0's host:port.",
)
flags.DEFINE_integer("num_processes", None, "With --coordinator_address: how many processes.")
flags.DEFINE_integer("process_id", None, "With --coordinator_address: this process's index.")
flags.mark_flags_as_required(["config"])


def _quiet_orbax(record: pylogging.LogRecord) -> bool:
    """Drops Orbax's INFO lines (dozens per checkpoint); its warnings and errors still show."""
    return record.levelno >= pylogging.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname


def main(argv: list[str]) -> None:
    """Sets up devices and the workdir, then trains."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    parallel.maybe_initialize_distributed(
        FLAGS.jax_distributed, FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id
    )
    logging.get_absl_handler().addFilter(_quiet_orbax)

    config = FLAGS.config
    workdir = FLAGS.workdir or presets.default_workdir(config)
    logging.info("Workdir: %s", workdir)
    if jax.process_index() == 0:
        epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    train.train_and_evaluate(config, workdir)


if __name__ == "__main__":
    cli.run(main)
