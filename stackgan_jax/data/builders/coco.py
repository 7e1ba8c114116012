"""`stackgan_coco`: COCO 2014 with StackGAN-Pytorch's char-CNN-RNN embeddings (spec §1.3).

Train images are those of the release's `train/filenames.pickle`, with its
`char-CNN-RNN-embeddings.pickle` ([N, E, 1024]); their captions are the first E of each image in
COCO's `captions_train2014.json`, in file order, which is assumed to be the order the release
embedded them in. Test images are those of `test/filenames.pickle`; their captions and embeddings
come from `test/val_captions.t7` (`raw_txt`, `fea_txt`, one entry per caption), which must hold
the same number E of consecutive captions for every image. COCO has no classes (label -1) and
its images are squashed whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from stackgan_jax.data.builders.common import (
    Candidate,
    InconsistentDataError,
    StackGanBuilder,
    check_release_embeddings,
    read_splits,
)
from stackgan_jax.untrusted import numpy_pickle, torch7

FILENAMES = "filenames.pickle"
TRAIN_EMBEDDINGS = "train/char-CNN-RNN-embeddings.pickle"
TRAIN_CAPTIONS = "annotations/captions_train2014.json"
TEST_CAPTIONS = "test/val_captions.t7"
SPLIT_FILES = {
    "train": (f"train/{FILENAMES}", TRAIN_EMBEDDINGS, TRAIN_CAPTIONS),
    "test": (f"test/{FILENAMES}", TEST_CAPTIONS),
}


def image_path(key: str) -> str:
    """Where a COCO key's image is: train2014 and val2014 images share one folder."""
    return f"images/{key}.jpg"


def read_keys(root: epath.Path, split: str) -> list[str]:
    """A split's image keys, e.g. 'COCO_train2014_000000000009'.

    Args:
        root: the manual directory.
        split: 'train' or 'test'.

    Returns:
        The keys of `<split>/filenames.pickle`.
    """
    return [str(key) for key in numpy_pickle.load_pickle(root / split / FILENAMES)]


def read_annotation_captions(path: epath.Path) -> dict[str, list[str]]:
    """Captions by key from a COCO captions annotation file, in file order.

    Args:
        path: e.g. `annotations/captions_train2014.json`.

    Returns:
        {file name without extension: captions}.
    """
    annotations = json.loads(path.read_text())
    names = {image["id"]: image["file_name"].rsplit(".", 1)[0] for image in annotations["images"]}
    captions: dict[str, list[str]] = {name: [] for name in names.values()}
    for annotation in annotations["annotations"]:
        captions[names[annotation["image_id"]]].append(annotation["caption"].strip())
    return captions


def read_train(root: epath.Path, split: str) -> list[Candidate]:
    """The train split: release keys and embeddings, captions from the COCO annotations.

    Args:
        root: the manual directory.
        split: 'train'.

    Returns:
        Candidates in file-list order.

    Raises:
        InconsistentDataError: the embeddings do not fit the file list, or an image has fewer
            annotated captions than embeddings.
    """
    keys = read_keys(root, split)
    embeddings = np.asarray(numpy_pickle.load_pickle(root / TRAIN_EMBEDDINGS), np.float32)
    check_release_embeddings(embeddings, len(keys), TRAIN_EMBEDDINGS, f"train/{FILENAMES}")
    annotated = read_annotation_captions(root / TRAIN_CAPTIONS)
    per_image = embeddings.shape[1]
    candidates = []
    for key, key_embeddings in zip(keys, embeddings, strict=True):
        captions = annotated.get(key, [])[:per_image]
        if len(captions) != per_image:
            raise InconsistentDataError(
                f"{TRAIN_CAPTIONS} has {len(captions)} captions for {key!r} but "
                f"{TRAIN_EMBEDDINGS} has {per_image} embeddings per image"
            )
        image = root / image_path(key)
        candidates.append(Candidate(key, image, captions, embeddings=key_embeddings))
    return candidates


def read_test(root: epath.Path, split: str) -> list[Candidate]:
    """The test split: release keys, captions and embeddings from `val_captions.t7`.

    Args:
        root: the manual directory.
        split: 'test'.

    Returns:
        Candidates in file-list order.

    Raises:
        InconsistentDataError: the t7 file's caption count is not a multiple of the number of
            images, or its texts and vectors differ in number.
    """
    keys = read_keys(root, split)
    # torchfile's list heuristic compares each element with its table, which numpy 2 refuses for
    # arrays, so the Lua arrays are turned into lists here.
    table = torch7.load_t7(root / TEST_CAPTIONS, lua_lists=False, decode_strings=True)
    captions = [str(caption) for caption in torch7.lua_list(table["raw_txt"])]
    vectors = np.concatenate(
        [np.asarray(v, np.float32).reshape(1, -1) for v in torch7.lua_list(table["fea_txt"])]
    )
    if len(vectors) != len(captions) or len(captions) % max(len(keys), 1):
        raise InconsistentDataError(
            f"{TEST_CAPTIONS} has {len(captions)} captions and {len(vectors)} embeddings, which "
            f"do not divide evenly among the {len(keys)} images of test/{FILENAMES}"
        )
    per_image = len(captions) // len(keys)
    embeddings = vectors.reshape(len(keys), per_image, -1)
    check_release_embeddings(embeddings, len(keys), TEST_CAPTIONS, f"test/{FILENAMES}")
    return [
        Candidate(
            key,
            root / image_path(key),
            captions[i * per_image : (i + 1) * per_image],
            embeddings=embeddings[i],
        )
        for i, key in enumerate(keys)
    ]


def image_paths(candidates: list[Candidate]) -> Iterable[str]:
    """The per-image files a split needs."""
    return (image_path(candidate.key) for candidate in candidates)


class StackganCoco(StackGanBuilder):
    """COCO 2014 with StackGAN-Pytorch's char-CNN-RNN embeddings; no classes, no crop."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    DESCRIPTION = (
        "COCO 2014 images squashed to squares, with the StackGAN-Pytorch release's char-CNN-RNN "
        "embeddings (train: 5 COCO captions per image; test: the release's val_captions.t7)."
    )
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    <manual_dir>/
      images/COCO_train2014_*.jpg              train2014.zip and val2014.zip (cocodataset.org),
      images/COCO_val2014_*.jpg                  extracted into one folder
      annotations/captions_train2014.json      annotations_trainval2014.zip
      train/filenames.pickle                   StackGAN-Pytorch's COCO train embeddings
      train/char-CNN-RNN-embeddings.pickle
      test/filenames.pickle                    StackGAN-Pytorch's COCO test embeddings
      test/val_captions.t7
    """

    def split_candidates(self, root: epath.Path | None) -> dict[str, list[Candidate]]:
        """Reads the release's train and test files (`read_train`, `read_test`)."""
        readers = {"train": read_train, "test": read_test}
        return read_splits(
            self.name,
            root,
            self.MANUAL_DOWNLOAD_INSTRUCTIONS,
            split_files=SPLIT_FILES,
            read_split=lambda root, split: readers[split](root, split),
            split_paths=image_paths,
        )
