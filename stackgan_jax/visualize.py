"""Image grids for training samples (TensorBoard and PNG files)."""

import numpy as np
from PIL import Image, ImageDraw


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[-1, 1] floats → uint8 [0, 255]."""
    return np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(
        np.uint8
    )


def upscale(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 [N, h, w, 3] → [N, size, size, 3] (bicubic), to show 64×64 beside 256×256."""
    if images.shape[1] == size:
        return images
    return np.stack(
        [np.asarray(Image.fromarray(x).resize((size, size), Image.BICUBIC)) for x in images]
    )


def grid(rows: list[np.ndarray], padding: int = 2) -> np.ndarray:
    """Rows of images in [-1, 1] → one uint8 [H, W, 3] picture, every image at the largest size.

    Args:
      rows: each [N, h, w, 3]; all rows hold the same N.
      padding: white pixels between images.
    """
    size = max(r.shape[1] for r in rows)
    rows = [upscale(to_uint8(r), size) for r in rows]
    count = rows[0].shape[0]
    step = size + padding
    out = np.full((len(rows) * step + padding, count * step + padding, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            y, x = padding + i * step, padding + j * step
            out[y : y + size, x : x + size] = image
    return out


def captioned_grid(
    captions: list[str], rows: list[np.ndarray], band_height: int = 24, padding: int = 2
) -> np.ndarray:
    """The reference demo's layout: per sentence, a caption band above its rows of images.

    Args:
      captions: one sentence per block.
      rows: for each sentence, its rows (e.g. Stage-I then Stage-II), as `grid` takes them.
      band_height: pixels of the caption band.
      padding: white pixels between images.

    Returns:
      uint8 [H, W, 3].
    """
    blocks = []
    for caption, block_rows in zip(captions, rows, strict=True):
        images = grid(block_rows, padding)
        band = Image.new("RGB", (images.shape[1], band_height), "white")
        ImageDraw.Draw(band).text((padding + 2, 4), caption, fill="black")
        blocks += [np.asarray(band), images]
    width = max(block.shape[1] for block in blocks)
    padded = [
        np.pad(b, ((0, 0), (0, width - b.shape[1]), (0, 0)), constant_values=255) for b in blocks
    ]
    return np.concatenate(padded)
