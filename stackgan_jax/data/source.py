"""Reads a prepared dataset split into memory: the contract between the builders and the pipeline.

    source = load_split("synthetic_birds", "train", data_dir, text_dim=384)
    source.images          # uint8 [N, 304, 304, 3]
    source.embeddings      # float32 [N, E, D]

A split is read whole into numpy arrays, as the reference keeps its 304/76 pickles in memory:
about 2.5 GB for CUB's train split. COCO (~83k train images, ~23 GB) does not fit; read it with
random access instead, `open_split(...)` returning a `tfds.data_source` whose items are
examples in the builders' schema.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from stackgan_jax.data import builders, preprocess
from stackgan_jax.errors import ConfigError, UserError

PREPARE_COMMAND = "python -m stackgan_jax.data.prepare --dataset={name} --data_dir={data_dir}"


class DatasetNotPreparedError(UserError, FileNotFoundError):
    """The dataset has not been built in the data directory."""


class EmbeddingSizeError(ConfigError):
    """The dataset's caption embeddings are not the size the model expects."""


# eq=False: a field-wise == of numpy arrays has no single truth value.
@dataclasses.dataclass(frozen=True, eq=False)
class ArraySource:
    """One split in memory, row i of every array belonging to example i.

    Attributes:
        images: uint8 [N, 304, 304, 3].
        images_small: uint8 [N, 76, 76, 3].
        embeddings: float32 [N, E, D]; E is the most captions any example has, and an example
            with fewer has its embeddings repeated in order (cycled) up to E.
        num_captions: int32 [N], each example's real number of captions (rows of `embeddings`
            from this one on are repeats).
        labels: int64 [N], 0-based class ids, -1 where there is none.
        captions: N lists of captions (not padded).
        file_names: N image keys.
        attributes: {name: int64 [N]} for synthetic_birds, else empty.
    """

    images: np.ndarray
    images_small: np.ndarray
    embeddings: np.ndarray
    num_captions: np.ndarray
    labels: np.ndarray
    captions: list[list[str]]
    file_names: list[str]
    attributes: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.labels)


def prepared_builder(dataset: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """The builder of a prepared dataset.

    Args:
        dataset: a registered name with an optional config, e.g. 'synthetic_birds' or
            'synthetic_birds/2_per_species'.
        data_dir: TFDS data directory (local or gs://); None for TFDS's default.

    Returns:
        The builder, ready to read.

    Raises:
        ValueError: `dataset` is not one of the StackGAN datasets.
        DatasetNotPreparedError: the dataset is not in `data_dir`; the message gives the command
            that prepares it.
    """
    name, _, config = dataset.partition("/")
    if name not in builders.BUILDERS:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {sorted(builders.BUILDERS)}")
    command = PREPARE_COMMAND.format(name=name, data_dir=data_dir or "DIR")
    if config:
        command += f"  (with the options that make config {config!r})"
    not_prepared = f"dataset {dataset!r} is not prepared in {data_dir or 'the default data_dir'}"
    try:
        builder = tfds.builder(dataset, data_dir=data_dir)
    except ValueError as e:
        # A config made by `prepare` options (e.g. a synthetic_birds size) is known to TFDS only
        # from its files, so an unprepared one is an unknown config.
        raise DatasetNotPreparedError(f"{not_prepared}; prepare it with:\n  {command}") from e
    if not builder.is_prepared():
        raise DatasetNotPreparedError(f"{not_prepared}; prepare it with:\n  {command}")
    return builder


def check_text_dim(builder: tfds.core.DatasetBuilder, text_dim: int | None) -> None:
    """Checks the dataset's embedding size against the model's.

    Args:
        builder: a prepared builder.
        text_dim: the size the model config expects, or None to accept any.

    Raises:
        EmbeddingSizeError: naming both sizes.
    """
    dim = builder.info.features["embeddings"].shape[-1]
    if text_dim is not None and text_dim != dim:
        raise EmbeddingSizeError(
            f"the dataset's embeddings are {dim}-d but the model config expects {text_dim} — "
            f"{builder.info.full_name} was embedded with another text encoder; set "
            f"config.model.text_dim={dim} or prepare the dataset with a {text_dim}-d encoder"
        )


def open_split(
    dataset: str, split: str, data_dir: str | None, text_dim: int | None = None
) -> Sequence[dict[str, Any]]:
    """Random access to a prepared split, for datasets too large for memory (COCO).

    Args:
        dataset: registered name with an optional config.
        split: a split name or TFDS slice, e.g. 'train' or 'train[:10%]'.
        data_dir: TFDS data directory; None for TFDS's default.
        text_dim: the embedding size the model expects, or None to accept any.

    Returns:
        A `tfds.data_source`: `len()` and `[i]` giving examples in the builders' schema (texts
        as bytes).

    Raises:
        DatasetNotPreparedError: the dataset is not prepared.
        EmbeddingSizeError: the embeddings are not `text_dim`-d.
    """
    builder = prepared_builder(dataset, data_dir)
    check_text_dim(builder, text_dim)
    return builder.as_data_source(split=split)


def cycle_rows(rows: np.ndarray, count: int) -> np.ndarray:
    """Repeats rows in order until there are `count` of them.

    Args:
        rows: [k, ...] with k >= 1.
        count: rows wanted.

    Returns:
        [count, ...] whose row j is rows[j % k].
    """
    return rows[np.arange(count) % len(rows)]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def load_split(
    dataset: str, split: str, data_dir: str | None, text_dim: int | None = None
) -> ArraySource:
    """Reads a prepared split into memory.

    Args:
        dataset: registered name with an optional config, e.g. 'stackgan_birds' or
            'captioned_images/minilm'.
        split: a split name or TFDS slice, e.g. 'train'.
        data_dir: TFDS data directory (local or gs://); None for TFDS's default.
        text_dim: the embedding size the model config expects; None to accept any.

    Returns:
        The split's arrays.

    Raises:
        DatasetNotPreparedError: the dataset is not prepared; the message names the command.
        EmbeddingSizeError: the embeddings are not `text_dim`-d.
    """
    examples = open_split(dataset, split, data_dir, text_dim)
    size, small = preprocess.LOAD_SIZE, preprocess.LR_LOAD_SIZE
    count = len(examples)
    # Filled in place: stacking decoded examples would hold every image twice.
    images = np.empty((count, size, size, 3), np.uint8)
    images_small = np.empty((count, small, small, 3), np.uint8)
    embeddings, captions, file_names, labels, attributes = [], [], [], [], []
    for i in range(count):
        example = examples[i]
        images[i] = example["image"]
        images_small[i] = example["image_small"]
        embeddings.append(np.asarray(example["embeddings"], np.float32))
        captions.append([_text(c) for c in example["captions"]])
        file_names.append(_text(example["file_name"]))
        labels.append(example["label"])
        attributes.append(example.get("attributes", {}))
    num_captions = np.array([len(e) for e in embeddings], np.int32)
    most = int(num_captions.max(initial=0))
    dim = examples.dataset_info.features["embeddings"].shape[-1]
    padded = np.zeros((count, most, dim), np.float32)
    for i, rows in enumerate(embeddings):
        padded[i] = cycle_rows(rows, most)
    return ArraySource(
        images=images,
        images_small=images_small,
        embeddings=padded,
        num_captions=num_captions,
        labels=np.asarray(labels, np.int64),
        captions=captions,
        file_names=file_names,
        attributes={
            name: np.array([a[name] for a in attributes], np.int64)
            for name in (attributes[0] if attributes else {})
        },
    )
