"""`stackgan_birds` and `stackgan_flowers`: the StackGAN TF release's data (spec §1.2).

Both read the raw images, Reed et al.'s `text_c10` captions and the release's `train/` and `test/`
folders (class-disjoint split lists, class ids and char-CNN-RNN embeddings); they differ only in
where those files are (a `ReleaseLayout`) and in the crop: CUB birds are cropped around their
bounding box, Oxford flowers are squashed whole.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from stackgan_jax.data import preprocess
from stackgan_jax.data.builders.common import (
    BBox,
    Candidate,
    InconsistentDataError,
    StackGanBuilder,
    check_release_embeddings,
    read_splits,
)
from stackgan_jax.untrusted import numpy_pickle

SPLITS = ("train", "test")
FILENAMES = "filenames.pickle"
CLASS_INFO = "class_info.pickle"
EMBEDDINGS = "char-CNN-RNN-embeddings.pickle"
RELEASE_FILES = (FILENAMES, CLASS_INFO, EMBEDDINGS)
_CUB = "CUB_200_2011"


@dataclasses.dataclass(frozen=True)
class ReleaseLayout:
    """Where a release dataset keeps its files, relative to the manual directory.

    Attributes:
        metadata_files: files read once for both splits.
        image_path: key -> the image file.
        caption_path: (key, class id from class_info) -> the text_c10 caption file.
        label: (key, class id from class_info) -> the 0-based label.
        read_boxes: manual directory -> {key: (x, y, w, h)} for a dataset whose images are
            cropped around boxes; None for one whose images are squashed whole.
    """

    metadata_files: tuple[str, ...]
    image_path: Callable[[str], str]
    caption_path: Callable[[str, int], str]
    label: Callable[[str, int], int]
    read_boxes: Callable[[epath.Path], dict[str, BBox]] | None


@dataclasses.dataclass(frozen=True)
class ReleaseSplit:
    """One split of the release: its keys, class ids and embeddings, in file-list order.

    Attributes:
        keys: `filenames.pickle`.
        class_ids: `class_info.pickle`.
        embeddings: `char-CNN-RNN-embeddings.pickle`, float32 [len(keys), captions, 1024].
    """

    keys: list[str]
    class_ids: list[int]
    embeddings: np.ndarray


def cub_label(key: str, class_id: int) -> int:
    """A CUB key's 0-based class, from its class directory ('002.Laysan_Albatross/...' -> 1).

    The directory number is used rather than `class_info`, whose base (0 or 1) the birds release
    does not document (spec §1.2).

    Args:
        key: CUB key.
        class_id: the key's `class_info` entry (unused).

    Returns:
        The class directory's number minus one.
    """
    del class_id
    return int(key.split(".", 1)[0]) - 1


def read_cub_boxes(root: epath.Path) -> dict[str, BBox]:
    """CUB's bounding boxes by key.

    Args:
        root: the manual directory.

    Returns:
        {key: (x, y, w, h)}.

    Raises:
        InconsistentDataError: `images.txt` and `bounding_boxes.txt` list different images.
    """
    try:
        return preprocess.read_bounding_boxes(
            root / _CUB / "images.txt", root / _CUB / "bounding_boxes.txt"
        )
    except ValueError as e:  # the two files list different image ids
        raise InconsistentDataError(str(e)) from e


BIRDS = ReleaseLayout(
    metadata_files=(f"{_CUB}/images.txt", f"{_CUB}/bounding_boxes.txt"),
    image_path=lambda key: f"{_CUB}/images/{key}.jpg",
    caption_path=lambda key, class_id: f"text_c10/{key}.txt",
    label=cub_label,
    read_boxes=read_cub_boxes,
)


def flowers_caption_path(key: str, class_id: int) -> str:
    """A flower's caption file: the reference replaces 'jpg/' in its key with its class folder.

    Args:
        key: e.g. 'jpg/image_00001'.
        class_id: the image's 1-based Oxford-102 class from `class_info.pickle`.

    Returns:
        e.g. 'text_c10/class_00077/image_00001.txt'.
    """
    return f"text_c10/{key.replace('jpg/', f'class_{class_id:05d}/')}.txt"


FLOWERS = ReleaseLayout(
    metadata_files=(),
    image_path=lambda key: f"{key}.jpg",
    caption_path=flowers_caption_path,
    label=lambda key, class_id: class_id - 1,
    read_boxes=None,
)


def read_release_split(root: epath.Path, split: str) -> ReleaseSplit:
    """Reads and cross-checks one split's pickles.

    Args:
        root: the manual directory.
        split: 'train' or 'test'.

    Returns:
        The split.

    Raises:
        InconsistentDataError: the three files disagree on the number of images, or the
            embeddings are not [images, captions, 1024].
    """
    keys = [str(key) for key in numpy_pickle.load_pickle(root / split / FILENAMES)]
    class_ids = [int(c) for c in np.asarray(numpy_pickle.load_pickle(root / split / CLASS_INFO))]
    embeddings = np.asarray(numpy_pickle.load_pickle(root / split / EMBEDDINGS), np.float32)
    if len(class_ids) != len(keys):
        raise InconsistentDataError(
            f"{split}/{CLASS_INFO} has {len(class_ids)} class ids but {split}/{FILENAMES} "
            f"lists {len(keys)} images"
        )
    check_release_embeddings(embeddings, len(keys), f"{split}/{EMBEDDINGS}", f"{split}/{FILENAMES}")
    return ReleaseSplit(keys, class_ids, embeddings)


def release_candidates(
    dataset: str, root: epath.Path | None, layout: ReleaseLayout, instructions: str
) -> dict[str, list[Candidate]]:
    """Checks every file the dataset needs, then lists each split's examples.

    Args:
        dataset: the builder's name, for error messages.
        root: the manual directory, or None if it is missing or empty.
        layout: where the dataset's files are.
        instructions: the expected layout, quoted in the missing-files error.

    Returns:
        {split: candidates in file-list order}.

    Raises:
        MissingManualFilesError: listing every missing file.
        InconsistentDataError: files disagree (counts, sizes, boxes).
    """

    def per_image_files(release: ReleaseSplit) -> Iterator[str]:
        for key, class_id in zip(release.keys, release.class_ids, strict=True):
            yield layout.image_path(key)
            yield layout.caption_path(key, class_id)

    splits = read_splits(
        dataset,
        root,
        instructions,
        split_files={split: [f"{split}/{name}" for name in RELEASE_FILES] for split in SPLITS},
        read_split=read_release_split,
        split_paths=per_image_files,
        shared_files=layout.metadata_files,
    )
    boxes = layout.read_boxes(root) if layout.read_boxes else None
    return {
        split: [
            release_candidate(root, layout, release, index, boxes)
            for index in range(len(release.keys))
        ]
        for split, release in splits.items()
    }


def release_candidate(
    root: epath.Path,
    layout: ReleaseLayout,
    release: ReleaseSplit,
    index: int,
    boxes: dict[str, BBox] | None,
) -> Candidate:
    """One example of a release split, its captions read and checked against its embeddings.

    Args:
        root: the manual directory.
        layout: where the dataset's files are.
        release: the split.
        index: the example's position in the split's file list.
        boxes: {key: bbox} for a cropped dataset, else None.

    Returns:
        The candidate.

    Raises:
        InconsistentDataError: the caption file and the embeddings disagree on the number of
            captions, or a cropped dataset has no box for the image.
    """
    key, class_id = release.keys[index], release.class_ids[index]
    caption_file = layout.caption_path(key, class_id)
    captions = preprocess.read_captions(root / caption_file)
    embeddings = release.embeddings[index]
    if len(captions) != len(embeddings):
        raise InconsistentDataError(
            f"{caption_file} has {len(captions)} captions but {EMBEDDINGS} has "
            f"{len(embeddings)} embeddings for {key!r}"
        )
    if boxes is not None and key not in boxes:
        raise InconsistentDataError(f"{_CUB}/images.txt has no bounding box for {key!r}")
    return Candidate(
        key=key,
        image=root / layout.image_path(key),
        captions=captions,
        label=layout.label(key, class_id),
        bbox=None if boxes is None else boxes[key],
        embeddings=embeddings,
    )


class _ReleaseBuilder(StackGanBuilder, skip_registration=True):
    """A dataset of the StackGAN TF release; subclasses give its LAYOUT and instructions."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    LAYOUT: ReleaseLayout

    def split_candidates(self, root: epath.Path | None) -> dict[str, list[Candidate]]:
        """The release's examples, where LAYOUT says its files are (`release_candidates`)."""
        return release_candidates(self.name, root, self.LAYOUT, self.MANUAL_DOWNLOAD_INSTRUCTIONS)


