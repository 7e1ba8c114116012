"""The TFDS builders on miniature copies of the real layouts, built from photos shipped on PyPI.

The release's Python-2 pickles are written by a small Python-2-style pickler, COCO's
`val_captions.t7` by a small Torch7 serializer. Release embeddings encode their position
(`[i, j, 0] = i`, `[i, j, 1] = j`), so the tests can tell which caption each stored row belongs to.
"""

import io
import json
import logging
import pickle
import pickletools
import shutil
import struct

import numpy as np
import pytest
import skimage.data
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image
from sklearn.datasets import load_sample_image

from stackgan_jax.data import builders, preprocess, source, synthetic_birds
from stackgan_jax.data.builders import captioned_images
from stackgan_jax.text import get_encoder

try:
    from numpy._core import multiarray
except ImportError:
    from numpy.core import multiarray

# ---------------------------------------------------------------------------------------------
# Writers of the release's file formats


class Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 with numpy 1.x wrote it: `str` as byte strings, `numpy.core` names."""

    dispatch = dict(pickle._Pickler.dispatch)
    py2_globals = {
        id(multiarray._reconstruct): b"numpy.core.multiarray\n_reconstruct\n",
        id(multiarray.scalar): b"numpy.core.multiarray\nscalar\n",
    }

    def save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None):
        if id(obj) not in self.py2_globals:
            return super().save_global(obj, name)
        self.write(pickle.GLOBAL + self.py2_globals[id(obj)])
        self.memoize(obj)


def py2_dumps(obj):
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def write_t7(path, obj):
    """torch.File:writeObject for tables of strings, numbers and float32 arrays (FloatTensors)."""
    number, string, table, torch_object = 1, 2, 3, 4
    index = iter(range(1, 1 << 30))
    with open(path, "wb") as f:

        def ints(fmt, *values):
            f.write(struct.pack("<" + fmt, *values))

        def text(value):
            data = value.encode()
            ints("i", len(data))
            f.write(data)

        def write(value):
            if isinstance(value, str):
                ints("i", string)
                text(value)
            elif isinstance(value, int | float):
                ints("id", number, value)
            elif isinstance(value, np.ndarray):
                ints("ii", torch_object, next(index))
                text("V 1")
                text("torch.FloatTensor")
                strides = np.cumprod((1, *value.shape[:0:-1]))[::-1]
                ints("i", value.ndim)
                ints(f"{value.ndim}q", *value.shape)
                ints(f"{value.ndim}q", *strides)
                ints("q", 1)  # 1-based storage offset
                ints("ii", torch_object, next(index))
                text("V 1")
                text("torch.FloatStorage")
                ints("q", value.size)
                f.write(value.astype("<f4").tobytes())
            else:
                items = list(enumerate(value, 1) if isinstance(value, list) else value.items())
                ints("iii", table, next(index), len(items))
                for key, item in items:
                    write(key)
                    write(item)

        write(obj)


def position_embeddings(num_images, num_captions, seed=0):
    """float32 [N, E, 1024] whose row [i, j] starts with (i, j)."""
    rows = np.random.default_rng(seed).standard_normal((num_images, num_captions, 1024))
    rows[:, :, 0] = np.arange(num_images)[:, None]
    rows[:, :, 1] = np.arange(num_captions)[None, :]
    return rows.astype(np.float32)


def write_release_split(root, split, keys, class_ids, embeddings):
    (root / split).mkdir(parents=True)
    for name, obj in [
        ("filenames.pickle", keys),
        ("class_info.pickle", class_ids),
        ("char-CNN-RNN-embeddings.pickle", embeddings),
    ]:
        (root / split / name).write_bytes(py2_dumps(obj))


def write_photo(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=92)


def write_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


PHOTOS = {
    "china": lambda: load_sample_image("china.jpg"),
    "flower": lambda: load_sample_image("flower.jpg"),
    "astronaut": skimage.data.astronaut,
    "chelsea": skimage.data.chelsea,
    "coffee": skimage.data.coffee,
    "camera": skimage.data.camera,  # grey
}

# ---------------------------------------------------------------------------------------------
# A miniature CUB release: 3 classes, 2 test images (class 001), 4 train images


CUB = {  # key: (photo, (x, y, w, h), captions)
    "001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111": (
        "china",
        (400.0, 250.0, 200.0, 150.0),  # near the corner: the crop is clipped
        ["a temple roof with green tiles.", "a red building.", "an old roof in the sun."],
    ),
    "001.Black_footed_Albatross/Black_Footed_Albatross_0002_55": (
        "coffee",
        (150.0, 60.0, 300.0, 280.0),
        ["a cup of coffee on a saucer.", "a red cup.", "coffee with a spoon."],
    ),
    "002.Laysan_Albatross/Laysan_Albatross_0002_1027": (
        "flower",
        (180.0, 80.0, 250.0, 240.0),
        ["an orange dahlia.", "a round orange flower.", "a pompon flower with petals."],
    ),
    "002.Laysan_Albatross/Laysan_Albatross_0003_1033": (
        "chelsea",
        (120.0, 20.0, 150.0, 160.0),
        ["a tabby cat.", "a cat looking left.", "an orange cat with whiskers."],
    ),
    "003.Sooty_Albatross/Sooty_Albatross_0001_1071": (
        "astronaut",
        (150.0, 30.0, 220.0, 300.0),
        ["an astronaut in a white suit.", "a woman with a flag.", "a smiling astronaut."],
    ),
    "003.Sooty_Albatross/Sooty_Albatross_0004_1": (
        "camera",
        (200.0, 60.0, 150.0, 250.0),
        ["a man with a camera.", "a grey photo of a man.", "a photographer on a field."],
    ),
}
CUB_SPLITS = {  # unsorted on purpose, so alignment is tested by position
    "train": [
        "003.Sooty_Albatross/Sooty_Albatross_0004_1",
        "002.Laysan_Albatross/Laysan_Albatross_0002_1027",
        "003.Sooty_Albatross/Sooty_Albatross_0001_1071",
        "002.Laysan_Albatross/Laysan_Albatross_0003_1033",
    ],
    "test": [
        "001.Black_footed_Albatross/Black_Footed_Albatross_0002_55",
        "001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111",
    ],
}


def write_cub_layout(root):
    for key, (photo, _, captions) in CUB.items():
        write_photo(root / "CUB_200_2011" / "images" / f"{key}.jpg", PHOTOS[photo]())
        write_lines(root / "text_c10" / f"{key}.txt", captions)
    keys = list(CUB)
    write_lines(
        root / "CUB_200_2011" / "images.txt", [f"{i} {k}.jpg" for i, k in enumerate(keys, 1)]
    )
    write_lines(
        root / "CUB_200_2011" / "bounding_boxes.txt",
        [f"{i} {' '.join(map(str, CUB[k][1]))}" for i, k in enumerate(keys, 1)],
    )
    for seed, (split, split_keys) in enumerate(CUB_SPLITS.items()):
        class_ids = [int(key[:3]) for key in split_keys]
        write_release_split(
            root, split, split_keys, class_ids, position_embeddings(len(split_keys), 3, seed)
        )


def build(builder_cls, data_dir, manual_dir, **kwargs):
    builder = builder_cls(data_dir=str(data_dir), **kwargs)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
    )
    return builder


def examples_by_name(name, split, data_dir):
    data = tfds.data_source(name, split=split, data_dir=str(data_dir))
    return {ex["file_name"].decode(): ex for ex in (data[i] for i in range(len(data)))}


def decoded(path):
    """The photo as a reader independent of the builder's decodes it."""
    return preprocess.to_rgb(np.asarray(Image.open(path)))


