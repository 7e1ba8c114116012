r"""Times the jitted training step on synthetic inputs and prints one JSON line.

    python benchmarks/train_step.py --config=configs/stage1.py:birds \
        [--batch_size=64] [--steps=20] [--warmup=3] [--dtype=float32|bfloat16]

The step is the one `stackgan_jax.train` runs (replicated state, batch sharded over a `('data',)`
mesh of all devices, donated state), fed one in-memory batch of random images and embeddings;
Stage-II wraps a randomly initialised frozen Stage-I generator. The record on stdout holds the
seconds per step, images/s, analytic model FLOPs, MFU, XLA's hardware FLOPs, HFU and peak device
memory (fields: benchmarks/README.md). Logs go to stderr. TensorFlow is never imported, so this
runs where only JAX is installed.
"""

import json
import pathlib
import sys
from collections.abc import Sequence

from absl import app, flags
from ml_collections import config_flags

# `python benchmarks/train_step.py` puts benchmarks/ on the path; the package needs the repo root.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import harness  # noqa: E402

_CONFIG, _BATCH_SIZE = harness.define_config_flags()
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps after compilation.")
_DTYPE = flags.DEFINE_enum(
    "dtype", None, ["float32", "bfloat16"], "Computation dtype (default: the config's)."
)
_PIPELINED = flags.DEFINE_bool(
    "pipelined", True, "Also time --steps steps dispatched back to back (one block at the end)."
)


def config_label() -> str:
    """The --config flag as given, e.g. 'configs/stage1.py:debug' (':NAME' added if left out)."""
    # ml_collections keeps the argument after ':' in the "filename" it reports.
    given = config_flags.get_config_filename(flags.FLAGS["config"])
    return given if ":" in given else f"{given}:{_CONFIG.value.name}"


def main(argv: Sequence[str]) -> None:
    """Runs the benchmark and prints its JSON record."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = harness.configure(_CONFIG.value, _BATCH_SIZE.value, _DTYPE.value)
    record = harness.benchmark(
        config,
        num_steps=_STEPS.value,
        warmup=_WARMUP.value,
        config_label=config_label(),
        pipelined=_PIPELINED.value,
    )
    # The GPU/TPU machines have JAX only: the step must not need TensorFlow.
    assert "tensorflow" not in sys.modules, "benchmarks/train_step.py imported TensorFlow"
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main)
