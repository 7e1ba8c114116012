"""`synthetic_birds`: the procedural bird set (`stackgan_jax.data.synthetic_birds`), offline.

Train holds the renderer's 150 train species, test its 50 unseen ones. Images are cropped around
the rendered bird's box like CUB, captions embedded with MiniLM (each distinct caption once).
A config fixes the size and seed; the same config always gives the same bytes.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from stackgan_jax.data import synthetic_birds
from stackgan_jax.data.builders.common import (
    MINILM_EMBEDDING_DIM,
    Candidate,
    StackGanBuilder,
    shared_encoder,
)
from stackgan_jax.text import TextEncoder


@dataclasses.dataclass(eq=False)
class SyntheticBirdsConfig(tfds.core.BuilderConfig):
    """The size and seed of a synthetic_birds build.

    Attributes:
        images_per_species: images rendered per species.
        seed: the renderer's image seed.
        species_per_split: keep only the first this many species of each split (None: all);
            for tests and quick looks.
    """

    images_per_species: int = synthetic_birds.DEFAULT_IMAGES_PER_SPECIES
    seed: int = 0
    species_per_split: int | None = None


def _named_config(
    images_per_species: int, seed: int, species_per_split: int | None
) -> SyntheticBirdsConfig:
    """A config named after its size and seed, e.g. '2_per_species_seed1_3_species'."""
    parts = [f"{images_per_species}_per_species"]
    if seed:
        parts.append(f"seed{seed}")
    if species_per_split is not None:
        parts.append(f"{species_per_split}_species")
    return SyntheticBirdsConfig(
        name="_".join(parts),
        description=f"{images_per_species} images per species, seed {seed}",
        images_per_species=images_per_species,
        seed=seed,
        species_per_split=species_per_split,
    )


# The renderer's default size; TFDS requires this very object whenever 'default' is asked for.
DEFAULT_CONFIG = dataclasses.replace(
    _named_config(synthetic_birds.DEFAULT_IMAGES_PER_SPECIES, 0, None), name="default"
)


def synthetic_config(
    images_per_species: int = synthetic_birds.DEFAULT_IMAGES_PER_SPECIES,
    seed: int = 0,
    species_per_split: int | None = None,
) -> SyntheticBirdsConfig:
    """The config of one size and seed, named after them.

    Args:
        images_per_species: images rendered per species.
        seed: the renderer's image seed.
        species_per_split: the first this many species of each split, or None for all.

    Returns:
        DEFAULT_CONFIG ('default') for the renderer's default size with seed 0, else a config
        named e.g. '2_per_species_seed1' (with '_3_species' when the species are limited); load
        it as `synthetic_birds/<name>`.
    """
    config = _named_config(images_per_species, seed, species_per_split)
    is_default = (images_per_species, seed, species_per_split) == (
        DEFAULT_CONFIG.images_per_species,
        DEFAULT_CONFIG.seed,
        DEFAULT_CONFIG.species_per_split,
    )
    return DEFAULT_CONFIG if is_default else config


def synthetic_candidates(config: SyntheticBirdsConfig, split: str) -> Iterator[Candidate]:
    """Renders a split's birds, species by species.

    Args:
        config: size and seed.
        split: 'train' or 'test'.

    Yields:
        Candidates with the rendered image, box, captions and attributes.
    """
    table = synthetic_birds.species_table()
    species = synthetic_birds.split_species(table)[split][: config.species_per_split]
    for s, index in itertools.product(species, range(config.images_per_species)):
        example = synthetic_birds.render_example(s, index, config.seed)
        yield Candidate(
            key=example.key,
            image=example.image,
            captions=example.captions,
            label=example.species_id,
            bbox=example.bbox,
            extra={"attributes": example.attributes},
        )


def num_examples(config: SyntheticBirdsConfig, split: str) -> int:
    """How many images a split of `config` has."""
    species = len(synthetic_birds.split_species(synthetic_birds.species_table())[split])
    return min(species, config.species_per_split or species) * config.images_per_species


class SyntheticBirds(StackGanBuilder):
    """Procedural birds: 200 species (150 train / 50 unseen test), 10 captions, attributes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [DEFAULT_CONFIG]
    EMBEDDING_DIM = MINILM_EMBEDDING_DIM
    DESCRIPTION = (
        "Procedurally rendered birds with CUB-style class-disjoint species, bounding boxes, "
        "attributes and 10 template captions per image, embedded with all-MiniLM-L6-v2."
    )

    def extra_features(self) -> dict[str, tfds.features.FeatureConnector]:
        """One int64 per attribute the renderer records (an index into its vocabulary)."""
        return {
            "attributes": tfds.features.FeaturesDict(
                {name: tfds.features.Scalar(dtype=np.int64) for name in synthetic_birds.ATTRIBUTES}
            )
        }

    def text_encoder(self) -> TextEncoder:
        """MiniLM, the encoder of the demo and debug presets."""
        return shared_encoder("minilm")

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # everything is rendered
        return {
            split: self._generate_examples(
                split,
                synthetic_candidates(self.builder_config, split),
                num_examples(self.builder_config, split),
            )
            for split in synthetic_birds.SPLITS
        }
