"""A procedural bird dataset: the project's offline stand-in for CUB-200-2011.

Each of 200 species is a fixed combination of body, wing (and tail), crown and beak colour and beak
length; 150 species are for training and 50 unseen ones for testing, as in CUB's class-disjoint
split. An example is a 304 x 304 picture of one bird in a scene, its bounding box, its attribute
values and 10 captions that name 2 to 4 of them.

Everything is a pure function of its seeds: an example's random numbers come from
`np.random.default_rng([seed, species id, index])`, so any example can be rendered alone, in any
order or process, and the same seed always gives the same bytes.

The colours are chosen to stay apart after the bird is cropped and shrunk to 64 pixels, so that an
attribute classifier can read the attributes of unseen species from Stage-I sized images. Such a
classifier should be trained on `random_species` birds, whose attributes vary independently, not
on the training species, whose fixed combinations let it learn species instead of attributes.
"""

import dataclasses
import functools
import itertools
import re
from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 304
NUM_SPECIES = 200
NUM_TEST_SPECIES = 50
CAPTIONS_PER_IMAGE = 10
# 10 images x 200 species = 2,000 images (1,500 train / 500 test): builds in about 2 minutes
# on 2 CPU cores, most of it MiniLM embedding the 20,000 captions.
DEFAULT_IMAGES_PER_SPECIES = 10
SPLITS = ("train", "test")

COLOURS = (
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "purple",
    "brown",
    "black",
    "white",
    "grey",
)
BEAK_LENGTHS = ("short", "long")
SIZES = ("small", "medium", "large")
FACING = ("left", "right")
BACKGROUNDS = ("sky", "grass", "water", "sunset", "forest")
# Beak colours are indices into COLOURS; a beak is small, so only colours that stay far apart
# in a few pixels are used.
BEAK_COLOURS = tuple(COLOURS.index(c) for c in ("black", "yellow", "orange", "red", "grey"))

# The vocabulary that each attribute value of `Example.attributes` indexes.
ATTRIBUTES = {
    "body_colour": COLOURS,
    "wing_colour": COLOURS,
    "crown_colour": COLOURS,
    "beak_length": BEAK_LENGTHS,
    "beak_colour": COLOURS,
    "size": SIZES,
    "facing": FACING,
    "background": BACKGROUNDS,
}

_COLOUR_RGB = np.array(
    [
        (210, 30, 35),  # red
        (250, 135, 20),  # orange
        (250, 220, 40),  # yellow
        (40, 165, 60),  # green
        (35, 85, 215),  # blue
        (135, 50, 175),  # purple
        (125, 78, 40),  # brown
        (28, 28, 30),  # black
        (245, 245, 242),  # white
        (140, 140, 140),  # grey
    ],
    np.float32,
)
_LEG_RGB = np.array((75, 65, 58), np.float32)
_SIZE_WORDS = ("small", "medium-sized", "large")
# Pixels per bird unit (the body's half-length is about 1 unit) in the 304 image.
_SIZE_SCALES = (30.0, 40.0, 50.0)
_SUPERSAMPLE = 3  # the bird is drawn at 3x and box-filtered down, for anti-aliased edges
_BEAK_UNITS = (0.5, 1.25)  # beak length beyond the head for short and long beaks

CAPTION_TEMPLATES = (
    "this bird has {a_body} body and {wing} wings.",
    "{a_size} bird with {a_crown} crown and {a_length} {beak} beak.",
    "this {body} bird has {wing} wings and {a_length} beak.",
    "{a_body} bird with {wing} wings, {a_crown} crown and {a_beak} bill.",
    "the bird is mostly {body} and has {a_crown} cap on its head.",
    "this is {a_size} {body} bird with {a_length} {beak} bill.",
    "a bird with {a_body} breast and belly, {wing} wings and {a_crown} crown.",
    "this {size} bird has {wing} wings and {a_body} body.",
    "{wing} wings and {a_body} body mark this {size} bird.",
    "the {body} bird has {a_length} {beak} beak.",
    "{a_size} bird whose crown is {crown} and whose body is {body}.",
    "this bird is {body} with {wing} wings and {crown} feathers on top of its head.",
    "{a_length}-beaked bird with {a_crown} crown and {wing} wings.",
    "this bird has {a_beak} beak that is {length}, and its body is {body}.",
    "the wings of this bird are {wing} and its crown is {crown}.",
    "{a_size} {body} bird with {wing} wings.",
    "a bird with {a_length}, {beak} beak and {a_body} body.",
    "its crown is {crown}, its wings are {wing} and its bill is {length}.",
)


