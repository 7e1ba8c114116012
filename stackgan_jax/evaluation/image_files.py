"""Evaluation images as files: our dumps, and any other model's, read back for `evaluate`.

`evaluate --save_images=DIR` writes what it scored (`write_images`):

    DIR/captions.txt         image i's caption on line i
    DIR/stage1/000000.png    the 64x64 images, 8-bit, rounded as `visualize.to_uint8` rounds
    DIR/stage2/000000.png    the 256x256 images (Stage-II checkpoints)

`evaluate --images_dir=DIR` reads that layout back (`find_images`, `read_images`), and any
other directory of PNG or JPEG files as one stage's images, found recursively and taken in the
order of their paths: DF-GAN's `eval` dumps (`imgs_n000000_gpu0.png`, generation order) and
AttnGAN's or DM-GAN's `valid/single/<class>/<image>_s-1.png` alike. Their captions come from
`--captions` (one per line, in that order) or a `captions.txt` in DIR; those dumps record none,
since each of those scripts draws a random caption of the test image (only caption-free
metrics, FID and IS, can score them without it).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import numpy as np
import tqdm
from etils import epath
from PIL import Image

from stackgan_jax import visualize
from stackgan_jax.errors import BadFileError, UserError
from stackgan_jax.evaluation.evaluator import Images
from stackgan_jax.text import caption_file

CAPTIONS = "captions.txt"
SUFFIXES = (".png", ".jpg", ".jpeg")
STAGES = ("stage1", "stage2")


@dataclasses.dataclass(frozen=True)
class ImageDump:
    """The images of a directory, found but not yet read (`read_images` reads them).

    Attributes:
        paths: {stage name: its image files, in order}.
        size: {stage name: its images' side, read from the first}.
        captions: image i's caption, or None where the directory has none.
        captions_file: where the captions came from, or None.
        stage: the last stage's number (1 or 2).
    """

    paths: dict[str, list[epath.Path]]
    size: dict[str, int]
    captions: list[str] | None
    captions_file: str | None
    stage: int

    def __len__(self) -> int:
        return len(self.paths[f"stage{self.stage}"])


def write_images(directory: str, images: Images, captions: list[str]) -> None:
    """Writes each stage's images as PNGs and their captions, all or nothing.

    Everything goes to `directory`.partial first, renamed to `directory` when complete, so an
    interrupted dump is never taken for a whole one.

    Raises:
        UserError: `directory` exists already.
        ValueError: a caption spans several lines, so a line per caption cannot hold it.
    """
    target = epath.Path(directory)
    if target.exists():
        raise UserError(f"--save_images={directory} exists; choose a new directory")
    for caption in captions:
        if len(caption.splitlines()) != 1:
            raise ValueError(f"a caption must be one line to be written, got {caption!r}")
    partial = target.with_name(target.name + ".partial")
    if partial.exists():
        partial.rmtree()  # What an interrupted dump left.
    for stage, stage_images in images.items():
        (partial / stage).mkdir(parents=True)
        pixels = visualize.to_uint8(stage_images)
        for i, image in enumerate(tqdm.tqdm(pixels, desc=f"writing {stage}", unit=" images")):
            with (partial / stage / f"{i:06d}.png").open("wb") as f:
                # Fast, light compression: a 30,000-image dump is written in minutes.
                Image.fromarray(image).save(f, format="PNG", compress_level=1)
    (partial / CAPTIONS).write_text("".join(f"{caption}\n" for caption in captions))
    partial.rename(target)


def find_images(directory: str, captions_file: str | None = None) -> ImageDump:
    """The images of `directory` in either layout (see the module docstring), and their captions.

    Only the first image of each stage is opened, so a mistake elsewhere (a weight file that
    is missing) shows before the images are read.

    Args:
        directory: our dump (stage1/, stage2/ and captions.txt), or any directory of images.
        captions_file: one caption per image, in the images' order; None: `directory`'s
            captions.txt if there is one.

    Returns:
        The image files per stage and the captions.

    Raises:
        FileNotFoundError: `directory` or `captions_file` does not exist.
        BadFileError: there are no images, the stages' counts differ, the first image is not a
            square image, or the captions are not one per image.
    """
    root = epath.Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"--images_dir={directory} is not a directory")
    stage_dirs = {stage: root / stage for stage in STAGES if (root / stage).is_dir()}
    paths = {stage: _image_paths(path) for stage, path in stage_dirs.items()}
    size = {stage: _read(stage_paths[0]).shape[0] for stage, stage_paths in paths.items()}
    if not paths:
        only = _image_paths(root)
        side = _read(only[0]).shape[0]
        name = "stage1" if side == 64 else "stage2"
        paths, size = {name: only}, {name: side}
    counts = {stage: len(stage_paths) for stage, stage_paths in paths.items()}
    if len(set(counts.values())) > 1:
        raise BadFileError(f"{directory}: the stages hold different numbers of images, {counts}")
    if captions_file is None and (root / CAPTIONS).exists():
        captions_file = os.fspath(root / CAPTIONS)
    captions = None
    if captions_file is not None:
        captions = caption_file.read_lines(captions_file)
        count = next(iter(counts.values()))
        if len(captions) != count:
            raise BadFileError(
                f"{captions_file} has {len(captions)} lines for the {count} images of"
                f" {directory}: it must hold one caption per image, in the order of their paths"
            )
    stage = 2 if "stage2" in paths else 1
    return ImageDump(paths, size, captions, captions_file, stage)


def read_images(dump: ImageDump) -> Images:
    """The images of `find_images`, read: {stage name: float32 [n, size, size, 3] in [-1, 1]}.

    The 8-bit pixels k become k / 127.5 - 1, which `visualize.to_uint8` maps back to k.

    Raises:
        BadFileError: a file is not an image, or is not of its stage's size.
    """
    images = {}
    for stage, paths in dump.paths.items():
        size = dump.size[stage]
        images[stage] = pixels = np.empty((len(paths), size, size, 3), np.float32)
        for i, path in enumerate(tqdm.tqdm(paths, desc=f"reading {stage}", unit=" images")):
            image = _read(path)
            if image.shape != pixels.shape[1:]:
                raise BadFileError(
                    f"{path} is {image.shape[1]}x{image.shape[0]} but {paths[0]} is"
                    f" {size}x{size}: one stage's images must share a size"
                )
            pixels[i] = image / np.float32(127.5) - 1
    return images


def _image_paths(directory: epath.Path) -> list[epath.Path]:
    """Every image file below `directory`, in the order of their paths."""
    paths = sorted(_files_below(directory))
    if not paths:
        raise BadFileError(f"{directory} holds no {'/'.join(SUFFIXES)} images")
    return paths


def _files_below(directory: epath.Path) -> Iterator[epath.Path]:
    """Image files below `directory`, in any order (hidden files and directories left out).

    Walked by hand: `rglob` is refused on bucket paths.
    """
    for path in directory.iterdir():
        if path.name.startswith("."):
            continue
        if path.is_dir():
            yield from _files_below(path)
        elif path.suffix.lower() in SUFFIXES:
            yield path


def _read(path: epath.Path) -> np.ndarray:
    """uint8 [H, W, 3] pixels of one image file.

    Raises:
        BadFileError: the file is not a readable image, or not a square one.
    """
    try:
        with path.open("rb") as f, Image.open(f) as opened:
            pixels = np.asarray(opened.convert("RGB"))
    except (OSError, SyntaxError) as e:  # PIL's errors for truncated or foreign files
        raise BadFileError(f"{path} is not a readable image: {e}") from None
    if pixels.shape[0] != pixels.shape[1]:
        raise BadFileError(f"{path} is {pixels.shape[1]}x{pixels.shape[0]}; images must be square")
    return pixels
