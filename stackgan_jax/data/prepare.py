"""Prepares a StackGAN dataset as TFDS ArrayRecord files.

    python -m stackgan_jax.data.prepare --dataset=synthetic_birds --data_dir=~/tensorflow_datasets
    python -m stackgan_jax.data.prepare --dataset=stackgan_birds --data_dir=DIR --manual_dir=RAW
    python -m stackgan_jax.data.prepare --dataset=captioned_images --data_dir=DIR --manual_dir=MINE

Datasets other than synthetic_birds are built from files you downloaded into --manual_dir (the
layouts are in `stackgan_jax.data.builders`); a missing file is reported with the expected layout.
Read a prepared split with `stackgan_jax.data.source.load_split`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import tensorflow_datasets as tfds
from absl import app, flags

from stackgan_jax import cli
from stackgan_jax.data import builders, synthetic_birds

_DATASET = flags.DEFINE_enum(
    "dataset", None, sorted(builders.BUILDERS), "Dataset to prepare.", required=True
)
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS data directory to write to (local or gs://).", required=True
)
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir",
    None,
    "Folder of the downloaded files (default: <data_dir>/downloads/manual). "
    "Not for synthetic_birds.",
)
_TEXT_ENCODER = flags.DEFINE_enum(
    "text_encoder",
    "minilm",
    [config.name for config in builders.CaptionedImages.BUILDER_CONFIGS],
    "captioned_images: the encoder that embeds the captions (the dataset's config).",
)
_TEXT_ENCODER_WEIGHTS = flags.DEFINE_string(
    "text_encoder_weights",
    None,
    "captioned_images: the encoder's weights (char_cnn_rnn: the .npz of "
    "stackgan_jax.text.convert_t7); default: the encoder's own.",
)
_IMAGES_PER_SPECIES = flags.DEFINE_integer(
    "images_per_species",
    synthetic_birds.DEFAULT_IMAGES_PER_SPECIES,
    "synthetic_birds: images per species.",
    lower_bound=1,
)
_SEED = flags.DEFINE_integer("seed", 0, "synthetic_birds: the renderer's seed.")
_SPECIES_PER_SPLIT = flags.DEFINE_integer(
    "species_per_split",
    None,
    "synthetic_birds: only the first N species of each split (default: all).",
    lower_bound=1,
)

# Flags that only some datasets take; giving one for another dataset is a usage error.
_DATASET_FLAGS = {
    "captioned_images": (_TEXT_ENCODER, _TEXT_ENCODER_WEIGHTS),
    "synthetic_birds": (_IMAGES_PER_SPECIES, _SEED, _SPECIES_PER_SPLIT),
}
_NO_MANUAL_DIR = ("synthetic_birds",)


def make_builder(
    dataset: str,
    data_dir: str,
    *,
    text_encoder: str = "minilm",
    text_encoder_weights: str | None = None,
    images_per_species: int = synthetic_birds.DEFAULT_IMAGES_PER_SPECIES,
    seed: int = 0,
    species_per_split: int | None = None,
) -> builders.StackGanBuilder:
    """The builder of `dataset` with the options that apply to it.

    Args:
        dataset: a name of `builders.BUILDERS`.
        data_dir: TFDS data directory.
        text_encoder: captioned_images' config (its encoder).
        text_encoder_weights: captioned_images' encoder weights, or None for the default.
        images_per_species: synthetic_birds' size.
        seed: synthetic_birds' seed.
        species_per_split: synthetic_birds' species limit, or None for all.

    Returns:
        The builder.
    """
    if dataset == "synthetic_birds":
        config = builders.synthetic_config(images_per_species, seed, species_per_split)
        return builders.SyntheticBirds(data_dir=data_dir, config=config)
    if dataset == "captioned_images":
        return builders.CaptionedImages(
            data_dir=data_dir, config=text_encoder, text_encoder_weights=text_encoder_weights
        )
    return builders.BUILDERS[dataset](data_dir=data_dir)


def dataset_name(builder: tfds.core.DatasetBuilder) -> str:
    """The name `load_split` and `tfds.data_source` take, e.g. 'synthetic_birds/default'."""
    return builder.info.full_name.rsplit("/", 1)[0]


def summary(builder: builders.StackGanBuilder, seconds: float, already_prepared: bool) -> str:
    """What was prepared: examples per split, skipped images and how to read it.

    Args:
        builder: a prepared builder.
        seconds: how long preparing took.
        already_prepared: the dataset was there before, so nothing was built.

    Returns:
        Lines of text.
    """
    name = dataset_name(builder)
    verb = "Already prepared" if already_prepared else f"Prepared in {seconds:.1f} s"
    lines = [f"{verb}: {name} at {builder.data_dir}"]
    lines += [
        f"  {split}: {info.num_examples} examples" for split, info in builder.info.splits.items()
    ]
    skipped = {split: keys for split, keys in builder.skipped_images.items() if keys}
    count = sum(len(keys) for keys in skipped.values())
    lines.append(f"  skipped unreadable images: {count or 'none'}")
    lines += [f"    {split}: {', '.join(keys)}" for split, keys in skipped.items()]
    lines.append(
        f"Read it with stackgan_jax.data.source.load_split({name!r}, 'train', "
        f"data_dir={os.fspath(builder.data_dir_root)!r})"
    )
    return "\n".join(lines)


def check_flags(dataset: str) -> None:
    """Refuses flags that do not apply to `dataset`.

    Args:
        dataset: the --dataset value.

    Raises:
        app.UsageError: naming the flag.
    """
    for owner, owned in _DATASET_FLAGS.items():
        for flag in owned:
            if owner != dataset and flag.present:
                raise app.UsageError(f"--{flag.name} applies to --dataset={owner} only")
    if dataset in _NO_MANUAL_DIR and _MANUAL_DIR.present:
        raise app.UsageError(f"--dataset={dataset} reads no files; drop --manual_dir")


def main(argv: Sequence[str]) -> None:
    """Prepares --dataset in --data_dir and prints a summary."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    check_flags(_DATASET.value)
    builder = make_builder(
        _DATASET.value,
        _DATA_DIR.value,
        text_encoder=_TEXT_ENCODER.value,
        text_encoder_weights=_TEXT_ENCODER_WEIGHTS.value,
        images_per_species=_IMAGES_PER_SPECIES.value,
        seed=_SEED.value,
        species_per_split=_SPECIES_PER_SPLIT.value,
    )
    already_prepared = builder.is_prepared()
    # The builders show a progress bar with the split's total; TFDS's own bars have none.
    tfds.display_progress_bar(False)
    start = time.perf_counter()
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=_MANUAL_DIR.value)
    )
    print(summary(builder, time.perf_counter() - start, already_prepared))


if __name__ == "__main__":
    cli.run(main)
