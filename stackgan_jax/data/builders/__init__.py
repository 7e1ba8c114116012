"""TFDS builders of the StackGAN datasets; importing this package registers them with TFDS.

    import stackgan_jax.data.builders  # noqa: F401
    source = tfds.data_source("synthetic_birds", split="train", data_dir=DATA_DIR)

| name               | from                                                                |
|--------------------|---------------------------------------------------------------------|
| `stackgan_birds`   | CUB-200-2011 + the StackGAN release (manual_dir)                    |
| `stackgan_flowers` | Oxford-102 + the StackGAN release (manual_dir)                      |
| `stackgan_coco`    | COCO 2014 + StackGAN-Pytorch's embeddings (manual_dir)              |
| `captioned_images` | any folder of captioned images (manual_dir), embedded at build time |
| `synthetic_birds`  | the procedural bird renderer (nothing to download)                  |

`python -m stackgan_jax.data.prepare` builds them; `stackgan_jax.data.source` reads them.
"""

from stackgan_jax.data.builders.captioned_images import CaptionedImages, CaptionedImagesConfig
from stackgan_jax.data.builders.coco import StackganCoco
from stackgan_jax.data.builders.common import (
    DataPreparationError,
    InconsistentDataError,
    MissingManualFilesError,
    StackGanBuilder,
)
from stackgan_jax.data.builders.release import StackganBirds, StackganFlowers
from stackgan_jax.data.builders.synthetic import (
    SyntheticBirds,
    SyntheticBirdsConfig,
    synthetic_config,
)

BUILDERS: dict[str, type[StackGanBuilder]] = {
    builder.name: builder
    for builder in (StackganBirds, StackganFlowers, StackganCoco, CaptionedImages, SyntheticBirds)
}

__all__ = [
    "BUILDERS",
    "CaptionedImages",
    "CaptionedImagesConfig",
    "DataPreparationError",
    "InconsistentDataError",
    "MissingManualFilesError",
    "StackGanBuilder",
    "StackganBirds",
    "StackganCoco",
    "StackganFlowers",
    "SyntheticBirds",
    "SyntheticBirdsConfig",
    "synthetic_config",
]
