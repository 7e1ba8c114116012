"""Reference image preprocessing on real photos, and the CUB metadata parsers."""

import numpy as np
import pytest
from skimage import data as skimage_data
from sklearn.datasets import load_sample_image

from stackgan_jax.data import preprocess
from stackgan_jax.errors import BadFileError


@pytest.fixture(scope="module")
def china():
    image = load_sample_image("china.jpg")
    assert image.shape == (427, 640, 3)
    return image


@pytest.fixture(scope="module")
def astronaut():
    return skimage_data.astronaut()


# Each case: image, bbox as in bounding_boxes.txt, and the rows/columns worked out by hand from
# x, y, w, h = int(bbox); cx = (2x + w) // 2; cy = (2y + h) // 2; R = int(0.75 * max(w, h)).
@pytest.mark.parametrize(
    ("image_name", "bbox", "rows", "cols"),
    [
        # Interior: (200, 150, 81, 60) -> c = (240, 180), R = 60.
        ("astronaut", (200.0, 150.0, 81.0, 60.0), (120, 240), (180, 300)),
        # Fractions are truncated: (60, 27, 325, 304) -> c = (222, 179), R = 243; the square
        # [-64, 422) x [-21, 465) is clipped at the top and left borders.
        ("china", (60.7, 27.9, 325.9, 304.3), (0, 422), (0, 465)),
        # (500, 300, 139, 126) -> c = (569, 363), R = 104; clipped at the bottom and right.
        ("china", (500.0, 300.0, 139.0, 126.0), (259, 427), (465, 640)),
        # Odd 2x + w: (10, 11, 5, 4) -> c = (12, 13) (12.5 and 13 floored), R = 3.
        ("astronaut", (10.0, 11.0, 5.0, 4.0), (10, 16), (9, 15)),
    ],
)
def test_cub_crop_matches_hand_computed_windows(request, image_name, bbox, rows, cols):
    image = request.getfixturevalue(image_name)
    cropped = preprocess.cub_crop(image, bbox)
    np.testing.assert_array_equal(cropped, image[rows[0] : rows[1], cols[0] : cols[1]])
    assert cropped.shape == (rows[1] - rows[0], cols[1] - cols[0], 3)


def test_cub_crop_on_grey_image():
    camera = skimage_data.camera()
    cropped = preprocess.cub_crop(camera, (200, 150, 81, 60))
    np.testing.assert_array_equal(cropped, camera[120:240, 180:300])


def test_to_rgb_handles_grey_rgba_and_rgb(astronaut):
    camera = skimage_data.camera()
    assert camera.ndim == 2
    for grey in (camera, camera[:, :, None]):
        rgb = preprocess.to_rgb(grey)
        assert rgb.shape == (*camera.shape, 3) and rgb.dtype == np.uint8
        for channel in range(3):
            np.testing.assert_array_equal(rgb[:, :, channel], camera)

    alpha = np.linspace(0, 255, astronaut.shape[1], dtype=np.uint8)[None, :, None]
    rgba = np.concatenate([astronaut, np.broadcast_to(alpha, (*astronaut.shape[:2], 1))], axis=2)
    np.testing.assert_array_equal(preprocess.to_rgb(rgba), astronaut)  # dropped, not composited
    np.testing.assert_array_equal(preprocess.to_rgb(astronaut), astronaut)
    assert preprocess.to_rgb(camera.astype(np.float64)).dtype == np.float64

    with pytest.raises(ValueError, match="shape"):
        preprocess.to_rgb(np.zeros((4, 4, 2), np.uint8))


def _keys_bicubic(x):
    """PIL's bicubic kernel (Keys, a = -0.5)."""
    x = np.abs(x)
    a = -0.5
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((x - 5) * x + 8) * x * a - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def _resize_matrix(in_size, out_size):
    """Float resampling matrix of PIL's convolution resize: support grows when downscaling."""
    scale = in_size / out_size
    stretch = max(scale, 1.0)
    centres = (np.arange(out_size) + 0.5) * scale
    sources = np.arange(in_size) + 0.5
    weights = _keys_bicubic((sources[None, :] - centres[:, None]) / stretch)
    return weights / weights.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(("image_name", "size"), [("astronaut", 76), ("china", 304)])
def test_resize_bicubic_is_antialiased_keys_bicubic(request, image_name, size):
    image = request.getfixturevalue(image_name)
    resized = preprocess.resize_bicubic(image, size)
    assert resized.shape == (size, size, 3) and resized.dtype == np.uint8

    # PIL resamples rows first and stores that pass as uint8 before resampling columns.
    horizontal = _resize_matrix(image.shape[1], size) @ image.astype(np.float64)
    horizontal = np.clip(np.round(horizontal), 0, 255)
    expected = np.tensordot(_resize_matrix(image.shape[0], size), horizontal, axes=1)
    error = np.abs(resized - np.round(np.clip(expected, 0, 255)))
    # PIL's fixed-point weights differ from float ones by rounding only.
    assert error.max() <= 1 and error.mean() < 0.1

    with pytest.raises(ValueError, match="uint8"):
        preprocess.resize_bicubic(image.astype(np.float32), size)


