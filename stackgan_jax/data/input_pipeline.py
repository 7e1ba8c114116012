"""The training input pipeline: tf.data over an in-memory dataset, a pure function of (seed, step).

Batch `k` of a run is computed from the seed and `k` alone (spec §1.4–§1.5):

- epoch `e = k // steps_per_epoch` visits the examples in a permutation keyed by (seed, e)
  (`tf.random.experimental.index_shuffle`, so no permutation is materialised and any position is
  found directly); the last `N mod global_batch_size` examples of each permutation are dropped,
  as the references drop the remainder;
- every random choice of the step (crop offsets, flips, captions, wrong images) comes from
  stateless TF ops keyed by (seed, k), drawn for the whole global batch, so row `r` of batch `k`
  is the same whatever ran before, in whatever order tf.data's parallel map ran it, and however
  many processes share the batch.

A run therefore resumes at any step without replaying the stream, and resumes exactly after its
process or device count changed. Only a change of the global batch size or of the dataset (the
two things the step -> examples map depends on) moves the stream on to the next epoch boundary;
`resume` decides that from the `PipelineState` a checkpoint stores.

Each process computes only its contiguous rows of each global batch; `global_batches` assembles
them into global `jax.Array`s sharded along the mesh's `data` axis.
"""

import collections
import dataclasses
import itertools
from collections.abc import Iterator
from typing import Protocol

import jax
import numpy as np
import tensorflow as tf
from absl import logging

from stackgan_jax import models, parallel
from stackgan_jax.errors import ConfigError

# Captions averaged into one text condition (spec §1.5): TRAIN.NUM_EMBEDDING = 4 in the TF code,
# one random caption in StackGAN-Pytorch.
CAPTIONS_PER_CONDITION = {"tf": 4, "pytorch": 1}
# The TF reference's fix for a wrong image of the real one's class: shift it by [100, 200).
WRONG_SHIFT_LOW, WRONG_SHIFT_HIGH = 100, 200


def _hide_gpus_from_tf() -> None:
    """Keeps TF off the GPUs, whose memory belongs to JAX."""
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        # Some other code ran TF ops first, and TF's devices can no longer be changed.
        logging.warning("TensorFlow was initialised before the input pipeline; it may use GPUs.")


_hide_gpus_from_tf()


class Source(Protocol):
    """A random-access dataset split held in memory, e.g. `data.source.ArraySource`.

    Read-only properties, so that frozen dataclasses and named tuples satisfy it.
    """

    @property
    def images(self) -> np.ndarray:
        """Images at the Stage-II load size, uint8 [N, 304, 304, 3]."""

    @property
    def images_small(self) -> np.ndarray:
        """Images at the Stage-I load size, uint8 [N, 76, 76, 3]."""

    @property
    def embeddings(self) -> np.ndarray:
        """Caption embeddings, float32 [N, E, D]; rows past `num_captions` are padding."""

    @property
    def num_captions(self) -> np.ndarray:
        """Valid embedding rows of each example, int [N] (at least 1)."""

    @property
    def labels(self) -> np.ndarray:
        """Class ids, int [N]; -1 for datasets without classes."""


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
    """Full global batches per epoch; the remainder is dropped, as in both references.

    Args:
        num_examples: examples in the split.
        global_batch_size: examples per step over all processes.

    Returns:
        floor(num_examples / global_batch_size).

    Raises:
        ValueError: the split is smaller than one global batch.
    """
    steps = num_examples // global_batch_size
    if steps < 1:
        raise ConfigError(
            f"The split has {num_examples} examples, fewer than one global batch "
            f"({global_batch_size})."
        )
    return steps


