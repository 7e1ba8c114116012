"""The procedural bird dataset: species, split, determinism, pictures, boxes and captions."""

import collections
import dataclasses
import itertools
import string

import numpy as np
import pytest

from stackgan_jax.data import synthetic_birds as sb

SPECIES_ATTRIBUTES = ("body_colour", "wing_colour", "crown_colour", "beak_length", "beak_colour")


def _template_fields(template):
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    return {name.removeprefix("a_") for name in fields}


def test_caption_templates_name_two_to_four_attributes():
    assert len(sb.CAPTION_TEMPLATES) >= 12
    assert len(set(sb.CAPTION_TEMPLATES)) == len(sb.CAPTION_TEMPLATES)
    for template in sb.CAPTION_TEMPLATES:
        fields = _template_fields(template)
        assert 2 <= len(fields) <= 4, template
        assert fields <= {"body", "wing", "crown", "beak", "length", "size"}, template


def test_vocabularies():
    assert len(sb.COLOURS) == len(set(sb.COLOURS)) == 10
    assert set(sb.ATTRIBUTES) == {*SPECIES_ATTRIBUTES, "size", "facing", "background"}
    assert len(sb.BACKGROUNDS) >= 4 and len(sb.SIZES) == 3 and len(sb.FACING) == 2
    assert set(sb.BEAK_COLOURS) < set(range(len(sb.COLOURS)))
    assert sb.DEFAULT_IMAGES_PER_SPECIES * sb.NUM_SPECIES == 2000


def test_species_table_is_a_pure_function_of_its_seed():
    table = sb.species_table()
    assert [s.id for s in table] == list(range(sb.NUM_SPECIES))
    combos = {tuple(getattr(s, a) for a in SPECIES_ATTRIBUTES) for s in table}
    assert len(combos) == sb.NUM_SPECIES
    for s in table:
        assert s.wing_colour != s.body_colour and s.crown_colour != s.body_colour
        assert s.beak_colour in sb.BEAK_COLOURS and s.beak_colour != s.body_colour
    assert collections.Counter(s.body_colour for s in table) == {c: 20 for c in range(10)}
    assert sb.species_table.__wrapped__(0) == table
    assert sb.species_table(1) != table
    assert table[16].class_dir.startswith("017.") and table[16].name in table[16].class_dir


def test_random_species_vary_attributes_independently_of_the_table():
    drawn = sb.random_species(2000, seed=3)
    assert drawn == sb.random_species(2000, seed=3) != sb.random_species(2000, seed=4)
    assert [s.id for s in drawn] == list(range(200, 2200))
    for s in drawn:
        assert s.wing_colour != s.body_colour and s.crown_colour != s.body_colour
        assert s.beak_colour in sb.BEAK_COLOURS and s.beak_colour != s.body_colour
    # In the table each body colour comes with few crowns; here with all allowed ones.
    pairs = collections.Counter((s.body_colour, s.crown_colour) for s in drawn)
    assert len(pairs) == 10 * 9 and min(pairs.values()) >= 5
    assert len({dataclasses.astuple(s)[1:] for s in drawn}) > 1500


def test_split_is_class_disjoint_and_covers_every_value():
    table = sb.species_table()
    split = sb.split_species(table)
    train, test = split["train"], split["test"]
    assert len(train) == 150 and len(test) == sb.NUM_TEST_SPECIES == 50
    assert {s.id for s in train}.isdisjoint(s.id for s in test)
    assert sorted(s.id for s in train + test) == list(range(200))
    assert collections.Counter(s.body_colour for s in test) == {c: 5 for c in range(10)}
    # Unseen species must be recognisable from parts seen in training.
    for attribute in SPECIES_ATTRIBUTES:
        train_counts = collections.Counter(getattr(s, attribute) for s in train)
        assert {getattr(s, attribute) for s in test} <= set(train_counts), attribute
        assert min(train_counts.values()) >= 5, attribute
    assert sb.split_species(table) == split


def test_generation_is_deterministic_and_order_free():
    def first_examples():
        return list(itertools.islice(sb.split_examples("test", images_per_species=3, seed=5), 8))

    examples = first_examples()
    for a, b in zip(examples, first_examples(), strict=True):
        assert a.image.tobytes() == b.image.tobytes()
        assert (a.key, a.bbox, a.attributes, a.captions) == (
            b.key,
            b.bbox,
            b.attributes,
            b.captions,
        )
    assert len({e.key for e in examples}) == len({e.image.tobytes() for e in examples}) == 8

    # Any example can be rendered alone: the 8th is the third species' second image.
    last = examples[-1]
    species = sb.split_species(sb.species_table())["test"][2]
    alone = sb.render_example(species, 1, seed=5)
    assert alone.image.tobytes() == last.image.tobytes() and alone.key == last.key
    other_seed = sb.render_example(species, 1, seed=6)
    assert other_seed.image.tobytes() != last.image.tobytes()