@dataclasses.dataclass(frozen=True)
class Species:
    """One synthetic species: the attributes every one of its birds shares.

    Attributes:
        id: 0-based class id.
        body_colour: index into COLOURS.
        wing_colour: index into COLOURS (also the tail's colour); never the body colour.
        crown_colour: index into COLOURS; never the body colour.
        beak_length: index into BEAK_LENGTHS.
        beak_colour: index into COLOURS, one of BEAK_COLOURS; never the body colour.
    """

    id: int
    body_colour: int
    wing_colour: int
    crown_colour: int
    beak_length: int
    beak_colour: int

    @property
    def name(self) -> str:
        """A CUB-style name, e.g. 'Red_Blue_Winged_Yellow_Crowned_Long_Black_Billed'."""
        words = (
            COLOURS[self.body_colour],
            COLOURS[self.wing_colour],
            "winged",
            COLOURS[self.crown_colour],
            "crowned",
            BEAK_LENGTHS[self.beak_length],
            COLOURS[self.beak_colour],
            "billed",
        )
        return "_".join(word.capitalize() for word in words)

    @property
    def class_dir(self) -> str:
        """The CUB-style class directory, e.g. '017.Red_Blue_Winged_...'."""
        return f"{self.id + 1:03d}.{self.name}"


@dataclasses.dataclass(frozen=True, eq=False)
class Example:
    """One rendered bird.

    Attributes:
        key: CUB-style relative path without extension, '<class_dir>/<name>_<index:04d>'.
        species_id: the species' class id.
        image: uint8 array of IMAGE_SIZE x IMAGE_SIZE x 3.
        bbox: (x, y, width, height) of the bird's pixels in `image`, like CUB's boxes.
        attributes: {attribute name: index into ATTRIBUTES[name]}.
        captions: CAPTIONS_PER_IMAGE lower-case sentences about the bird.
    """

    key: str
    species_id: int
    image: np.ndarray
    bbox: tuple[int, int, int, int]
    attributes: dict[str, int]
    captions: list[str]


@functools.cache
def species_table(seed: int = 0) -> tuple[Species, ...]:
    """Returns the 200 species, a pure function of `seed` (cached: every example needs it).

    Body colours cycle through COLOURS (20 species each); the other attributes are drawn at
    random, with wing, crown and beak colours different from the body's so that each part shows.

    Args:
        seed: seed of the table.

    Returns:
        NUM_SPECIES distinct species, ordered by id.
    """
    rng = np.random.default_rng([seed, NUM_SPECIES])
    table: dict[tuple[int, ...], Species] = {}
    while len(table) < NUM_SPECIES:
        species = _sample_species(rng, len(table), body=len(table) % len(COLOURS))
        table.setdefault(dataclasses.astuple(species)[1:], species)
    return tuple(table.values())


def random_species(count: int, seed: int = 0) -> list[Species]:
    """Draws attribute combinations independently of the species table.

    Within a species every attribute comes with the same others, so a classifier trained on the
    150 training species can learn species instead of attributes and then fail on unseen ones.
    Birds of these combinations (one `render_example` each) vary every attribute independently,
    which is what an attribute classifier should be trained on.

    Args:
        count: number of combinations.
        seed: seed of the draw.

    Returns:
        Species with ids NUM_SPECIES, NUM_SPECIES + 1, ...; they are not classes, and a
        combination may repeat one in the table.
    """
    rng = np.random.default_rng([seed, count, NUM_SPECIES])
    return [
        _sample_species(rng, NUM_SPECIES + i, body=int(rng.integers(len(COLOURS))))
        for i in range(count)
    ]


