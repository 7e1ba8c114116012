"""`captioned_images`: any folder of images with captions, embedded at build time.

Layout of the manual directory (keys are image paths under `images/` without the extension,
e.g. 'cats/tabby_01'; the first folder level is the class):

    images/[<class>/...]<name>.jpg|.jpeg|.png
    text/[<class>/...]<name>.txt     one caption per line (a `text_c10/` folder works too)
    bounding_boxes.txt               optional: '<key> <x> <y> <w> <h>' per line, or CUB's
                                     '<id> <x> <y> <w> <h>' together with CUB's images.txt
    train.txt, test.txt              optional, both or neither: one key per line

Images with a box are cropped around it as CUB is; the others are squashed whole. Without split
lists, when every image has a class and there are at least 5 classes, every 5th class in sorted
order is held out for test (class-disjoint, as in CUB); otherwise every 5th image in sorted key
order is (80/20). Labels are the classes' positions in sorted order, -1 for images outside
class folders. A split with no images is left out.
"""

from __future__ import annotations

import dataclasses
import posixpath
from typing import Any

import tensorflow_datasets as tfds
from etils import epath

from stackgan_jax.data import preprocess
from stackgan_jax.data.builders.common import (
    MINILM_EMBEDDING_DIM,
    NO_LABEL,
    RELEASE_EMBEDDING_DIM,
    BBox,
    Candidate,
    InconsistentDataError,
    MissingManualFilesError,
    StackGanBuilder,
    missing_files,
    shared_encoder,
)
from stackgan_jax.text import TextEncoder

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
CAPTION_DIRS = ("text", "text_c10")
SPLIT_LISTS = {"train": "train.txt", "test": "test.txt"}
BOXES = "bounding_boxes.txt"
CUB_IMAGE_LIST = "images.txt"
# Every 5th class (or image) goes to test: an 80/20 split.
_HOLD_OUT_EVERY = 5


@dataclasses.dataclass(eq=False)
class CaptionedImagesConfig(tfds.core.BuilderConfig):
    """Which text encoder embeds the captions.

    Attributes:
        text_encoder: a name of `stackgan_jax.text.ENCODERS`.
        embedding_dim: the encoder's output size.
    """

    text_encoder: str = "minilm"
    embedding_dim: int = MINILM_EMBEDDING_DIM


def class_of(key: str) -> str | None:
    """A key's class: its first folder level, or None for an image directly under images/."""
    return key.split("/", 1)[0] if "/" in key else None


def strip_image_extension(name: str) -> str:
    """'a/b.jpg' -> 'a/b'; names without an image extension are returned unchanged."""
    stem, extension = posixpath.splitext(name)
    return stem if extension.lower() in IMAGE_EXTENSIONS else name


def find_images(images_dir: epath.Path) -> dict[str, str]:
    """Every image under `images_dir`, by key.

    Args:
        images_dir: the `images/` folder.

    Returns:
        {key: path relative to images_dir}, sorted by key.

    Raises:
        InconsistentDataError: two images share a key (e.g. 'a.jpg' and 'a.png').
    """
    images: dict[str, str] = {}
    for folder, _, files in images_dir.walk():
        for file in files:
            relative = (folder / file).relative_to(images_dir).as_posix()
            key = strip_image_extension(relative)
            if key == relative:  # not an image
                continue
            if key in images:
                raise InconsistentDataError(
                    f"images/{images[key]} and images/{relative} share a key"
                )
            images[key] = relative
    return dict(sorted(images.items()))


def caption_dir(root: epath.Path) -> str:
    """The caption folder in use: `text/`, else `text_c10/` (`text/` when neither exists)."""
    return next((name for name in CAPTION_DIRS if (root / name).is_dir()), CAPTION_DIRS[0])


def read_boxes(root: epath.Path) -> dict[str, BBox]:
    """The optional bounding boxes by key.

    Args:
        root: the manual directory.

    Returns:
        {key: (x, y, w, h)}; empty without `bounding_boxes.txt`.
    """
    if not (root / BOXES).exists():
        return {}
    if (root / CUB_IMAGE_LIST).exists():
        return preprocess.read_bounding_boxes(root / CUB_IMAGE_LIST, root / BOXES)
    rows = (line.split() for line in (root / BOXES).read_text().splitlines())
    return {row[0]: tuple(float(v) for v in row[1:5]) for row in rows if row}


def default_split(keys: list[str]) -> dict[str, list[str]]:
    """Holds out every 5th class (class-disjoint) or, with few or no classes, every 5th image.

    Args:
        keys: all keys, sorted.

    Returns:
        {'train': keys, 'test': keys}.
    """
    classes = sorted({class_of(key) for key in keys}, key=str)
    if None not in classes and len(classes) >= _HOLD_OUT_EVERY:
        held_out = set(classes[_HOLD_OUT_EVERY - 1 :: _HOLD_OUT_EVERY])
        is_test = [class_of(key) in held_out for key in keys]
    else:
        is_test = [i % _HOLD_OUT_EVERY == _HOLD_OUT_EVERY - 1 for i in range(len(keys))]
    return {
        "train": [key for key, test in zip(keys, is_test, strict=True) if not test],
        "test": [key for key, test in zip(keys, is_test, strict=True) if test],
    }


