"""The tf.data input pipeline on in-memory sources whose pixels and embeddings name themselves.

Every image has its example index in channel 0 and its own row and column numbers in channels 1
and 2, so a crop tells which example it came from, where it was cut and whether it was flipped.
Caption embedding row e of example i is the one-hot vector of e followed by i, so a mean of rows
shows which rows were averaged; padding rows hold 100, so averaging one of them shows too.
"""

import dataclasses

import numpy as np
import pytest

from stackgan_jax import parallel
from stackgan_jax.data import input_pipeline

NUM_SLOTS = 10  # caption embedding rows per example
PADDING = 100.0
CAPTION_COUNTS = (10, 5, 4, 3, 1)  # valid rows, cycled over the examples
CLASS_SIZE = 8


@dataclasses.dataclass(frozen=True)
class Source:
    images: np.ndarray
    images_small: np.ndarray
    embeddings: np.ndarray
    num_captions: np.ndarray
    labels: np.ndarray


def _self_describing_images(num_examples, size, coordinate_step):
    images = np.empty((num_examples, size, size, 3), np.uint8)
    images[..., 0] = np.arange(num_examples)[:, None, None]
    coordinates = np.arange(size) // coordinate_step
    images[..., 1] = coordinates[None, :, None]
    images[..., 2] = coordinates[None, None, :]
    return images


def make_source(num_examples, *, classes=True, large_images=False):
    num_captions = np.resize(np.array(CAPTION_COUNTS, np.int32), num_examples)
    embeddings = np.full((num_examples, NUM_SLOTS, NUM_SLOTS + 1), PADDING, np.float32)
    for i, count in enumerate(num_captions):
        embeddings[i, :count, :NUM_SLOTS] = np.eye(NUM_SLOTS)[:count]
        embeddings[i, :count, NUM_SLOTS] = i
    return Source(
        # 304 rows do not fit in uint8; Stage-II images carry coordinates // 2.
        images=_self_describing_images(num_examples, 304, 2)
        if large_images
        else np.zeros((num_examples, 304, 304, 3), np.uint8),
        images_small=_self_describing_images(num_examples, 76, 1),
        embeddings=embeddings,
        num_captions=num_captions,
        labels=np.arange(num_examples) // CLASS_SIZE if classes else np.full(num_examples, -1),
    )


@pytest.fixture(scope="module")
def source():
    return make_source(256)


@pytest.fixture(scope="module")
def stream(source):
    """The first 8 batches (two epochs of 4 steps) of the default stream."""
    return take(source, 8)


def take(source, steps, **kwargs):
    options = dict(stage=1, arch="tf", global_batch_size=64, seed=7) | kwargs
    dataset = input_pipeline.make_dataset(source, **options)
    return list(dataset.take(steps).as_numpy_iterator())


def _window(coordinates, step, margin):
    """(offset, flipped) of the window of source coordinates // step that a crop line shows."""
    size = len(coordinates)
    for offset in range(margin):
        window = (offset + np.arange(size)) // step
        for flipped in (False, True):
            if np.array_equal(coordinates, window[::-1] if flipped else window):
                return offset, flipped
    raise AssertionError(f"not a window of the source: {coordinates}")


def decode(crop):
    """(example index, row offset, column offset, flipped) of a Stage-I or Stage-II crop."""
    stage2 = crop.shape[0] == 256
    step, margin = (2, 48) if stage2 else (1, 12)
    pixels = np.rint((crop + 1) * 127.5).astype(np.int64)
    index = pixels[0, 0, 0]
    np.testing.assert_array_equal(pixels[..., 0], index)
    row_offset, row_flipped = _window(pixels[:, 0, 1], step, margin)
    col_offset, flipped = _window(pixels[0, :, 2], step, margin)
    assert not row_flipped
    # Every pixel of the crop is the same window of the source.
    np.testing.assert_array_equal(pixels[..., 1], pixels[:, :1, 1] + 0 * pixels[..., 1])
    np.testing.assert_array_equal(pixels[..., 2], pixels[:1, :, 2] + 0 * pixels[..., 2])
    return index, row_offset, col_offset, flipped


def example_indices(batch, key="image"):
    return np.array([decode(crop)[0] for crop in batch[key]])