def _sample_species(rng: np.random.Generator, species_id: int, body: int) -> Species:
    others = [c for c in range(len(COLOURS)) if c != body]
    wing, crown = rng.choice(others, size=2)
    return Species(
        id=species_id,
        body_colour=body,
        wing_colour=int(wing),
        crown_colour=int(crown),
        beak_length=int(rng.integers(len(BEAK_LENGTHS))),
        beak_colour=int(rng.choice([c for c in BEAK_COLOURS if c != body])),
    )


def split_species(table: Sequence[Species], seed: int = 0) -> dict[str, list[Species]]:
    """Splits species class-disjointly into train and test, stratified by body colour.

    Args:
        table: the species, e.g. `species_table()`.
        seed: seed of the split.

    Returns:
        {'train': ..., 'test': ...}, each ordered by id; 'test' holds NUM_TEST_SPECIES species,
        the same number of each body colour.
    """
    rng = np.random.default_rng([seed, NUM_TEST_SPECIES])
    per_colour = NUM_TEST_SPECIES // len(COLOURS)
    test_ids = set()
    for colour in range(len(COLOURS)):
        ids = [s.id for s in table if s.body_colour == colour]
        test_ids.update(rng.choice(ids, size=per_colour, replace=False).tolist())
    return {
        "train": [s for s in table if s.id not in test_ids],
        "test": [s for s in table if s.id in test_ids],
    }


