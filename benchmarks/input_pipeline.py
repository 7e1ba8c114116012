r"""Throughput of the tf.data input pipeline at the Stage-I and Stage-II sizes; one JSON line.

    python benchmarks/input_pipeline.py --config=configs/stage1.py:birds \
        [--batch_size=64] [--num_examples=1024] [--batches=50] [--warmup_batches=5]

Runs `input_pipeline.make_dataset` + `input_pipeline.global_batches` (random crop and flip,
caption sampling, wrong images for arch 'tf', transfer to the devices as global sharded arrays)
over an in-memory synthetic `Source`: random uint8 images at the load sizes 304 and 76, random
embeddings, random class labels. Stage-I crops 64 pixels from the 76-pixel images and Stage-II
256 from the 304-pixel ones, whichever stage --config names; the config supplies the arch and
the global batch. Each batch is waited for on the devices; the step itself is not run, so this
is the most the pipeline can feed. Fields: benchmarks/README.md. Logs go to stderr.
"""

import dataclasses
import json
import pathlib
import statistics
import sys
import time
from collections.abc import Sequence

import jax
import numpy as np
from absl import app, flags

# `python benchmarks/input_pipeline.py` puts benchmarks/ on the path; imports need the repo root.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import harness  # noqa: E402
from stackgan_jax import models, parallel  # noqa: E402
from stackgan_jax.data import input_pipeline  # noqa: E402

_CONFIG, _BATCH_SIZE = harness.define_config_flags()
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 1024, "Synthetic examples held in memory.")
_NUM_CAPTIONS = flags.DEFINE_integer("num_captions", 10, "Caption embeddings per example.")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 200, "Class labels drawn (CUB has 200).")
_BATCHES = flags.DEFINE_integer("batches", 50, "Timed batches per size.")
_WARMUP = flags.DEFINE_integer("warmup_batches", 5, "Untimed batches per size first.")
_STAGES = flags.DEFINE_list("stages", ["1", "2"], "Stages to time: 1 (64 px) and/or 2 (256 px).")

# Load sizes of the reference's pickles (spec §1.4).
LOAD_SIZES = {1: 76, 2: 304}


@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticSource:
    """An in-memory split of random data that satisfies `input_pipeline.Source`."""

    images: np.ndarray
    images_small: np.ndarray
    embeddings: np.ndarray
    num_captions: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def synthetic_source(
    num_examples: int, text_dim: int, num_captions: int, num_classes: int, seed: int = 0
) -> SyntheticSource:
    """Random uint8 images at 304 and 76 pixels, normal embeddings and uniform class labels."""
    rng = np.random.default_rng(seed)

    def images(size: int) -> np.ndarray:
        return rng.integers(0, 256, (num_examples, size, size, 3), dtype=np.uint8)

    return SyntheticSource(
        images=images(LOAD_SIZES[2]),
        images_small=images(LOAD_SIZES[1]),
        embeddings=rng.standard_normal((num_examples, num_captions, text_dim), dtype=np.float32),
        num_captions=np.full(num_examples, num_captions, np.int32),
        labels=rng.integers(0, num_classes, num_examples, dtype=np.int64),
    )


def time_stage(
    source: SyntheticSource,
    *,
    stage: int,
    arch: str,
    global_batch_size: int,
    batches: int,
    warmup: int,
    seed: int,
    mesh: jax.sharding.Mesh,
) -> dict[str, float]:
    """Throughput of one stage's pipeline.

    Args:
      source: the in-memory split.
      stage: 1 (64-pixel crops) or 2 (256-pixel crops).
      arch: 'tf' or 'pytorch' (what the batches hold).
      global_batch_size: examples per batch.
      batches: timed batches.
      warmup: untimed batches first (tf.data's autotuning and buffers fill up here).
      seed: the pipeline's seed.
      mesh: the device mesh the batches are sharded over.

    Returns:
      'images_per_sec' over the timed batches, 'sec_per_batch_median' (of the per-batch waits)
      and 'setup_s' (building the dataset and the first `warmup` batches).
    """
    start = time.perf_counter()
    dataset = input_pipeline.make_dataset(
        source, stage=stage, arch=arch, global_batch_size=global_batch_size, seed=seed
    )
    iterator = input_pipeline.global_batches(dataset, mesh)
    for _ in range(warmup):
        jax.block_until_ready(next(iterator))
    setup_s = time.perf_counter() - start
    waits = []
    start = time.perf_counter()
    for _ in range(batches):
        before = time.perf_counter()
        jax.block_until_ready(next(iterator))
        waits.append(time.perf_counter() - before)
    elapsed = time.perf_counter() - start
    return {
        "images_per_sec": batches * global_batch_size / elapsed,
        "sec_per_batch_median": statistics.median(waits),
        "setup_s": setup_s,
    }


def main(argv: Sequence[str]) -> None:
    """Times each requested stage and prints the JSON record."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    batch = _BATCH_SIZE.value or config.train.global_batch_size
    stages = sorted({int(s) for s in _STAGES.value})
    if not stages or not set(stages) <= set(LOAD_SIZES):
        raise app.UsageError(f"--stages must name 1 and/or 2, got {_STAGES.value}")
    start = time.perf_counter()
    source = synthetic_source(
        _NUM_EXAMPLES.value, config.model.text_dim, _NUM_CAPTIONS.value, _NUM_CLASSES.value
    )
    source_s = time.perf_counter() - start
    mesh = parallel.make_mesh()
    results = {}
    for stage in stages:
        size = models.IMAGE_SIZE[stage]
        results[str(size)] = time_stage(
            source,
            stage=stage,
            arch=config.model.arch,
            global_batch_size=batch,
            batches=_BATCHES.value,
            warmup=_WARMUP.value,
            seed=config.seed,
            mesh=mesh,
        )
    device = jax.devices()[0]
    record = {
        "benchmark": "input_pipeline",
        "platform": device.platform,
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "config_name": config.name,
        "arch": config.model.arch,
        "batch": batch,
        "num_examples": _NUM_EXAMPLES.value,
        "batches": _BATCHES.value,
        "warmup_batches": _WARMUP.value,
        "source_s": source_s,
        "images_per_sec": {size: r["images_per_sec"] for size, r in results.items()},
        "sizes": results,
    }
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main)