@pytest.mark.parametrize(
    ("stage", "arch", "size"), [(1, "tf", 64), (1, "pytorch", 64), (2, "tf", 256)]
)
def test_batch_keys_shapes_dtypes_and_range(stage, arch, size):
    source = make_source(16, large_images=stage == 2)
    (batch,) = take(source, 1, stage=stage, arch=arch, global_batch_size=8)
    keys = {"image", "embedding"} | ({"wrong_image"} if arch == "tf" else set())
    assert set(batch) == keys
    assert batch["embedding"].shape == (8, NUM_SLOTS + 1)
    for key in keys - {"embedding"}:
        images = batch[key]
        assert images.shape == (8, size, size, 3) and images.dtype == np.float32
        assert images.min() >= -1 and images.max() <= 1
    assert batch["embedding"].dtype == np.float32


def test_stage2_crops_are_256_windows_of_the_304_images():
    source = make_source(32, large_images=True)
    decoded = [
        decode(crop)
        for batch in take(source, 2, stage=2, global_batch_size=16)
        for crop in batch["image"]
    ]
    indices, row_offsets, col_offsets, flips = (np.array(v) for v in zip(*decoded, strict=True))
    assert sorted(indices) == list(range(32))
    # floor((304 - 256) * U): offsets in [0, 47], spread over the range.
    assert row_offsets.max() > 24 > row_offsets.min() and col_offsets.max() > 24 > col_offsets.min()
    assert 0 < flips.mean() < 1


def test_crops_and_flips_follow_the_reference_and_vary(stream):
    decoded = [decode(crop) for batch in stream[:4] for crop in batch["image"]]
    indices, row_offsets, col_offsets, flips = (np.array(v) for v in zip(*decoded, strict=True))
    # floor((76 - 64) * U) takes every value of [0, 11] and nothing else over 256 crops.
    assert set(row_offsets) == set(col_offsets) == set(range(12))
    assert 0.35 < flips.mean() < 0.65
    # One epoch visits every example once.
    assert sorted(indices) == list(range(256))


def test_epochs_are_different_permutations(stream):
    batches = stream
    epochs = [
        np.concatenate([example_indices(b) for b in batches[e * 4 : e * 4 + 4]]) for e in (0, 1)
    ]
    for order in epochs:
        assert sorted(order) == list(range(256))
    assert not np.array_equal(epochs[0], epochs[1])


def test_remainder_is_dropped():
    source = make_source(100)
    batches = take(source, 6, global_batch_size=32)  # 3 steps per epoch, 4 examples dropped
    for epoch in (batches[:3], batches[3:]):
        indices = np.concatenate([example_indices(b) for b in epoch])
        assert len(set(indices)) == 96


def _chosen_rows(embedding):
    return np.flatnonzero(embedding[:NUM_SLOTS])


def test_tf_text_is_the_mean_of_four_distinct_valid_captions(source, stream):
    choices = {}
    for batch in stream:
        for index, embedding in zip(example_indices(batch), batch["embedding"], strict=True):
            count = source.num_captions[index]
            rows = _chosen_rows(embedding)
            assert len(rows) == min(4, count) and rows.max() < count
            np.testing.assert_allclose(embedding[rows], 1 / len(rows), rtol=1e-6)
            assert embedding[NUM_SLOTS] == pytest.approx(index)
            choices.setdefault(index, set()).add(tuple(rows))
    # Two epochs: examples with more than 4 captions mostly drew different subsets.
    many = [index for index in choices if source.num_captions[index] > 4]
    assert np.mean([len(choices[index]) == 2 for index in many]) > 0.7


def test_pytorch_text_is_one_random_caption_and_no_wrong_image(source):
    drawn = []
    for batch in take(source, 4, arch="pytorch"):
        assert "wrong_image" not in batch
        for index, embedding in zip(example_indices(batch), batch["embedding"], strict=True):
            (row,) = _chosen_rows(embedding)
            assert row < source.num_captions[index] and embedding[row] == 1
            assert embedding[NUM_SLOTS] == index
            if source.num_captions[index] == 10:
                drawn.append(row)
    assert len(set(drawn)) == 10