def split_examples(
    split: str,
    images_per_species: int = DEFAULT_IMAGES_PER_SPECIES,
    seed: int = 0,
    table_seed: int = 0,
) -> Iterator[Example]:
    """Yields a split's examples, species by species.

    Args:
        split: 'train' or 'test'.
        images_per_species: examples per species.
        seed: seed of the images (pose, scene, colour jitter, captions).
        table_seed: seed of the species table and of the split.

    Yields:
        `render_example(species, index, seed)` for each species of the split and each index.

    Raises:
        ValueError: unknown split.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    species = split_species(species_table(table_seed), table_seed)[split]
    for s, index in itertools.product(species, range(images_per_species)):
        yield render_example(s, index, seed)


def render_example(species: Species, index: int, seed: int = 0) -> Example:
    """Renders example `index` of a species; the result depends only on the arguments.

    Args:
        species: the bird's species.
        index: the example's number within its species.
        seed: dataset seed.

    Returns:
        The example.
    """
    rng = np.random.default_rng([seed, species.id, index])
    size = int(rng.integers(len(SIZES)))
    facing = int(rng.integers(len(FACING)))
    background = int(rng.integers(len(BACKGROUNDS)))
    scene = _SCENES[background](rng)
    bird, alpha = _draw_bird(species, size, facing, rng)
    grain = 3 * rng.standard_normal((IMAGE_SIZE, IMAGE_SIZE, 1), dtype=np.float32)
    image = scene * (1 - alpha) + bird + grain
    rows = np.flatnonzero(alpha.any(axis=(1, 2)))
    cols = np.flatnonzero(alpha.any(axis=(0, 2)))
    attributes = {
        "body_colour": species.body_colour,
        "wing_colour": species.wing_colour,
        "crown_colour": species.crown_colour,
        "beak_length": species.beak_length,
        "beak_colour": species.beak_colour,
        "size": size,
        "facing": facing,
        "background": background,
    }
    return Example(
        key=f"{species.class_dir}/{species.name}_{index:04d}",
        species_id=species.id,
        image=np.clip(np.rint(image), 0, 255).astype(np.uint8),
        bbox=(
            int(cols[0]),
            int(rows[0]),
            int(cols[-1] - cols[0] + 1),
            int(rows[-1] - rows[0] + 1),
        ),
        attributes=attributes,
        captions=make_captions(attributes, rng),
    )


def make_captions(attributes: dict[str, int], rng: np.random.Generator) -> list[str]:
    """Writes CAPTIONS_PER_IMAGE captions from distinct templates.

    Args:
        attributes: an example's attributes, as in `Example.attributes`.
        rng: source of the template choice.

    Returns:
        The captions.
    """
    words = {
        "body": COLOURS[attributes["body_colour"]],
        "wing": COLOURS[attributes["wing_colour"]],
        "crown": COLOURS[attributes["crown_colour"]],
        "beak": COLOURS[attributes["beak_colour"]],
        "length": BEAK_LENGTHS[attributes["beak_length"]],
        "size": _SIZE_WORDS[attributes["size"]],
    }
    words |= {f"a_{field}": _with_article(word) for field, word in words.items()}
    chosen = rng.choice(len(CAPTION_TEMPLATES), size=CAPTIONS_PER_IMAGE, replace=False)
    return [CAPTION_TEMPLATES[i].format(**words) for i in chosen]


def _with_article(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


# Caption placeholders -> (attribute, the words its values are written with).
_PLACEHOLDERS = {
    "body": ("body_colour", COLOURS),
    "wing": ("wing_colour", COLOURS),
    "crown": ("crown_colour", COLOURS),
    "beak": ("beak_colour", COLOURS),
    "length": ("beak_length", BEAK_LENGTHS),
    "size": ("size", _SIZE_WORDS),
}


def _template_pattern(template: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """A regex that reads a template's placeholder words back, and the placeholders' names."""
    parts = re.split(r"\{(\w+)\}", template)
    names = tuple(parts[1::2])
    pieces = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            pieces.append(re.escape(part))
        else:
            words = _PLACEHOLDERS[part.removeprefix("a_")][1]
            choice = "|".join(map(re.escape, words))
            pieces.append(f"(?:an? )?({choice})" if part.startswith("a_") else f"({choice})")
    return re.compile("".join(pieces)), names


_TEMPLATE_PATTERNS = tuple(_template_pattern(t) for t in CAPTION_TEMPLATES)


def caption_attributes(caption: str) -> dict[str, int]:
    """The attribute values a caption of `make_captions` names, read back from its words.

    Args:
        caption: a caption written from one of CAPTION_TEMPLATES.

    Returns:
        {attribute name: index into ATTRIBUTES[name]} for the 2-4 attributes it mentions
        (sizes are written 'small', 'medium-sized', 'large' and read back as SIZES indices).

    Raises:
        ValueError: the caption fits no template.
    """
    for pattern, names in _TEMPLATE_PATTERNS:
        match = pattern.fullmatch(caption)
        if match:
            return {
                _PLACEHOLDERS[name.removeprefix("a_")][0]: _PLACEHOLDERS[name.removeprefix("a_")][
                    1
                ].index(word)
                for name, word in zip(names, match.groups(), strict=True)
            }
    raise ValueError(f"not a synthetic_birds caption: {caption!r}")


# ----------------------------------------------------------------------------------------------
# The bird. Shapes are polygons in bird units, facing right with y up; `_draw_bird` maps them to
# the supersampled canvas.


def _ellipse(cx: float, cy: float, a: float, b: float, degrees: float = 0.0) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    return _rotate(np.stack([a * np.cos(t), b * np.sin(t)], axis=1), degrees) + (cx, cy)


def _arc(cx: float, cy: float, r: float, start: float, stop: float) -> np.ndarray:
    t = np.radians(np.linspace(start, stop, 24))
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _rotate(points: np.ndarray, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return points @ np.array([[c, s], [-s, c]])


_HEAD = (1.0, 0.65, 0.56)  # centre x, centre y, radius


def _bird_shapes(species: Species) -> list[tuple[str, np.ndarray]]:
    """Returns (part, polygon) pairs in drawing order; part names a colour role."""
    hx, hy, hr = _HEAD
    beak = _BEAK_UNITS[species.beak_length]
    crest = [(hx + 1.45 * hr * np.cos(np.radians(150)), hy + 1.45 * hr * np.sin(np.radians(150)))]
    # A wing tapering to a point at the back reads as a wing, not as a second body.
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    wing = np.stack([0.9 * np.cos(t), 0.45 * np.sin(t) * (0.55 + 0.45 * (1 + np.cos(t)) / 2)], 1)
    return [
        ("wing", np.array([(-0.7, 0.25), (-1.85, 0.1), (-1.7, -0.12), (-1.9, -0.4), (-0.7, -0.2)])),
        ("body", _ellipse(0.0, 0.0, 1.08, 0.7, 14)),
        ("wing", _rotate(wing, 10) + (-0.22, 0.12)),
        ("body", _ellipse(hx, hy, hr, hr)),
        # A little more than the upper half of the head, with a small crest at the back.
        (
            "crown",
            np.concatenate([_arc(hx, hy, hr * 1.04, -10, 125), crest, _arc(hx, hy, hr, 170, 190)]),
        ),
        (
            "beak",
            np.array(
                [
                    (hx + 0.44, hy + 0.22),
                    (hx + 0.5 + beak, hy - 0.04 - 0.08 * beak),
                    (hx + 0.44, hy - 0.26),
                ]
            ),
        ),
        ("eye_ring", _ellipse(hx + 0.22, hy - 0.2, 0.12, 0.12)),
        ("eye", _ellipse(hx + 0.24, hy - 0.2, 0.075, 0.075)),
    ]


# Each leg is a hip, foot and toe point, drawn as a thick line behind the body.
_LEGS = (((0.15, -0.55), (0.25, -1.08), (0.48, -1.1)), ((-0.2, -0.55), (-0.12, -1.08), (0.1, -1.1)))


def _draw_bird(
    species: Species, size: int, facing: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draws a bird with a random pose.

    Returns:
        (rgb, alpha): float32 arrays of IMAGE_SIZE x IMAGE_SIZE x 3 and x 1, rgb premultiplied by
        alpha (in [0, 1]) so that the bird composites as scene * (1 - alpha) + rgb.
    """
    light = rng.uniform(0.9, 1.08)
    colours = {
        "body": species.body_colour,
        "wing": species.wing_colour,
        "crown": species.crown_colour,
        "beak": species.beak_colour,
    }
    rgb = {part: _jitter(_COLOUR_RGB[c], light, rng) for part, c in colours.items()}
    rgb |= {
        "eye_ring": np.array([250.0, 250.0, 245.0]),
        "eye": np.array([10.0, 10.0, 10.0]),
        "leg": _LEG_RGB,
    }

    scale = _SIZE_SCALES[size] * rng.uniform(0.94, 1.06) * _SUPERSAMPLE
    mirror = np.array([1.0 if FACING[facing] == "right" else -1.0, -1.0])
    tilt = rng.uniform(-10, 10)

    def to_canvas(points: np.ndarray) -> np.ndarray:
        return _rotate(np.asarray(points, np.float64), tilt) * mirror * scale

    shapes = [(part, to_canvas(points)) for part, points in _bird_shapes(species)]
    legs = [to_canvas(leg) for leg in _LEGS]
    corners = np.concatenate([points for _, points in shapes] + legs)
    canvas_size = IMAGE_SIZE * _SUPERSAMPLE
    margin = 4 * _SUPERSAMPLE
    low, high = corners.min(axis=0), corners.max(axis=0)
    offset = rng.uniform(margin - low, canvas_size - margin - high)

    # Colour on black and coverage drawn apart are premultiplied colour and alpha, which box
    # filtering keeps exact at the anti-aliased edges.
    colour_canvas = Image.new("RGB", (canvas_size, canvas_size))
    alpha_canvas = Image.new("L", (canvas_size, canvas_size))
    draws = ImageDraw.Draw(colour_canvas), ImageDraw.Draw(alpha_canvas)
    leg_width = max(1, round(0.09 * scale))
    outline_width = max(1, round(0.035 * scale))
    for leg in legs:
        xy = [tuple(p) for p in leg + offset]
        for draw, fill in zip(draws, (_rgb_int(rgb["leg"]), 255), strict=True):
            draw.line(xy, fill=fill, width=leg_width)
    for part, points in shapes:
        xy = [tuple(p) for p in points + offset]
        # A darker rim of the part's own colour separates parts without changing their colour.
        fills = (_rgb_int(rgb[part]), 255)
        for draw, fill, rim in zip(draws, fills, (_rgb_int(rgb[part] * 0.6), 255), strict=True):
            draw.polygon(xy, fill=fill, outline=rim, width=outline_width)
    colour = np.asarray(colour_canvas.reduce(_SUPERSAMPLE), np.float32)
    alpha = np.asarray(alpha_canvas.reduce(_SUPERSAMPLE), np.float32)
    return colour, alpha[:, :, None] / 255