@pytest.fixture(scope="module")
def cub_layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("cub")
    write_cub_layout(root)
    return root


@pytest.fixture(scope="module")
def birds_dir(tmp_path_factory, cub_layout):
    data_dir = tmp_path_factory.mktemp("tfds")
    build(builders.StackganBirds, data_dir, cub_layout)
    return data_dir


# ---------------------------------------------------------------------------------------------
# Tests


def test_py2_pickler_writes_python2_opcodes_and_numpy_core_names():
    data = py2_dumps([position_embeddings(2, 3), "002.Laysan_Albatross/x", 7])
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(data)]
    names = {name for name, _ in ops}
    globals_ = {arg for name, arg in ops if name == "GLOBAL"}
    assert "numpy.core.multiarray _reconstruct" in globals_
    assert not any("numpy._core" in g for g in globals_)
    assert {"SHORT_BINSTRING", "BINSTRING"} <= names  # the key, and the array's 24 kB of data
    assert not names & {"BINUNICODE", "SHORT_BINUNICODE", "BINBYTES", "SHORT_BINBYTES"}


def test_birds_splits_follow_the_release_file_lists(birds_dir):
    for split, keys in CUB_SPLITS.items():
        examples = examples_by_name("stackgan_birds", split, birds_dir)
        assert sorted(examples) == sorted(keys)
        for key, example in examples.items():
            assert example["label"] == int(key[:3]) - 1


