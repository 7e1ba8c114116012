"""The StackGAN reference's offline image preprocessing, as pure numpy/PIL functions.

The TF reference (`misc/preprocess_birds.py`, `misc/utils.py`) reads an image as float, makes it
RGB, crops CUB images around their bounding box, and resizes to 304 and then 76 pixels with
`scipy.misc.imresize(..., 'bicubic')`. That scipy function (removed in scipy 1.3) converted the
array to a PIL image and called `Image.resize(size, Image.BICUBIC)`. On the way it byte-scaled
any non-uint8 array: the array's minimum became 0 and its maximum 255. Because the reference reads
images as float, its 304-pixel images are min-max stretched per image; the 76-pixel ones are
resized from those uint8 images and are not stretched again. `load_sizes` reproduces both steps.

CUB's metadata files are keyed by the image path without extension, e.g.
'002.Laysan_Albatross/Laysan_Albatross_0002_1027', the keys of the release's `filenames.pickle`.
"""

import os
import posixpath

import numpy as np
from PIL import Image

from stackgan_jax.errors import BadFileError
from stackgan_jax.text import caption_file

LOAD_SIZE = 304  # int(256 * 76 / 64): the Stage-II crop size 256 plus a random-crop margin.
LR_LOAD_SIZE = 76  # LOAD_SIZE / 4: the Stage-I crop size 64 plus a random-crop margin.


def cub_crop(image: np.ndarray, bbox: tuple[float, float, float, float]) -> np.ndarray:
    """Crops a square of 1.5x the bounding box's longer side around its centre (spec §1.4).

    The square is clipped at the image borders and not re-squared, as in the reference, so a crop
    near a border is a rectangle that a later square resize squashes.

    Args:
        image: H x W (x C) image.
        bbox: (x, y, width, height) of the bird in pixels, as in CUB's `bounding_boxes.txt`.

    Returns:
        A view of `image` with rows [cy - R, cy + R) and columns [cx - R, cx + R), clipped to
        the image, where R = int(0.75 * max(width, height)).
    """
    x, y, w, h = (int(v) for v in bbox)
    # Python 2's integer `/` in the reference floors; `//` keeps that for boxes off the image too.
    centre_x = (2 * x + w) // 2
    centre_y = (2 * y + h) // 2
    radius = int(max(w, h) * 0.75)
    height, width = image.shape[:2]
    return image[
        max(0, centre_y - radius) : min(height, centre_y + radius),
        max(0, centre_x - radius) : min(width, centre_x + radius),
    ]


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Makes an image 3-channel the way the reference does.

    Args:
        image: H x W grey, H x W x 1 grey, H x W x 3 RGB or H x W x 4 RGBA image, any dtype.

    Returns:
        H x W x 3 image of the same dtype. Grey is repeated into the three channels; RGBA loses
        its alpha channel without compositing, as in the reference.

    Raises:
        ValueError: the image has another shape.
    """
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected a grey, RGB or RGBA image, got shape {image.shape}")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image[:, :, :3]


def bytescale(image: np.ndarray) -> np.ndarray:
    """Stretches an image to the full uint8 range as `scipy.misc.bytescale` did for floats.

    scipy passed uint8 arrays through unchanged, but the reference always hands it the float image
    it read, so here every dtype is stretched.

    Args:
        image: array of any real dtype.

    Returns:
        uint8 array: (image - min) * 255 / (max - min), rounded half up; a constant image maps to 0.
    """
    image = np.asarray(image, np.float64)
    low, high = image.min(), image.max()
    scale = 255.0 / ((high - low) or 1.0)
    return (np.clip((image - low) * scale, 0, 255) + 0.5).astype(np.uint8)


def resize_bicubic(image: np.ndarray, size: int) -> np.ndarray:
    """Resizes a uint8 image to size x size like `scipy.misc.imresize(image, ..., 'bicubic')`.

    That is PIL's `Image.resize` with the bicubic filter (Keys, a = -0.5), whose support widens
    with the downscale factor, so downscaling is antialiased.

    Args:
        image: H x W x 3 uint8 image.
        size: output height and width.

    Returns:
        size x size x 3 uint8 image.

    Raises:
        ValueError: the image is not uint8.
    """
    if image.dtype != np.uint8:
        raise ValueError(f"resize_bicubic takes uint8 images, got {image.dtype}")
    resized = Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(resized)


def load_sizes(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Makes the reference's 304- and 76-pixel training images from one RGB image.

    Args:
        image: H x W x 3 image (already cropped for birds), any real dtype.

    Returns:
        (img304, img76): uint8 images of 304 x 304 x 3 and 76 x 76 x 3. img304 is the byte-scaled
        image resized bicubically; img76 is img304 resized bicubically, in the reference's order.
    """
    img304 = resize_bicubic(bytescale(image), LOAD_SIZE)
    return img304, resize_bicubic(img304, LR_LOAD_SIZE)


def _read_id_table(path: str | os.PathLike[str]) -> dict[int, list[str]]:
    """Reads a CUB metadata file of '<image id> <fields...>' lines into {id: fields}."""
    with open(path, encoding="utf-8") as f:
        rows = (line.split() for line in f)
        return {int(row[0]): row[1:] for row in rows if row}


def read_image_list(images_txt: str | os.PathLike[str]) -> dict[str, int]:
    """Parses CUB's `images.txt` ('<id> <class_dir>/<name>.jpg' per line).

    Args:
        images_txt: path of `CUB_200_2011/images.txt`.

    Returns:
        {key: image id}, the key being the relative path without extension.
    """
    return {
        posixpath.splitext(fields[0])[0]: image_id
        for image_id, fields in _read_id_table(images_txt).items()
    }


def read_bounding_boxes(
    images_txt: str | os.PathLike[str], bounding_boxes_txt: str | os.PathLike[str]
) -> dict[str, tuple[float, float, float, float]]:
    """Parses CUB's `bounding_boxes.txt` ('<id> <x> <y> <width> <height>' per line).

    Args:
        images_txt: path of `CUB_200_2011/images.txt`, which maps ids to keys.
        bounding_boxes_txt: path of `CUB_200_2011/bounding_boxes.txt`.

    Returns:
        {key: (x, y, width, height)} in `images.txt` order, in pixels as written (floats);
        `cub_crop` casts them to int.

    Raises:
        ValueError: the two files do not list the same image ids.
    """
    image_ids = read_image_list(images_txt)
    boxes = _read_id_table(bounding_boxes_txt)
    unmatched = set(boxes).symmetric_difference(image_ids.values())
    if unmatched:
        raise BadFileError(
            f"{images_txt} and {bounding_boxes_txt} disagree on image ids, e.g. {min(unmatched)}"
        )
    return {key: tuple(float(v) for v in boxes[image_id]) for key, image_id in image_ids.items()}


def read_captions(path: str | os.PathLike[str]) -> list[str]:
    """Reads a `text_c10/<key>.txt` caption file: one caption per line.

    Args:
        path: the caption file.

    Returns:
        The captions, stripped, without empty lines.

    Raises:
        BadFileError: the file is not UTF-8; the message names it, the line and the byte.
    """
    return [line.strip() for line in caption_file.read_lines(path) if line.strip()]