@pytest.fixture(scope="module")
def train_examples():
    return list(itertools.islice(sb.split_examples("train", images_per_species=1, seed=0), 60))


def test_examples_match_their_species_and_captions_match_their_attributes(train_examples):
    seen = collections.defaultdict(set)
    for example in train_examples:
        species = sb.species_table()[example.species_id]
        assert example.image.shape == (304, 304, 3) and example.image.dtype == np.uint8
        assert example.key.startswith(species.class_dir + "/")
        for attribute in SPECIES_ATTRIBUTES:
            assert example.attributes[attribute] == getattr(species, attribute)
        for attribute, value in example.attributes.items():
            assert 0 <= value < len(sb.ATTRIBUTES[attribute])
            seen[attribute].add(value)
        _check_captions(example)
    # Scenes, sizes and directions all occur.
    for attribute in ("size", "facing", "background"):
        assert seen[attribute] == set(range(len(sb.ATTRIBUTES[attribute]))), attribute


def _check_captions(example):
    attributes = example.attributes
    colours = {
        sb.COLOURS[attributes[a]]
        for a in ("body_colour", "wing_colour", "crown_colour", "beak_colour")
    }
    assert len(example.captions) == sb.CAPTIONS_PER_IMAGE == len(set(example.captions))
    for caption in example.captions:
        words = set(caption.replace(",", " ").replace(".", " ").replace("-", " ").split())
        assert words & set(sb.COLOURS) <= colours, caption
        assert words & set(sb.BEAK_LENGTHS) <= {sb.BEAK_LENGTHS[attributes["beak_length"]]}
        assert words & set(sb.SIZES) <= {sb.SIZES[attributes["size"]]}, caption
        assert "an " not in caption or "an orange" in caption, caption
        assert "a orange" not in caption, caption


def _mask(image, low, high):
    return np.all((image >= low) & (image <= high), axis=2)


@pytest.fixture(scope="module")
def red_birds_on_blue_scenes():
    """Red-bodied, yellow-beaked birds on sky or water, where no scene pixel is red or yellow."""
    colour = sb.COLOURS.index
    species = next(
        s
        for s in sb.species_table()
        if s.body_colour == colour("red")
        and s.beak_colour == colour("yellow")
        and colour("red") not in (s.wing_colour, s.crown_colour)
    )
    blue_scenes = {sb.BACKGROUNDS.index("sky"), sb.BACKGROUNDS.index("water")}
    examples = (sb.render_example(species, index, seed=0) for index in range(100))
    chosen = list(
        itertools.islice((e for e in examples if e.attributes["background"] in blue_scenes), 8)
    )
    assert len(chosen) == 8
    return chosen


def test_bbox_encloses_the_bird_tightly(red_birds_on_blue_scenes):
    for example in red_birds_on_blue_scenes:
        x, y, w, h = example.bbox
        assert min(x, y) >= 0 and x + w <= 304 and y + h <= 304
        red = _mask(example.image, (140, 0, 0), (255, 90, 90))
        rows, cols = np.nonzero(red)
        assert len(rows) > 200
        assert x <= cols.min() and cols.max() < x + w and y <= rows.min() and rows.max() < y + h
        # The body is about half the bird's length and two thirds of its height.
        assert cols.max() - cols.min() > 0.35 * w and rows.max() - rows.min() > 0.45 * h


def test_bird_faces_the_recorded_direction(red_birds_on_blue_scenes):
    assert {e.attributes["facing"] for e in red_birds_on_blue_scenes} == {0, 1}
    for example in red_birds_on_blue_scenes:
        red = _mask(example.image, (140, 0, 0), (255, 90, 90))
        yellow = _mask(example.image, (190, 170, 0), (255, 255, 110))
        beak_side = np.nonzero(yellow)[1].mean() - np.nonzero(red)[1].mean()
        assert (beak_side > 0) == (sb.FACING[example.attributes["facing"]] == "right")


def test_bird_size_follows_the_size_attribute(train_examples):
    areas = collections.defaultdict(list)
    for example in train_examples:
        _, _, w, h = example.bbox
        areas[example.attributes["size"]].append(w * h)
    small, medium, large = (np.median(areas[size]) for size in range(3))
    assert small < medium < large


def test_unknown_split_is_an_error():
    with pytest.raises(ValueError, match="validation"):
        next(sb.split_examples("validation"))


def test_caption_attributes_reads_back_every_template_and_value():
    rng = np.random.default_rng(0)
    for _ in range(300):
        attributes = {
            name: int(rng.integers(len(values))) for name, values in sb.ATTRIBUTES.items()
        }
        for caption in sb.make_captions(attributes, rng):
            named = sb.caption_attributes(caption)
            assert 2 <= len(named) <= 4
            assert named == {name: attributes[name] for name in named}
    with pytest.raises(ValueError, match="not a synthetic_birds caption"):
        sb.caption_attributes("a bird.")