def test_birds_images_are_cropped_around_their_box_then_resized_bicubically(birds_dir, cub_layout):
    examples = examples_by_name("stackgan_birds", "train", birds_dir) | examples_by_name(
        "stackgan_birds", "test", birds_dir
    )
    for key, (_, box, _) in CUB.items():
        example = examples[key]
        photo = decoded(cub_layout / "CUB_200_2011" / "images" / f"{key}.jpg")
        crop = preprocess.cub_crop(photo, box)
        assert crop.shape[:2] != photo.shape[:2]
        expected304, expected76 = preprocess.load_sizes(crop)
        assert example["image"].shape == (304, 304, 3) and example["image"].dtype == np.uint8
        np.testing.assert_array_equal(example["image"], expected304)
        np.testing.assert_array_equal(example["image_small"], expected76)
        np.testing.assert_array_equal(example["bbox"], np.float32(box))


def test_birds_captions_line_up_with_their_embeddings(birds_dir):
    for split, keys in CUB_SPLITS.items():
        for key, example in examples_by_name("stackgan_birds", split, birds_dir).items():
            assert [c.decode() for c in example["captions"]] == CUB[key][2]
            embeddings = example["embeddings"]
            assert embeddings.shape == (3, 1024) and embeddings.dtype == np.float32
            np.testing.assert_array_equal(embeddings[:, 0], keys.index(key))
            np.testing.assert_array_equal(embeddings[:, 1], np.arange(3))


def test_birds_round_trip_through_load_split(birds_dir):
    test = source.load_split("stackgan_birds", "test", str(birds_dir), text_dim=1024)
    assert test.images.shape == (2, 304, 304, 3) and test.images_small.shape == (2, 76, 76, 3)
    assert test.embeddings.shape == (2, 3, 1024) and test.attributes == {}
    np.testing.assert_array_equal(test.num_captions, [3, 3])
    np.testing.assert_array_equal(test.labels, [0, 0])
    for i, name in enumerate(test.file_names):
        assert test.captions[i] == CUB[name][2]
        np.testing.assert_array_equal(test.embeddings[i, :, 0], CUB_SPLITS["test"].index(name))
    with pytest.raises(source.EmbeddingSizeError, match="1024-d but the model config expects 384"):
        source.load_split("stackgan_birds", "test", str(birds_dir), text_dim=384)


def test_load_split_names_the_prepare_command_for_a_missing_dataset(tmp_path):
    with pytest.raises(source.DatasetNotPreparedError) as error:
        source.load_split("stackgan_flowers", "train", str(tmp_path))
    assert (
        f"python -m stackgan_jax.data.prepare --dataset=stackgan_flowers --data_dir={tmp_path}"
        in (str(error.value))
    )


def test_flowers_are_squashed_whole_and_find_captions_through_class_info(tmp_path):
    root = tmp_path / "flowers"
    photos = {1: ("flower", 77), 2: ("china", 77), 3: ("coffee", 5)}  # image number: photo, class
    for number, (photo, class_id) in photos.items():
        write_photo(root / "jpg" / f"image_{number:05d}.jpg", PHOTOS[photo]())
        write_lines(
            root / "text_c10" / f"class_{class_id:05d}" / f"image_{number:05d}.txt",
            [f"flower {number} caption {j}" for j in range(2)],
        )
    split_numbers = {"train": [2, 1], "test": [3]}
    for split, numbers in split_numbers.items():
        keys = [f"jpg/image_{n:05d}" for n in numbers]
        class_ids = [photos[n][1] for n in numbers]
        write_release_split(root, split, keys, class_ids, position_embeddings(len(keys), 2))
    build(builders.StackganFlowers, tmp_path / "tfds", root)
    for split, numbers in split_numbers.items():
        examples = examples_by_name("stackgan_flowers", split, tmp_path / "tfds")
        assert sorted(examples) == sorted(f"jpg/image_{n:05d}" for n in numbers)
        for n in numbers:
            example = examples[f"jpg/image_{n:05d}"]
            expected304, _ = preprocess.load_sizes(decoded(root / "jpg" / f"image_{n:05d}.jpg"))
            np.testing.assert_array_equal(example["image"], expected304)
            assert example["label"] == photos[n][1] - 1
            np.testing.assert_array_equal(example["bbox"], [-1, -1, -1, -1])
            assert [c.decode() for c in example["captions"]] == [
                f"flower {n} caption {j}" for j in range(2)
            ]
            np.testing.assert_array_equal(example["embeddings"][:, 0], numbers.index(n))