@pytest.mark.parametrize("classes", [True, False])
def test_wrong_image_rules(classes):
    source = make_source(256, classes=classes)
    wrong_offsets = []
    for batch in take(source, 4):
        real = example_indices(batch)
        wrong = np.array([decode(crop) for crop in batch["wrong_image"]])
        wrong_offsets.extend(wrong[:, 1])
        assert np.all(wrong[:, 0] != real)
        if classes:
            assert np.all(source.labels[wrong[:, 0]] != source.labels[real])
        # The wrong image draws its own crop and flip.
        assert np.mean(wrong[:, 3] != [decode(crop)[3] for crop in batch["image"]]) > 0.3
    assert set(wrong_offsets) == set(range(12))


def test_start_step_gives_the_same_batches(source, stream):
    # 4 steps per epoch: a start at 3 crosses into the second epoch, one at 5 starts inside it.
    for start in (3, 5):
        resumed = take(source, 8 - start, start_step=start)
        for expected, actual in zip(stream[start:], resumed, strict=True):
            for key in expected:
                np.testing.assert_array_equal(actual[key], expected[key])


@pytest.mark.parametrize("process_count", [2, 4])
def test_process_slices_are_disjoint_and_cover_the_global_batch(source, stream, process_count):
    whole = stream[3:5]
    slices = [
        take(source, 2, start_step=3, process_index=i, process_count=process_count)
        for i in range(process_count)
    ]
    for step, batch in enumerate(whole):
        parts = [s[step] for s in slices]
        for key in batch:
            assert all(len(p[key]) == 64 // process_count for p in parts)
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), batch[key])
        part_indices = [set(example_indices(p)) for p in parts]
        assert set.union(*part_indices) == set(example_indices(batch))
        assert sum(map(len, part_indices)) == 64


def test_global_batches_are_sharded_over_the_mesh(source):
    mesh = parallel.make_mesh()
    assert mesh.devices.size == 8
    dataset = input_pipeline.make_dataset(
        source, stage=1, arch="tf", global_batch_size=64, seed=7
    ).take(3)
    expected = list(dataset.as_numpy_iterator())
    delivered = list(input_pipeline.global_batches(dataset, mesh))
    assert len(delivered) == 3
    for batch, local in zip(delivered, expected, strict=True):
        assert set(batch) == set(local)
        for key, array in batch.items():
            assert array.sharding == parallel.batch_sharded(mesh)
            assert array.shape == local[key].shape
            assert {shard.data.shape[0] for shard in array.addressable_shards} == {8}
            np.testing.assert_array_equal(np.asarray(array), local[key])


def test_batch_must_divide_over_devices_and_processes(source):
    with pytest.raises(ValueError, match="number of devices"):
        take(source, 1, global_batch_size=12)
    with pytest.raises(ValueError, match="number of processes"):
        take(source, 1, global_batch_size=16, process_index=0, process_count=3)


def test_steps_per_epoch_drops_the_remainder():
    assert input_pipeline.steps_per_epoch(8855, 64) == 138
    with pytest.raises(ValueError, match="fewer than one global batch"):
        input_pipeline.steps_per_epoch(40, 64)


def test_resume_continues_exactly_or_at_the_next_epoch_boundary():
    state, warning = input_pipeline.resume(None, 256, 64, train_step=0)
    assert warning is None and state.data_step(5) == 5
    # Same split and batch (any process or device count): the stream continues exactly.
    same, warning = input_pipeline.resume(state, 256, 64, train_step=5)
    assert warning is None and same.data_step(5) == 5
    # A new global batch: step 5 was inside epoch 1 (4 steps each), so the stream restarts at
    # epoch 2, which with 8 steps per epoch is data step 16.
    moved, warning = input_pipeline.resume(state, 256, 32, train_step=5)
    assert "epoch 2" in warning and moved.data_step(5) == 16 and moved.data_step(6) == 17
    # At a boundary nothing is skipped.
    at_boundary, _ = input_pipeline.resume(state, 256, 32, train_step=8)
    assert at_boundary.data_step(8) == 16
    # The moved state is what later checkpoints store; resuming from it is exact again.
    again, warning = input_pipeline.resume(moved, 256, 32, train_step=9)
    assert warning is None and again.data_step(9) == 20