def read_split_lists(root: epath.Path) -> dict[str, list[str]]:
    """The keys of `train.txt` and `test.txt` (an image extension on a key is dropped).

    Args:
        root: the manual directory, holding both lists.

    Returns:
        {'train': keys, 'test': keys} in file order.
    """
    return {
        split: [
            strip_image_extension(line.strip())
            for line in (root / name).read_text().splitlines()
            if line.strip()
        ]
        for split, name in SPLIT_LISTS.items()
    }


def captioned_candidates(
    dataset: str, root: epath.Path | None, instructions: str
) -> dict[str, list[Candidate]]:
    """Finds the images, captions, boxes, labels and splits of a captioned folder.

    Args:
        dataset: the builder's name, for errors.
        root: the manual directory, or None if it is missing or empty.
        instructions: the expected layout, quoted in the missing-files error.

    Returns:
        {split: candidates} for the non-empty splits.

    Raises:
        MissingManualFilesError: no images, a caption file, one of the two split lists or a
            listed image is missing; all are listed.
        InconsistentDataError: a caption file is empty or two images share a key.
    """
    if root is None or not (root / "images").is_dir():
        raise MissingManualFilesError(dataset, root, ["images/"], instructions)
    images = find_images(root / "images")
    if not images:
        raise MissingManualFilesError(dataset, root, ["images/<key>.jpg|.jpeg|.png"], instructions)
    lists_present = [name for name in SPLIT_LISTS.values() if (root / name).exists()]
    missing = missing_files(root, SPLIT_LISTS.values()) if lists_present else []
    if len(lists_present) == len(SPLIT_LISTS):
        splits = read_split_lists(root)
    else:
        splits = default_split(list(images))
    listed = [key for keys in splits.values() for key in keys]
    missing += [f"images/{key}.jpg|.jpeg|.png" for key in listed if key not in images]
    captions_at = caption_dir(root)
    missing += missing_files(root, (f"{captions_at}/{key}.txt" for key in listed if key in images))
    if missing:
        raise MissingManualFilesError(dataset, root, missing, instructions)
    labels = {name: i for i, name in enumerate(sorted({class_of(k) for k in images} - {None}))}
    boxes = read_boxes(root)
    candidates = {}
    for split, keys in splits.items():
        candidates[split] = []
        for key in keys:
            captions = preprocess.read_captions(root / captions_at / f"{key}.txt")
            if not captions:
                raise InconsistentDataError(f"{captions_at}/{key}.txt has no captions")
            candidates[split].append(
                Candidate(
                    key=key,
                    image=root / "images" / images[key],
                    captions=captions,
                    label=labels.get(class_of(key), NO_LABEL),
                    bbox=boxes.get(key),
                )
            )
    return {split: examples for split, examples in candidates.items() if examples}


class CaptionedImages(StackGanBuilder):
    """Your own images and captions, embedded at build time by a text encoder (the config)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        CaptionedImagesConfig(
            name="minilm",
            description="captions embedded with all-MiniLM-L6-v2 (384-d)",
            text_encoder="minilm",
            embedding_dim=MINILM_EMBEDDING_DIM,
        ),
        CaptionedImagesConfig(
            name="char_cnn_rnn",
            description="captions embedded with Reed et al.'s char-CNN-RNN (1024-d)",
            text_encoder="char_cnn_rnn",
            embedding_dim=RELEASE_EMBEDDING_DIM,
        ),
    ]
    DESCRIPTION = "A user's folder of captioned images, embedded at build time."
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    <manual_dir>/
      images/[<class>/]<name>.jpg|.jpeg|.png   the class is the first folder level (optional)
      text/[<class>/]<name>.txt                one caption per line (or a text_c10/ folder)
      bounding_boxes.txt                       optional: '<key> <x> <y> <w> <h>' per line
      train.txt, test.txt                      optional, both or neither: one key per line
    (a key is the image's path under images/ without its extension)
    """

    def __init__(self, *, text_encoder_weights: str | None = None, **kwargs: Any):
        """Creates the builder.

        Args:
            text_encoder_weights: where the encoder's weights are (see
                `stackgan_jax.text.get_encoder`); None for the encoder's default.
            **kwargs: `tfds.core.GeneratorBasedBuilder` arguments, e.g. `data_dir`, `config`.
        """
        super().__init__(**kwargs)
        self._text_encoder_weights = text_encoder_weights

    @property
    def embedding_dim(self) -> int:
        """The config's encoder size."""
        return self.builder_config.embedding_dim

    def text_encoder(self) -> TextEncoder:
        """The config's encoder, from `text_encoder_weights` if given."""
        return shared_encoder(self.builder_config.text_encoder, self._text_encoder_weights)

    def split_candidates(self, root: epath.Path | None) -> dict[str, list[Candidate]]:
        """The folder's examples by split (`captioned_candidates`)."""
        return captioned_candidates(self.name, root, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