def test_missing_manual_files_are_listed_in_one_error(tmp_path, cub_layout):
    root = tmp_path / "cub"
    shutil.copytree(cub_layout, root)
    (root / "CUB_200_2011" / "bounding_boxes.txt").unlink()
    (root / "test" / "class_info.pickle").unlink()
    image = root / "CUB_200_2011" / "images" / f"{CUB_SPLITS['train'][0]}.jpg"
    image.unlink()
    captions = root / "text_c10" / f"{CUB_SPLITS['train'][1]}.txt"
    captions.unlink()
    with pytest.raises(builders.MissingManualFilesError) as error:
        build(builders.StackganBirds, tmp_path / "tfds", root)
    message = str(error.value)
    assert "4 required file(s) missing" in message
    for path in [
        "CUB_200_2011/bounding_boxes.txt",
        "test/class_info.pickle",
        image.relative_to(root).as_posix(),
        captions.relative_to(root).as_posix(),
    ]:
        assert f"\n  {path}\n" in message
    assert "Expected layout" in message and "text_c10/<class_dir>/<name>.txt" in message


def test_a_missing_manual_directory_lists_every_file(tmp_path):
    with pytest.raises(builders.MissingManualFilesError) as error:
        build(builders.StackganBirds, tmp_path / "tfds", tmp_path / "nowhere")
    assert "8 required file(s) missing" in str(error.value)
    assert len(error.value.missing) == 8


def test_a_truncated_image_is_skipped_counted_and_reported(tmp_path, cub_layout, caplog):
    root = tmp_path / "cub"
    shutil.copytree(cub_layout, root)
    broken = CUB_SPLITS["train"][2]
    path = root / "CUB_200_2011" / "images" / f"{broken}.jpg"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with caplog.at_level(logging.WARNING):
        builder = build(builders.StackganBirds, tmp_path / "tfds", root)
    assert builder.skipped_images == {"train": [broken], "test": []}
    assert builder.info.splits["train"].num_examples == 3
    assert broken not in examples_by_name("stackgan_birds", "train", tmp_path / "tfds")
    assert f"skipped 1 unreadable image(s): {broken}" in caplog.text


@pytest.mark.parametrize(
    "embeddings, message",
    [
        (position_embeddings(3, 3), "holds embeddings for 3 images but test/filenames.pickle"),
        (
            position_embeddings(2, 3)[:, :, :512],
            "holds 512-d embeddings but the release's .* 1024-d",
        ),
        (position_embeddings(2, 4), "has 3 captions but char-CNN-RNN-embeddings.pickle has 4"),
    ],
)
def test_embeddings_that_disagree_with_the_file_list_are_an_error(
    tmp_path, cub_layout, embeddings, message
):
    root = tmp_path / "cub"
    shutil.copytree(cub_layout, root)
    (root / "test" / "char-CNN-RNN-embeddings.pickle").write_bytes(py2_dumps(embeddings))
    with pytest.raises(builders.InconsistentDataError, match=message):
        build(builders.StackganBirds, tmp_path / "tfds", root)


