"""What every StackGAN TFDS builder shares: the example schema, errors, image and caption helpers.

Every builder writes the same features (the schema the input pipeline reads):

| feature       | type                       | meaning                                          |
|---------------|----------------------------|--------------------------------------------------|
| `image`       | uint8 304 x 304 x 3, PNG   | cropped around the box (if known), bicubic       |
| `image_small` | uint8 76 x 76 x 3, PNG     | bicubic from `image`                             |
| `captions`    | Sequence(Text)             | the image's captions                             |
| `embeddings`  | float32 [num captions, D]  | row i embeds captions[i]                         |
| `label`       | int64                      | 0-based class id, -1 when there is none          |
| `file_name`   | Text                       | the image's key, e.g. '002.Laysan_Albatross/...' |
| `bbox`        | float32 (4,)               | x, y, w, h in original pixels, or four -1s       |

and `synthetic_birds` adds `attributes`, one int64 per rendered attribute. Datasets are written as
ArrayRecord files, so `tfds.data_source` reads them with random access.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import itertools
import textwrap
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import tensorflow_datasets as tfds
import tqdm
from absl import logging
from etils import epath
from PIL import Image

from stackgan_jax.data import preprocess
from stackgan_jax.errors import UserError
from stackgan_jax.text import TextEncoder, get_encoder

BBox = tuple[float, float, float, float]
SplitData = TypeVar("SplitData")

FILE_FORMAT = "array_record"
NO_LABEL = -1
NO_BBOX = (-1.0, -1.0, -1.0, -1.0)
# Size of the char-CNN-RNN vectors in the StackGAN releases (Reed et al.'s hybrid encoder).
RELEASE_EMBEDDING_DIM = 1024
# Size of all-MiniLM-L6-v2's vectors; declared before the encoder loads, checked when it does.
MINILM_EMBEDDING_DIM = 384
# Examples whose captions are embedded in one encoder call: large enough to fill the encoder's
# batch buckets, small enough that the progress bar moves.
EMBED_CHUNK = 32
# Missing files listed in an error before the rest are only counted.
_MAX_LISTED = 20


class DataPreparationError(UserError):
    """The files a builder reads are incomplete or inconsistent; the message says how."""


class MissingManualFilesError(DataPreparationError, FileNotFoundError):
    """Files the builder needs are not in the manual directory."""

    def __init__(self, dataset: str, root: epath.Path | None, missing: Sequence[str], layout: str):
        where = f"in {root}" if root else "(the manual directory does not exist or is empty)"
        listed = "\n".join(f"  {path}" for path in missing[:_MAX_LISTED])
        more = len(missing) - _MAX_LISTED
        if more > 0:
            listed += f"\n  ... and {more} more"
        super().__init__(
            f"{dataset}: {len(missing)} required file(s) missing {where}:\n{listed}\n"
            f"Expected layout of the manual directory:\n{textwrap.dedent(layout).strip()}"
        )
        self.missing = list(missing)


class InconsistentDataError(DataPreparationError, ValueError):
    """Files disagree with each other, e.g. embeddings for a different number of images."""


@dataclasses.dataclass(frozen=True)
class Candidate:
    """What one example is made from, before its image is decoded.

    Attributes:
        key: the image's key, stored as `file_name`; unique within the dataset.
        image: the image file, or the already rendered uint8 image.
        captions: the image's captions.
        label: 0-based class id or NO_LABEL.
        bbox: (x, y, w, h) to crop around as CUB images are, or None for the whole image.
        embeddings: float32 [len(captions), D], or None when the builder's text encoder embeds
            the captions.
        extra: further features, e.g. synthetic_birds' attributes.
    """

    key: str
    image: epath.Path | np.ndarray
    captions: list[str]
    label: int = NO_LABEL
    bbox: BBox | None = None
    embeddings: np.ndarray | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def example_features(
    embedding_dim: int, extra: dict[str, tfds.features.FeatureConnector] | None = None
) -> tfds.features.FeaturesDict:
    """The schema shared by all builders (module docstring).

    Args:
        embedding_dim: D, the size of each caption embedding.
        extra: features added to the shared ones.

    Returns:
        The features dict.
    """
    size, small = preprocess.LOAD_SIZE, preprocess.LR_LOAD_SIZE
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(size, size, 3), encoding_format="png"),
            "image_small": tfds.features.Image(shape=(small, small, 3), encoding_format="png"),
            "captions": tfds.features.Sequence(tfds.features.Text()),
            "embeddings": tfds.features.Tensor(shape=(None, embedding_dim), dtype=np.float32),
            "label": tfds.features.Scalar(dtype=np.int64),
            "file_name": tfds.features.Text(),
            "bbox": tfds.features.Tensor(shape=(4,), dtype=np.float32),
            **(extra or {}),
        }
    )


def manual_root(dl_manager: tfds.download.DownloadManager) -> epath.Path | None:
    """The manual directory, or None when TFDS finds it missing or empty.

    Args:
        dl_manager: the download manager TFDS hands to `_split_generators`.

    Returns:
        The directory, or None; every required file is then missing.
    """
    try:
        return dl_manager.manual_dir
    except AssertionError:
        # TFDS refuses a missing or empty manual_dir with its own message; the builders list
        # every file they need instead.
        return None


def missing_files(root: epath.Path | None, relative_paths: Iterable[str]) -> list[str]:
    """The paths that do not exist under `root`.

    Args:
        root: the manual directory, or None if it is missing.
        relative_paths: paths relative to `root`.

    Returns:
        The missing ones, in the given order.
    """
    return [path for path in relative_paths if root is None or not (root / path).exists()]


def read_splits(
    dataset: str,
    root: epath.Path | None,
    instructions: str,
    split_files: Mapping[str, Sequence[str]],
    read_split: Callable[[epath.Path, str], SplitData],
    split_paths: Callable[[SplitData], Iterable[str]],
    shared_files: Sequence[str] = (),
) -> dict[str, SplitData]:
    """Reads each split's metadata, checking every file the dataset needs first.

    A split's per-image files (images, caption files) are known only once its metadata is read,
    so they are checked for the splits whose metadata files are there; all missing files then go
    into one error.

    Args:
        dataset: the builder's name, for the error.
        root: the manual directory, or None if it is missing or empty.
        instructions: the expected layout, quoted in the error.
        split_files: {split: its metadata files}, relative to `root`.
        read_split: (root, split) -> the split's metadata.
        split_paths: a split's metadata -> the per-image files it needs, relative to `root`.
        shared_files: files every split needs.

    Returns:
        {split: metadata}.

    Raises:
        MissingManualFilesError: listing every missing file.
    """
    missing = missing_files(root, [*shared_files, *itertools.chain(*split_files.values())])
    splits = {
        split: read_split(root, split)
        for split, files in split_files.items()
        if root is not None and not missing_files(root, files)
    }
    for data in splits.values():
        missing += missing_files(root, split_paths(data))
    if missing:
        raise MissingManualFilesError(dataset, root, missing, instructions)
    return splits


def check_release_embeddings(
    embeddings: np.ndarray, num_images: int, source: str, file_list: str
) -> None:
    """Checks that released embeddings are finite and [num_images, captions, 1024].

    Args:
        embeddings: the array read from `source`.
        num_images: the number of images in `file_list`.
        source: the embeddings' file, for the error.
        file_list: the split's file list, for the error.

    Raises:
        InconsistentDataError: naming the numbers that disagree.
    """
    if embeddings.ndim != 3:
        raise InconsistentDataError(
            f"{source} holds embeddings of shape {embeddings.shape}; expected "
            f"[images, captions, {RELEASE_EMBEDDING_DIM}]"
        )
    if embeddings.shape[0] != num_images:
        raise InconsistentDataError(
            f"{source} holds embeddings for {embeddings.shape[0]} images but {file_list} lists "
            f"{num_images} images"
        )
    if embeddings.shape[2] != RELEASE_EMBEDDING_DIM:
        raise InconsistentDataError(
            f"{source} holds {embeddings.shape[2]}-d embeddings but the release's char-CNN-RNN "
            f"embeddings are {RELEASE_EMBEDDING_DIM}-d"
        )
    bad_images = np.flatnonzero(~np.isfinite(embeddings).all(axis=(1, 2)))
    if bad_images.size:
        raise InconsistentDataError(
            f"{source} holds NaN or infinite values in the embeddings of {bad_images.size}"
            f" image(s), e.g. entry {bad_images[0]} of {file_list}; the file is damaged, get it"
            " again"
        )


def read_image(path: epath.Path) -> np.ndarray | None:
    """Decodes an image file to uint8 RGB, or returns None if it is corrupt or truncated.

    Args:
        path: the image file.

    Returns:
        H x W x 3 uint8 array, or None.
    """
    try:
        with path.open("rb") as f, Image.open(f) as image:
            # Same as preprocess.to_rgb for grey and RGBA (alpha dropped, not composited), and
            # it also maps palette and CMYK images, which CUB and Oxford-102 contain a few of.
            return np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError):  # PIL's errors for truncated, corrupt or non-image files
        return None


def png_bytes(image: np.ndarray) -> bytes:
    """Encodes an image as PNG for an Image feature.

    PIL at zlib level 1 is several times faster than TFDS's own encoder (TensorFlow's, level 6)
    for about a tenth more bytes; PNG stays lossless either way.

    Args:
        image: H x W x 3 uint8 image.

    Returns:
        The PNG file's bytes.
    """
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="png", compress_level=1)
    return buffer.getvalue()


def image_features(image: np.ndarray, bbox: BBox | None) -> dict[str, bytes | np.ndarray]:
    """The reference's 304 and 76 pixel images (spec §1.4), PNG-encoded, and the stored box.

    Args:
        image: H x W x 3 uint8 image.
        bbox: (x, y, w, h) to crop around as the reference crops CUB, or None to squash the
            whole image into a square.

    Returns:
        {'image', 'image_small', 'bbox'} features as stored.
    """
    if bbox is not None:
        image = preprocess.cub_crop(image, bbox)
    image304, image76 = preprocess.load_sizes(image)
    return {
        "image": png_bytes(image304),
        "image_small": png_bytes(image76),
        "bbox": np.asarray(NO_BBOX if bbox is None else bbox, np.float32),
    }


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of `size` items (the last may be shorter).

    Args:
        items: any iterable.
        size: items per list.

    Yields:
        The lists.
    """
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