def test_bytescale_matches_scipy_formula():
    image = np.array([[10.0, 20.0], [30.0, 60.0]])
    # (v - 10) * 255 / 50, then + 0.5 and truncated: 51.0 + 0.5 -> 51.
    np.testing.assert_array_equal(preprocess.bytescale(image), [[0, 51], [102, 255]])
    np.testing.assert_array_equal(preprocess.bytescale(np.full((2, 2), 7.0)), np.zeros((2, 2)))
    full_range = skimage_data.astronaut()
    np.testing.assert_array_equal(preprocess.bytescale(full_range), full_range)


def test_load_sizes_follows_reference_order(astronaut):
    img304, img76 = preprocess.load_sizes(astronaut.astype(np.float64))
    assert img304.shape == (304, 304, 3) and img76.shape == (76, 76, 3)
    assert img304.dtype == img76.dtype == np.uint8
    # The astronaut spans 0..255, so byte-scaling leaves it alone.
    np.testing.assert_array_equal(img304, preprocess.resize_bicubic(astronaut, 304))
    np.testing.assert_array_equal(img76, preprocess.resize_bicubic(img304, 76))
    assert not np.array_equal(img76, preprocess.resize_bicubic(astronaut, 76))


def test_load_sizes_stretches_low_contrast_crops_like_the_reference():
    chelsea = skimage_data.chelsea()
    dull = (chelsea // 4 + 100).astype(np.float64)  # values 100..157
    img304, _ = preprocess.load_sizes(dull)
    stretched = preprocess.bytescale(dull)
    assert stretched.min() == 0 and stretched.max() == 255
    np.testing.assert_array_equal(img304, preprocess.resize_bicubic(stretched, 304))
    assert img304.max() - img304.min() > 200


def test_grey_photo_through_the_whole_pipeline():
    rgb = preprocess.to_rgb(skimage_data.camera())
    img304, img76 = preprocess.load_sizes(preprocess.cub_crop(rgb, (100.0, 60.0, 300.0, 280.0)))
    assert img304.shape == (304, 304, 3) and img76.shape == (76, 76, 3)
    np.testing.assert_array_equal(img304[..., 0], img304[..., 2])


BOXES = {
    "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18": (60.0, 27.0, 325.0, 304.0),
    "002.Laysan_Albatross/Laysan_Albatross_0002_1027": (139.5, 30.0, 153.0, 264.25),
    "200.Common_Yellowthroat/Common_Yellowthroat_0055_190967": (0.0, 0.0, 500.0, 375.0),
}


def _write_cub_metadata(tmp_path):
    images_txt = tmp_path / "images.txt"
    boxes_txt = tmp_path / "bounding_boxes.txt"
    ids = {key: 10 + 7 * i for i, key in enumerate(BOXES)}
    images_txt.write_text("".join(f"{ids[key]} {key}.jpg\n" for key in BOXES))
    # Reversed order and a trailing blank line: parsing must go by id, not by line.
    boxes_txt.write_text(
        "".join(f"{ids[key]} {' '.join(map(str, box))}\n" for key, box in reversed(BOXES.items()))
        + "\n"
    )
    return images_txt, boxes_txt, ids


def test_cub_metadata_round_trip(tmp_path):
    images_txt, boxes_txt, ids = _write_cub_metadata(tmp_path)
    assert preprocess.read_image_list(images_txt) == ids
    boxes = preprocess.read_bounding_boxes(images_txt, boxes_txt)
    assert boxes == BOXES
    assert list(boxes) == list(BOXES)  # keys in images.txt order


def test_bounding_boxes_must_match_image_ids(tmp_path):
    images_txt, boxes_txt, _ = _write_cub_metadata(tmp_path)
    with boxes_txt.open("a") as f:
        f.write("999 1 2 3 4\n")
    with pytest.raises(ValueError, match="999"):
        preprocess.read_bounding_boxes(images_txt, boxes_txt)
    with images_txt.open("a") as f:
        f.write("999 a/b.jpg\n1000 a/c.jpg\n")
    with pytest.raises(ValueError, match="1000"):
        preprocess.read_bounding_boxes(images_txt, boxes_txt)


def test_read_captions_strips_and_drops_empty_lines(tmp_path):
    captions = ["this bird has a white belly and a black crown.", "a small bird, grey wings."]
    path = tmp_path / "text_c10" / "001.Black_footed_Albatross" / "x.txt"
    path.parent.mkdir(parents=True)
    path.write_bytes(f"  {captions[0]}  \r\n\n   \n{captions[1]}".encode())
    assert preprocess.read_captions(path) == captions


def test_a_caption_file_that_is_not_utf8_is_named_with_its_line(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes("a small bird.\nfrom Mal\xe9.\n".encode("latin-1"))
    with pytest.raises(BadFileError, match=r"x\.txt is not UTF-8 text: line 2 has the byte 0xe9"):
        preprocess.read_captions(path)