def test_coco_aligns_annotation_captions_and_t7_captions_with_the_release(tmp_path):
    root = tmp_path / "coco"
    train = {"COCO_train2014_000000000009": "flower", "COCO_train2014_000000000025": "chelsea"}
    test = {"COCO_val2014_000000000042": "coffee", "COCO_val2014_000000000073": "astronaut"}
    for key, photo in (train | test).items():
        write_photo(root / "images" / f"{key}.jpg", PHOTOS[photo]())
    captions = {key: [f"{key} caption {j}" for j in range(3)] for key in train}
    annotations = {
        "images": [{"id": i, "file_name": f"{key}.jpg"} for i, key in enumerate(train)],
        "annotations": [
            {"image_id": i, "caption": f" {caption} "}
            for i, key in enumerate(train)
            for caption in captions[key]
        ],
    }
    (root / "annotations").mkdir()
    (root / "annotations" / "captions_train2014.json").write_text(json.dumps(annotations))
    train_keys = list(train)[::-1]
    (root / "train").mkdir()
    (root / "train" / "filenames.pickle").write_bytes(py2_dumps(train_keys))
    (root / "train" / "char-CNN-RNN-embeddings.pickle").write_bytes(
        py2_dumps(position_embeddings(2, 2))
    )
    (root / "test").mkdir()
    (root / "test" / "filenames.pickle").write_bytes(py2_dumps(list(test)))
    vectors = position_embeddings(4, 1)[:, 0]
    raw = [f"{key} test caption {j}" for key in test for j in range(2)]
    write_t7(root / "test" / "val_captions.t7", {"raw_txt": raw, "fea_txt": list(vectors[:, None])})
    build(builders.StackganCoco, tmp_path / "tfds", root)

    for key, example in examples_by_name("stackgan_coco", "train", tmp_path / "tfds").items():
        assert [c.decode() for c in example["captions"]] == captions[key][:2]
        np.testing.assert_array_equal(example["embeddings"][:, 0], train_keys.index(key))
        assert example["label"] == -1
        expected304, _ = preprocess.load_sizes(decoded(root / "images" / f"{key}.jpg"))
        np.testing.assert_array_equal(example["image"], expected304)
    tests = examples_by_name("stackgan_coco", "test", tmp_path / "tfds")
    assert sorted(tests) == sorted(test)
    for i, key in enumerate(test):
        assert [c.decode() for c in tests[key]["captions"]] == raw[2 * i : 2 * i + 2]
        np.testing.assert_array_equal(tests[key]["embeddings"], vectors[2 * i : 2 * i + 2])


def test_synthetic_birds_round_trip_with_attributes_and_same_seed_gives_same_arrays(tmp_path):
    config = builders.synthetic_config(images_per_species=1, species_per_split=2)
    assert config.name == "1_per_species_2_species"
    loaded = []
    for run in ("a", "b"):
        build(builders.SyntheticBirds, tmp_path / run, tmp_path / "unused", config=config)
        loaded.append(
            source.load_split(f"synthetic_birds/{config.name}", "test", str(tmp_path / run), 384)
        )
    first, second = loaded
    for field in ("images", "images_small", "embeddings", "num_captions", "labels"):
        np.testing.assert_array_equal(getattr(first, field), getattr(second, field))
    assert first.captions == second.captions and first.file_names == second.file_names

    test_species = synthetic_birds.split_species(synthetic_birds.species_table())["test"][:2]
    assert sorted(first.labels) == sorted(s.id for s in test_species)
    assert sorted(first.attributes) == sorted(synthetic_birds.ATTRIBUTES)
    for i, species_id in enumerate(first.labels):
        rendered = synthetic_birds.render_example(synthetic_birds.species_table()[species_id], 0)
        assert first.file_names[i] == rendered.key and first.captions[i] == rendered.captions
        assert {k: int(v[i]) for k, v in first.attributes.items()} == rendered.attributes
        expected304, _ = preprocess.load_sizes(preprocess.cub_crop(rendered.image, rendered.bbox))
        np.testing.assert_array_equal(first.images[i], expected304)
    assert first.embeddings.shape == (2, 10, 384)


@pytest.fixture(scope="module")
def captioned_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("mine")
    photos = {
        "astronaut": ("astronaut.jpg", ["a woman in a space suit."]),
        "cats/kitten": ("kitten.png", ["a small cat.", "a kitten in the grass."]),
        "cats/tabby": ("tabby.jpg", ["a tabby cat with green eyes."]),
        "cups/coffee": ("coffee.jpg", ["a red cup of coffee.", "coffee on a saucer."]),
        "cups/espresso": ("espresso.png", ["an espresso cup."]),
    }
    sources = {"astronaut": "astronaut", "cats": "chelsea", "cups": "coffee"}
    for key, (file, captions) in photos.items():
        folder = key.rsplit("/", 1)[0] if "/" in key else ""
        write_photo(root / "images" / folder / file, PHOTOS[sources[key.split("/")[0]]]())
        write_lines(root / "text" / f"{key}.txt", captions)
    write_lines(root / "bounding_boxes.txt", ["cats/tabby 120 20 150 160"])
    return root, {key: captions for key, (_, captions) in photos.items()}