def make_dataset(
    source: Source,
    *,
    stage: int,
    arch: str,
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
) -> tf.data.Dataset:
    """The endless stream of this process's slices of the global training batches.

    The dataset holds a TF copy of the stage's images and of the embeddings (making it
    briefly takes a second one).

    Args:
        source: the training split in memory.
        stage: 1 (64-pixel crops of `images_small`) or 2 (256-pixel crops of `images`).
        arch: 'tf' (mean of 4 captions, a separate wrong image) or 'pytorch' (one caption; the
            training step mismatches images and text inside the batch, so no wrong image).
        global_batch_size: examples per step over all processes; a multiple of the device count.
        seed: the stream's seed.
        start_step: the global step of the first batch; batch k is the same whatever the start.
        process_index: this process's index; `jax.process_index()` by default.
        process_count: the number of processes; `jax.process_count()` by default.

    Returns:
        A dataset whose element k is the dict of NumPy-convertible tensors, rows
        [i * B / P, (i + 1) * B / P) of global batch `start_step + k` (process i of P, global
        batch B): 'image' float32 [B/P, s, s, 3] in [-1, 1], 'embedding' float32 [B/P, D] and,
        for arch 'tf', 'wrong_image' float32 [B/P, s, s, 3].

    Raises:
        ValueError: an unknown stage or arch, a batch that does not divide over devices and
            processes, a split smaller than one batch, or an example without captions.
    """
    if stage not in models.IMAGE_SIZE:
        raise ConfigError(f"stage must be one of {tuple(models.IMAGE_SIZE)}, got {stage!r}")
    if arch not in CAPTIONS_PER_CONDITION:
        raise ConfigError(f"arch must be one of {tuple(CAPTIONS_PER_CONDITION)}, got {arch!r}")
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    parallel.check_global_batch(global_batch_size, process_count)
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not in [0, {process_count}).")
    if np.min(source.num_captions) < 1:
        raise ValueError("Every example needs at least one caption embedding.")

    images_array = source.images_small if stage == 1 else source.images
    num_examples = len(images_array)
    epoch_steps = steps_per_epoch(num_examples, global_batch_size)
    local_batch_size = global_batch_size // process_count
    first_row = process_index * local_batch_size
    rows = slice(first_row, first_row + local_batch_size)
    # TF copies of the arrays, captured by the functions below as inputs, not graph constants.
    # (A `tf.numpy_function` reading the NumPy arrays would save the copy, but Python in the
    # data path hangs the interpreter's exit while an iterator is alive.)
    images = tf.convert_to_tensor(images_array)
    embeddings = tf.convert_to_tensor(source.embeddings)
    labels = tf.convert_to_tensor(source.labels, tf.int64)
    num_captions = tf.convert_to_tensor(source.num_captions, tf.int64)
    base_seed = tf.constant(seed, tf.int64)

    def plan(step: tf.Tensor) -> dict[str, tf.Tensor]:
        """This process's rows of global batch `step`: the examples and their random draws."""
        epoch = step // epoch_steps
        positions = (step % epoch_steps) * global_batch_size + tf.range(
            first_row, first_row + local_batch_size, dtype=tf.int64
        )
        indices = tf.random.experimental.index_shuffle(
            positions,
            seed=tf.stack([base_seed, epoch]),
            max_index=tf.constant(num_examples - 1, tf.int64),
        )
        text_key, image_key, wrong_key, wrong_image_key = tf.unstack(
            tf.random.experimental.stateless_split(tf.stack([base_seed, step]), num=4)
        )

        def uniform(key: tf.Tensor, width: int) -> tf.Tensor:
            # Drawn for the whole global batch, then sliced, so a row does not depend on how
            # the batch is split over processes.
            draws = tf.random.stateless_uniform([global_batch_size, width], key, dtype=tf.float64)
            return draws[rows]

        planned = {
            "image": (indices, uniform(image_key, 3)),
            "embedding": _mean_embedding(
                tf.gather(embeddings, indices),
                tf.gather(num_captions, indices),
                uniform(text_key, embeddings.shape[1]),
                CAPTIONS_PER_CONDITION[arch],
            ),
        }
        if arch == "tf":
            # Mismatched pairs are made in two places because the references make them from
            # different things: `tf` draws another image (of another class) from the dataset,
            # which only the pipeline can do; `pytorch` pairs D's features of one real image
            # with the next one's condition, which exist only inside the step (`steps.py`).
            wrong = _wrong_indices(indices, uniform(wrong_key, 2), labels)
            planned["wrong_image"] = (wrong, uniform(wrong_image_key, 3))
        return planned

    def example(row: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Cuts one row's images; the crops run in parallel over examples."""
        return {
            key: value if key == "embedding" else _crop(images, *value, models.IMAGE_SIZE[stage])
            for key, value in row.items()
        }

    return (
        tf.data.Dataset.counter(start_step)
        .map(plan)
        .unbatch()
        .map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(local_batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def _crop(images: tf.Tensor, index: tf.Tensor, draws: tf.Tensor, size: int) -> tf.Tensor:
    """The reference's random crop and horizontal flip, then scaling to [-1, 1] (spec §1.4).

    Args:
        images: uint8 [N, S, S, 3].
        index: int64 scalar, the image to crop.
        draws: float64 [3] uniform in [0, 1): row offset, column offset, flip.
        size: crop size s.

    Returns:
        float32 [s, s, 3]: the crop at offsets floor((S - s) * U), mirrored if U_flip < 0.5.
    """
    offsets = tf.cast(tf.floor(draws[:2] * (images.shape[1] - size)), tf.int64)
    window = tf.slice(
        images, tf.concat([[index], offsets, [0]], axis=0), [1, size, size, images.shape[3]]
    )[0]
    window = tf.cond(draws[2] < 0.5, lambda: tf.reverse(window, axis=[1]), lambda: window)
    return tf.cast(window, tf.float32) * (2 / 255) - 1


def _mean_embedding(
    embeddings: tf.Tensor, num_captions: tf.Tensor, keys: tf.Tensor, count: int
) -> tf.Tensor:
    """Mean of `count` of each example's valid caption embeddings, drawn without replacement.

    Args:
        embeddings: float32 [B, E, D].
        num_captions: int64 [B], valid rows of each example.
        keys: float64 [B, E] uniform in [0, 1): random sort keys of the rows.
        count: rows to average; an example with fewer valid rows averages all of them.

    Returns:
        float32 [B, D].
    """
    valid = tf.range(keys.shape[1], dtype=tf.int64) < num_captions[:, None]
    # The valid rows in random order, then the padding: the first `count` are a uniform draw.
    _, order = tf.math.top_k(-tf.where(valid, keys, 2.0), k=min(count, keys.shape[1]))
    chosen = (
        tf.one_hot(order, keys.shape[1])
        * tf.cast(tf.gather(valid, order, batch_dims=1), tf.float32)[..., None]
    )
    weights = tf.reduce_sum(chosen, axis=1)
    weights /= tf.reduce_sum(weights, axis=1, keepdims=True)
    return tf.einsum("be,bed->bd", weights, embeddings)


def _wrong_indices(indices: tf.Tensor, draws: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Mismatched images for the 'tf' discriminator loss (spec §1.5).

    A uniform pick among the other N - 1 examples; if it has the real image's class, it is
    shifted by an offset in [100, 200) mod N, without a re-check, as in the TF reference. This
    leaves the class with datasets stored class by class with classes of under ~100 examples
    (CUB), as intended. The reference draws one offset per batch; here each example draws its
    own, so that rows stay independent of the batch's split over processes. Examples without a
    class (label -1) take any other example.

    Args:
        indices: int64 [B], the real examples.
        draws: float64 [B, 2] uniform in [0, 1): pick, shift.
        labels: int64 [N] class ids.

    Returns:
        int64 [B] indices of the wrong images.
    """
    num_examples = labels.shape[0]
    pick = tf.cast(tf.floor(draws[:, 0] * (num_examples - 1)), tf.int64)
    pick += tf.cast(pick >= indices, tf.int64)
    shift = WRONG_SHIFT_LOW + tf.cast(
        tf.floor(draws[:, 1] * (WRONG_SHIFT_HIGH - WRONG_SHIFT_LOW)), tf.int64
    )
    own_class = tf.gather(labels, indices)
    same_class = (tf.gather(labels, pick) == own_class) & (own_class >= 0)
    return tf.where(same_class, (pick + shift) % num_examples, pick)


def global_batches(
    dataset: tf.data.Dataset, mesh: jax.sharding.Mesh, prefetch: int = 2
) -> Iterator[dict[str, jax.Array]]:
    """Global batches sharded along the mesh's `data` axis, `prefetch` of them ahead on device.

    Args:
        dataset: this process's slices, from `make_dataset`.
        mesh: the device mesh (`parallel.make_mesh()`).
        prefetch: batches transferred ahead of the one being consumed; transfers are
            asynchronous, so they overlap with the running step.

    Yields:
        dicts of global `jax.Array`s with the dataset's keys, sharded by `parallel.batch_sharded`.
    """
    batches = (parallel.to_global(local, mesh) for local in dataset.as_numpy_iterator())
    queue = collections.deque(itertools.islice(batches, prefetch))
    while queue:
        # Refill before handing out, so that `prefetch` transfers stay in flight.
        queue.extend(itertools.islice(batches, 1))
        yield queue.popleft()


@dataclasses.dataclass(frozen=True)
class PipelineState:
    """What a checkpoint records to resume the data stream; store `dataclasses.asdict` of it.

    Attributes:
        num_examples: examples in the training split.
        global_batch_size: examples per step over all processes.
        step_offset: the data stream's step minus the training step; not 0 after the stream
            moved on to an epoch boundary.
    """

    num_examples: int
    global_batch_size: int
    step_offset: int = 0

    def data_step(self, train_step: int) -> int:
        """The step of the data stream that feeds training step `train_step`."""
        return train_step + self.step_offset


def resume(
    stored: PipelineState | None, num_examples: int, global_batch_size: int, train_step: int
) -> tuple[PipelineState, str | None]:
    """Where to restart the data stream when training resumes at `train_step`.

    The stream depends on the process and device counts not at all, so it continues exactly
    after a topology change. A different dataset size or global batch size changes which
    examples each step holds; then the stream starts at the first epoch boundary at or after
    the stored stream's position, so no example of a partly seen epoch is seen twice.

    Args:
        stored: the checkpoint's state; None for a fresh run.
        num_examples: examples in the training split now.
        global_batch_size: the global batch size now.
        train_step: the training step to resume at.

    Returns:
        (state, warning): store `state` in later checkpoints and pass
        `state.data_step(train_step)` as `make_dataset`'s `start_step`; `warning` is None when
        the stream continues exactly, and otherwise says what changed, for the caller to log.
    """
    current = PipelineState(num_examples, global_batch_size)
    if stored is None:
        return current, None
    if (stored.num_examples, stored.global_batch_size) == (num_examples, global_batch_size):
        return stored, None
    stored_epoch_steps = steps_per_epoch(stored.num_examples, stored.global_batch_size)
    epoch = -(-stored.data_step(train_step) // stored_epoch_steps)  # ceil
    data_step = epoch * steps_per_epoch(num_examples, global_batch_size)
    warning = (
        f"The data stream was made for {stored.num_examples} examples in global batches of "
        f"{stored.global_batch_size}; it now has {num_examples} in batches of "
        f"{global_batch_size}, so it restarts at the boundary of epoch {epoch} (data step "
        f"{data_step}) for training step {train_step}."
    )
    return dataclasses.replace(current, step_offset=data_step - train_step), warning