def _jitter(rgb: np.ndarray, light: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(rgb * light + rng.normal(0, 6, 3), 0, 255)


def _rgb_int(rgb: np.ndarray) -> tuple[int, int, int]:
    r, g, b = (int(round(v)) for v in rgb)
    return r, g, b


# ----------------------------------------------------------------------------------------------
# Scenes: float32 IMAGE_SIZE x IMAGE_SIZE x 3 arrays in [0, 255].


def _smooth_noise(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Noise of about unit scale, smooth over IMAGE_SIZE / rows pixels down and / cols across."""
    cells = Image.fromarray(rng.standard_normal((rows, cols)).astype(np.float32))
    return np.asarray(cells.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC))


def _gradient(
    rng: np.random.Generator, stops: list[tuple[float, tuple[int, int, int]]]
) -> np.ndarray:
    """A vertical colour gradient through (height fraction, RGB) stops, its tint jittered."""
    heights = np.linspace(0, 1, IMAGE_SIZE)
    tint = rng.uniform(0.9, 1.1, 3)
    columns = [
        np.interp(heights, [t for t, _ in stops], [c[i] for _, c in stops]) for i in range(3)
    ]
    return (np.stack(columns, axis=1) * tint)[:, None, :].astype(np.float32)


def _blend(base: np.ndarray, colour: tuple[int, int, int], amount: np.ndarray) -> np.ndarray:
    amount = np.clip(amount, 0, 1)[:, :, None]
    return base * (1 - amount) + np.array(colour, np.float32) * amount


def _sky(rng: np.random.Generator) -> np.ndarray:
    base = _gradient(rng, [(0, (90, 145, 215)), (1, (185, 212, 240))])
    clouds = _smooth_noise(rng, 4, 6) + 0.5 * _smooth_noise(rng, 9, 13)
    return _blend(base, (250, 250, 250), (clouds - 0.5) * 0.9)


def _grass(rng: np.random.Generator) -> np.ndarray:
    base = _gradient(rng, [(0, (150, 175, 110)), (0.35, (105, 145, 70)), (1, (60, 105, 40))])
    blades = 14 * _smooth_noise(rng, 6, 110) + 10 * _smooth_noise(rng, 12, 12)
    return base + blades[:, :, None] * np.array([1.0, 1.0, 0.6], np.float32)


def _water(rng: np.random.Generator) -> np.ndarray:
    base = _gradient(rng, [(0, (95, 150, 180)), (1, (35, 85, 125))])
    ripples = 12 * _smooth_noise(rng, 110, 8)
    glints = _smooth_noise(rng, 70, 10) - 1.6
    return _blend(base + ripples[:, :, None], (235, 245, 250), glints)


def _sunset(rng: np.random.Generator) -> np.ndarray:
    base = _gradient(rng, [(0, (85, 60, 135)), (0.55, (235, 125, 95)), (1, (250, 205, 120))])
    streaks = _smooth_noise(rng, 12, 3)
    return _blend(base, (110, 70, 120), (streaks - 0.4) * 0.5)


def _forest(rng: np.random.Generator) -> np.ndarray:
    base = _gradient(rng, [(0, (40, 70, 45)), (1, (55, 90, 45))])
    foliage = _blend(base, (120, 165, 80), (_smooth_noise(rng, 7, 7) - 0.3) * 0.7)
    return _blend(foliage, (205, 215, 130), (_smooth_noise(rng, 24, 24) - 1.7) * 1.5)


_SCENES = (_sky, _grass, _water, _sunset, _forest)