def test_captioned_images_embeds_captions_with_minilm_and_splits_80_20(tmp_path, captioned_folder):
    root, captions = captioned_folder
    build(builders.CaptionedImages, tmp_path, root, config="minilm")
    train = source.load_split("captioned_images/minilm", "train", str(tmp_path), text_dim=384)
    test = source.load_split("captioned_images/minilm", "test", str(tmp_path), text_dim=384)
    # No split lists and an image outside any class folder: every 5th key in sorted order.
    assert test.file_names == ["cups/espresso"]
    assert sorted(train.file_names) == ["astronaut", "cats/kitten", "cats/tabby", "cups/coffee"]
    labels = dict(zip(train.file_names, train.labels, strict=True))
    assert labels == {"astronaut": -1, "cats/kitten": 0, "cats/tabby": 0, "cups/coffee": 1}

    encoder = get_encoder("minilm")
    assert train.embeddings.shape == (4, 2, 384)
    for i, key in enumerate(train.file_names):
        assert train.captions[i] == captions[key]
        assert train.num_captions[i] == len(captions[key])
        expected = encoder.encode(captions[key])
        # One-caption images repeat their embedding up to the split's 2 rows.
        np.testing.assert_allclose(train.embeddings[i], expected[[0, 1 % len(expected)]], atol=1e-5)

    tabby = train.file_names.index("cats/tabby")
    crop = preprocess.cub_crop(decoded(root / "images" / "cats" / "tabby.jpg"), (120, 20, 150, 160))
    np.testing.assert_array_equal(train.images[tabby], preprocess.load_sizes(crop)[0])
    kitten = train.file_names.index("cats/kitten")
    whole = decoded(root / "images" / "cats" / "kitten.png")
    np.testing.assert_array_equal(train.images[kitten], preprocess.load_sizes(whole)[0])


def test_captioned_images_lists_missing_captions_and_listed_images(tmp_path, captioned_folder):
    root = tmp_path / "mine"
    shutil.copytree(captioned_folder[0], root)
    (root / "text" / "cats" / "tabby.txt").unlink()
    write_lines(root / "train.txt", ["cats/tabby.jpg", "cups/coffee", "cats/lion"])
    write_lines(root / "test.txt", ["cups/espresso"])
    with pytest.raises(builders.MissingManualFilesError) as error:
        captioned_images.captioned_candidates("captioned_images", epath.Path(root), "layout")
    assert error.value.missing == ["images/cats/lion.jpg|.jpeg|.png", "text/cats/tabby.txt"]


def test_captioned_images_split_lists_decide_the_splits(tmp_path, captioned_folder):
    root = tmp_path / "mine"
    shutil.copytree(captioned_folder[0], root)
    write_lines(root / "train.txt", ["cats/tabby.jpg", "cups/coffee"])
    write_lines(root / "test.txt", ["astronaut"])
    splits = captioned_images.captioned_candidates("captioned_images", epath.Path(root), "layout")
    assert {s: [c.key for c in cs] for s, cs in splits.items()} == {
        "train": ["cats/tabby", "cups/coffee"],
        "test": ["astronaut"],
    }
    assert splits["train"][0].bbox == (120.0, 20.0, 150.0, 160.0)
    assert splits["train"][1].bbox is None


def test_default_split_holds_out_every_fifth_class_when_all_images_have_one():
    keys = [f"class{c}/image{i}" for c in range(6) for i in range(2)]
    split = captioned_images.default_split(keys)
    assert split["test"] == ["class4/image0", "class4/image1"]
    assert len(split["train"]) == 10


def test_captioned_images_reads_key_and_cub_style_boxes(tmp_path):
    write_lines(tmp_path / "bounding_boxes.txt", ["cats/tabby 1 2 3.5 4", "dog 5 6 7 8"])
    assert captioned_images.read_boxes(epath.Path(tmp_path)) == {
        "cats/tabby": (1.0, 2.0, 3.5, 4.0),
        "dog": (5.0, 6.0, 7.0, 8.0),
    }
    write_lines(tmp_path / "images.txt", ["1 cats/tabby.jpg", "2 dog.png"])
    write_lines(tmp_path / "bounding_boxes.txt", ["2 5 6 7 8", "1 1 2 3.5 4"])
    assert captioned_images.read_boxes(epath.Path(tmp_path)) == {
        "cats/tabby": (1.0, 2.0, 3.5, 4.0),
        "dog": (5.0, 6.0, 7.0, 8.0),
    }