class StackganBirds(_ReleaseBuilder):
    """CUB-200-2011 with StackGAN's class-disjoint split (8,855 / 2,933) and char-CNN-RNN text."""

    DESCRIPTION = (
        "CUB-200-2011 birds, cropped around their boxes, with Reed et al.'s 10 captions per image "
        "and the StackGAN release's char-CNN-RNN embeddings and class-disjoint split."
    )
    LAYOUT = BIRDS
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    <manual_dir>/
      CUB_200_2011/images.txt                  CUB_200_2011.tgz (Caltech), extracted
      CUB_200_2011/bounding_boxes.txt
      CUB_200_2011/images/<class_dir>/<name>.jpg
      text_c10/<class_dir>/<name>.txt          Reed et al.'s cvpr2016_cub captions
      train/filenames.pickle                   the StackGAN birds release (birds.zip)
      train/class_info.pickle
      train/char-CNN-RNN-embeddings.pickle
      test/  (the same three files)
    """


class StackganFlowers(_ReleaseBuilder):
    """Oxford-102 flowers with StackGAN's class-disjoint split and char-CNN-RNN text."""

    DESCRIPTION = (
        "Oxford-102 flowers, squashed whole, with Reed et al.'s 10 captions per image and the "
        "StackGAN release's char-CNN-RNN embeddings and class-disjoint split."
    )
    LAYOUT = FLOWERS
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    <manual_dir>/
      jpg/image_XXXXX.jpg                      102flowers.tgz (Oxford VGG), extracted
      text_c10/class_XXXXX/image_XXXXX.txt     Reed et al.'s cvpr2016_flowers captions
      train/filenames.pickle                   the StackGAN flowers release (flowers.zip)
      train/class_info.pickle
      train/char-CNN-RNN-embeddings.pickle
      test/  (the same three files)
    """