@functools.cache
def shared_encoder(name: str, weights: str | None = None) -> TextEncoder:
    """`stackgan_jax.text.get_encoder`, once per process.

    Loading an encoder and compiling its forward pass takes seconds; builders in one process
    (several configs, tests) share it.

    Args:
        name: registered encoder name.
        weights: the encoder's weights, or None for its default.

    Returns:
        The encoder.
    """
    return get_encoder(name, weights)


class CaptionEmbedder:
    """Embeds caption lists with a text encoder, encoding each distinct caption only once.

    Generated captions repeat a lot (synthetic_birds draws them from templates), so a cache keyed
    by the caption string saves most of the encoder's work.
    """

    def __init__(self, encoder: TextEncoder, expected_dim: int):
        if encoder.dim != expected_dim:
            raise InconsistentDataError(
                f"text encoder {encoder.name!r} gives {encoder.dim}-d vectors but the dataset "
                f"declares {expected_dim}-d embeddings"
            )
        self._encoder = encoder
        self._cache: dict[str, np.ndarray] = {}

    def embed(self, caption_lists: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Embeds several examples' captions with one encoder call for the new ones.

        Args:
            caption_lists: each example's captions.

        Returns:
            float32 [len(captions), dim] per example.
        """
        new = list(dict.fromkeys(c for captions in caption_lists for c in captions))
        new = [c for c in new if c not in self._cache]
        if new:
            self._cache.update(zip(new, self._encoder.encode(new), strict=True))
        return [
            np.stack([self._cache[c] for c in captions]).astype(np.float32)
            for captions in caption_lists
        ]


class StackGanBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the StackGAN builders: the shared schema, ArrayRecord output and skip reporting.

    Subclasses set EMBEDDING_DIM (or override `embedding_dim`), may add features with
    `extra_features`, and list each split's candidates from the manual directory in
    `split_candidates` (or override `_split_generators`, returning
    `{split: self._generate_examples(split, candidates, total)}`). Those whose candidates carry
    no embeddings override `text_encoder`, whose vectors `caption_embedder` caches by caption.

    Attributes:
        skipped_images: {split: keys of the images that could not be decoded}, filled while the
            dataset is prepared.
    """

    EMBEDDING_DIM = RELEASE_EMBEDDING_DIM
    DESCRIPTION = ""
    # Nothing is downloaded, so there are no checksums to look up. Without this TFDS 4.9.10
    # looks for a checksums file next to the builder's code through `importlib_resources`, which
    # its requirements omit on Python >= 3.9 (tensorflow/datasets#11212).
    url_infos = None

    def __init__(self, *, file_format: str | None = None, **kwargs: Any):
        super().__init__(file_format=file_format, **kwargs)
        if file_format is None and not self.info.splits:
            # Nothing restored from disk: write ArrayRecord (random access) rather than TFDS's
            # default tfrecord. A prepared dataset keeps the format it was written in.
            self.info.set_file_format(FILE_FORMAT, override=True)
        self.skipped_images: dict[str, list[str]] = {}

    @property
    def embedding_dim(self) -> int:
        """D, the size of the stored caption embeddings."""
        return self.EMBEDDING_DIM

    def extra_features(self) -> dict[str, tfds.features.FeatureConnector]:
        """Features beyond the shared schema; none by default."""
        return {}

    def text_encoder(self) -> TextEncoder:
        """The encoder for captions whose candidates carry no embeddings.

        Raises:
            NotImplementedError: the builder's candidates always carry embeddings.
        """
        raise NotImplementedError(f"{self.name} reads its embeddings from files")

    @functools.cached_property
    def caption_embedder(self) -> CaptionEmbedder:
        """Embeds captions with `text_encoder`; one cache for all splits."""
        return CaptionEmbedder(self.text_encoder(), self.embedding_dim)

    def split_candidates(self, root: epath.Path | None) -> dict[str, list[Candidate]]:
        """Checks the manual directory's files and lists each split's examples-to-be.

        Args:
            root: the manual directory, or None if it is missing or empty.

        Returns:
            {split: candidates}.

        Raises:
            NotImplementedError: the builder overrides `_split_generators` instead.
        """
        raise NotImplementedError(f"{self.name} makes its splits in _split_generators")

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        splits = self.split_candidates(manual_root(dl_manager))
        return {
            split: self._generate_examples(split, candidates, len(candidates))
            for split, candidates in splits.items()
        }

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=example_features(self.embedding_dim, self.extra_features()),
        )

    def _generate_examples(
        self, split: str, candidates: Iterable[Candidate], total: int
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Decodes, crops, resizes and embeds candidates; skips unreadable images.

        Args:
            split: the split's name, for the progress bar and the skip report.
            candidates: the split's examples-to-be.
            total: their number, for the progress bar.

        Yields:
            (key, example) pairs in the schema of `example_features`.
        """
        skipped = self.skipped_images.setdefault(split, [])
        with tqdm.tqdm(total=total, desc=f"{self.name} {split}", unit=" images") as progress:
            for chunk in chunks(candidates, EMBED_CHUNK):
                if any(c.embeddings is None for c in chunk):
                    embeddings = self.caption_embedder.embed([c.captions for c in chunk])
                else:
                    embeddings = [c.embeddings for c in chunk]
                for candidate, caption_embeddings in zip(chunk, embeddings, strict=True):
                    image = candidate.image
                    if isinstance(image, epath.Path):
                        image = read_image(image)
                    if image is None:
                        skipped.append(candidate.key)
                        continue
                    yield (
                        candidate.key,
                        {
                            **image_features(image, candidate.bbox),
                            "captions": candidate.captions,
                            "embeddings": np.asarray(caption_embeddings, np.float32),
                            "label": candidate.label,
                            "file_name": candidate.key,
                            **candidate.extra,
                        },
                    )
                progress.update(len(chunk))
        if skipped:
            logging.warning(
                "%s %s: skipped %d unreadable image(s): %s",
                self.name,
                split,
                len(skipped),
                ", ".join(skipped),
            )
