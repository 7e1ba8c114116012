"""The `prepare` CLI end to end, in a subprocess: a summary on success, a clean error otherwise."""

import subprocess
import sys

import numpy as np
import skimage.data
import tensorflow_datasets as tfds
from PIL import Image

import stackgan_jax.data.builders  # noqa: F401  (registers the builders for tfds.data_source)


def prepare(*flags):
    return subprocess.run(
        [sys.executable, "-m", "stackgan_jax.data.prepare", *flags],
        capture_output=True,
        text=True,
        timeout=300,
    )


def write_captioned_folder(root):
    photos = {
        "cats/tabby": skimage.data.chelsea(),
        "cats/kitten": skimage.data.chelsea()[::2, ::2],
        "cups/coffee": skimage.data.coffee(),
        "cups/mug": skimage.data.coffee()[:, ::-1],
        "rocket": skimage.data.rocket(),
    }
    for key, photo in photos.items():
        path = root / "images" / f"{key}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo).save(path)
        caption = root / "text" / f"{key}.txt"
        caption.parent.mkdir(parents=True, exist_ok=True)
        caption.write_text(f"a photo of {key.split('/')[-1]}.\nanother photo.\n")
    broken = root / "images" / "cats" / "kitten.jpg"
    broken.write_bytes(broken.read_bytes()[:500])


def test_prepare_builds_a_dataset_and_prints_its_summary(tmp_path):
    write_captioned_folder(tmp_path / "mine")
    result = prepare(
        "--dataset=captioned_images",
        f"--data_dir={tmp_path / 'tfds'}",
        f"--manual_dir={tmp_path / 'mine'}",
        "--text_encoder=minilm",
    )
    assert result.returncode == 0, result.stderr
    # Sorted keys cats/kitten, cats/tabby, cups/coffee, cups/mug, rocket: the 5th is held out.
    assert "Prepared in" in result.stdout and "captioned_images/minilm" in result.stdout
    assert "  train: 3 examples\n  test: 1 examples\n" in result.stdout
    assert "  skipped unreadable images: 1\n    train: cats/kitten\n" in result.stdout
    train = tfds.data_source("captioned_images/minilm", split="train", data_dir=tmp_path / "tfds")
    names = sorted(train[i]["file_name"].decode() for i in range(len(train)))
    assert names == ["cats/tabby", "cups/coffee", "cups/mug"]
    assert np.asarray(train[0]["embeddings"]).shape == (2, 384)


def test_prepare_prints_missing_files_without_a_traceback(tmp_path):
    result = prepare(
        "--dataset=stackgan_birds",
        f"--data_dir={tmp_path / 'tfds'}",
        f"--manual_dir={tmp_path / 'nowhere'}",
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "error: stackgan_birds: 8 required file(s) missing" in result.stderr
    assert "  CUB_200_2011/bounding_boxes.txt\n" in result.stderr
    assert "  test/char-CNN-RNN-embeddings.pickle\n" in result.stderr


def test_prepare_refuses_a_flag_of_another_dataset(tmp_path):
    result = prepare("--dataset=stackgan_birds", f"--data_dir={tmp_path}", "--images_per_species=2")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "--images_per_species applies to --dataset=synthetic_birds only" in result.stderr
