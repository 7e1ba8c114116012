"""An attribute classifier for the synthetic birds: how well do generated birds match their text?

A small CNN reads the attributes that `data.synthetic_birds` draws from a 64 x 64 image, one
softmax head each: body, wing, crown and beak colour, beak length, facing and background.

It has no head for the bird's size. The dataset crops every image to 1.5 times its bird's
bounding box, so a small bird fills the frame as much as a large one; what is left is a trace of
the renderer (its pixel grain and scene texture, magnified more in a small bird's smaller crop),
from which a trial size head on this network read the size of only 69 % of the test species'
birds (chance: 33 %), and which a generator need not reproduce.

It is trained on renders of `synthetic_birds.random_species`, whose attributes vary
independently (minus the few draws that repeat one of the 50 test species), preprocessed as the
dataset preprocesses them (bounding-box crop, bicubic resizes to 304 and 76 pixels, random
64-pixel crops and flips as in Stage-I training), and tested on the dataset's 50 test species, so
a generated image is scored by a model that never saw its species' combination of colours.

Inputs are images in [-1, 1], the generator's range: Stage-I images as they are, and larger ones
(Stage-II's 256 pixels) resized to 64 pixels as the dataset resized them (`to_classifier_input`).

The shipped weights, `attribute_classifier.npz` next to this module, were written by

    python -m stackgan_jax.metrics.attribute_classifier \
        --output=stackgan_jax/metrics/attribute_classifier.npz

with the default --train_species, --per_species, --steps and --seed, in about 8 minutes on 2
(shared) CPU cores. It prints the accuracy of every head on 1,000 renders of the test species:
at least 99.8 % for the body, wing and crown colours, facing and background, 98.2 % for the
beak colour and 96.6 % for the beak length, the hardest (a long grey beak against water or sky).
"""

import dataclasses
import functools
import importlib.resources
import json
import os
import time
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from absl import flags
from flax import traverse_util

from stackgan_jax import cli
from stackgan_jax.data import preprocess, synthetic_birds
from stackgan_jax.errors import BadFileError

IMAGE_SIZE = 64
# The dataset's stored size for each crop size: 64-pixel crops of the 76-pixel Stage-I images
# and 256-pixel crops of the 304-pixel Stage-II images.
_LOAD_SIZES = {IMAGE_SIZE: preprocess.LR_LOAD_SIZE, 256: preprocess.LOAD_SIZE}
# After the bounding-box crop, the bird itself no longer shows its size (see the module docstring).
UNREADABLE = ("size",)
ATTRIBUTES = {
    name: values for name, values in synthetic_birds.ATTRIBUTES.items() if name not in UNREADABLE
}
SHIPPED = "attribute_classifier.npz"
_RETRAIN = "python -m stackgan_jax.metrics.attribute_classifier --output=PATH"
# A horizontal flip turns a bird facing left into one facing right and back.
_FLIPPED_FACING = np.array([synthetic_birds.FACING.index(s) for s in ("right", "left")], np.int32)


class AttributeNet(nn.Module):
    """A small CNN that looks for each attribute where it is, on 64 x 64 x 3 images in [-1, 1].

    Every attribute is the colour or shape of one part of the bird (or of the scene), wherever
    the crop put the bird. So each head pools a 16 x 16 grid of features with its own softmax
    attention: `context` features, which see more than half the image, tell where the part is,
    and `fine` ones, which see 17 pixels (a long beak and the eye behind it), what it looks like
    there. (Heads on flattened features, which must learn every attribute at every position
    anew, needed many more steps to read crowns and beaks.)

    | layer                                   | output        |
    |-----------------------------------------|---------------|
    | 5×5 conv stride 2, ReLU                 | 32×32×16      |
    | 3×3 conv stride 2, ReLU                 | 16×16×32      |
    | 3×3 conv, ReLU: `fine`                  | 16×16×32      |
    | 3×3 conv stride 2, ReLU                 | 8×8×64        |
    | 3×3 conv, ReLU: `context` (upsampled)   | 16×16×128     |
    | concatenated `fine`, `context`          | 256 × 160     |
    | per attribute: softmax attention pool   | 160           |
    | per attribute: FC                       | its values    |
    """

    heads: tuple[tuple[str, int], ...]  # (attribute, number of values)

    @nn.compact
    def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
        h = nn.relu(nn.Conv(16, (5, 5), strides=2, name="conv1")(images))
        h = nn.relu(nn.Conv(32, (3, 3), strides=2, name="conv2")(h))
        fine = nn.relu(nn.Conv(32, (3, 3), name="conv3")(h))
        h = nn.relu(nn.Conv(64, (3, 3), strides=2, name="conv4")(fine))
        context = nn.relu(nn.Conv(128, (3, 3), name="conv5")(h))
        context = jnp.repeat(jnp.repeat(context, 2, axis=1), 2, axis=2)
        features = jnp.concatenate([fine, context], axis=-1)
        features = features.reshape(features.shape[0], -1, features.shape[-1])
        logits = {}
        for name, size in self.heads:
            # Without a bias: the softmax ignores one added to every position.
            where = nn.Dense(1, use_bias=False, name=f"{name}_where")(features)[..., 0]
            weights = nn.softmax(where)
            pooled = jnp.einsum("np,npc->nc", weights, features)
            logits[name] = nn.Dense(size, name=name)(pooled)
        return logits


@dataclasses.dataclass(frozen=True)
class Classifier:
    """A trained classifier.

    Attributes:
        params: the network's parameters.
        vocabularies: {attribute: its values}, one head each, in head order; predictions index
            these tuples, which equal `synthetic_birds.ATTRIBUTES[attribute]`.
    """

    params: Any
    vocabularies: dict[str, tuple[str, ...]]

    @property
    def net(self) -> AttributeNet:
        """The network, with a head per vocabulary."""
        return AttributeNet(tuple((name, len(v)) for name, v in self.vocabularies.items()))


def _init_params(net: AttributeNet, key: jax.Array) -> Any:
    return net.init(key, jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3)))["params"]


def training_species(count: int, seed: int = 0) -> list[synthetic_birds.Species]:
    """`synthetic_birds.random_species(count, seed)` without the test species' combinations.

    Args:
        count: combinations to draw.
        seed: seed of the draw.

    Returns:
        The drawn species whose attributes differ from every test species' (under 1 % of the
        draws repeat one and are dropped).
    """
    excluded = {dataclasses.astuple(s)[1:] for s in held_out_species()}
    drawn = synthetic_birds.random_species(count, seed)
    return [s for s in drawn if dataclasses.astuple(s)[1:] not in excluded]


def held_out_species() -> list[synthetic_birds.Species]:
    """The dataset's 50 test species (table and split of seed 0)."""
    return synthetic_birds.split_species(synthetic_birds.species_table())["test"]


def render(
    species: Sequence[synthetic_birds.Species],
    images_per_species: int,
    *,
    seed: int = 0,
    large: bool = False,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Renders birds as the dataset stores them: bounding-box crop, bicubic resizes.

    Args:
        species: the species to draw.
        images_per_species: examples per species (example indices 0, 1, ...).
        seed: seed of the images; the dataset's images have seed 0.
        large: return the 304-pixel (Stage-II) images instead of the 76-pixel (Stage-I) ones.

    Returns:
        (images, attributes): uint8 [N, 76, 76, 3] (or 304) species by species, and
        {attribute: int32 [N] index into synthetic_birds.ATTRIBUTES[attribute]} for every
        attribute the renderer draws.
    """
    jobs = [(s, i) for s in species for i in range(images_per_species)]
    images, attributes = [], []
    for s, index in tqdm.tqdm(jobs, desc="rendering", unit=" birds", leave=False):
        example = synthetic_birds.render_example(s, index, seed)
        stage_ii, stage_i = preprocess.load_sizes(preprocess.cub_crop(example.image, example.bbox))
        images.append(stage_ii if large else stage_i)
        attributes.append(example.attributes)
    labels = {
        name: np.array([a[name] for a in attributes], np.int32)
        for name in synthetic_birds.ATTRIBUTES
    }
    return np.stack(images), labels


def center_crop(images: np.ndarray, size: int) -> np.ndarray:
    """The centre `size` x `size` window of stored images, in the generator range.

    Evaluation reads real images there, where training crops them at random.

    Args:
        images: uint8 [N, S, S, C], S >= size.
        size: the crop's side.

    Returns:
        float32 [N, size, size, C] in [-1, 1].
    """
    margin = (images.shape[1] - size) // 2
    window = images[:, margin : margin + size, margin : margin + size]
    return window.astype(np.float32) * (2 / 255) - 1


def held_out_examples(
    images_per_species: int, *, size: int = IMAGE_SIZE
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The dataset's test images, cropped at the centre as evaluation should read them.

    These are examples 0, 1, ... of each test species, rendered with the dataset's seed (0), so
    the first `synthetic_birds.DEFAULT_IMAGES_PER_SPECIES` are the dataset's own test images;
    stored at 76 (or 304) pixels and cut to the generator's 64 (or 256) pixels at the centre,
    where Stage-I training crops at random.

    Args:
        images_per_species: examples per test species.
        size: 64 (Stage-I) or 256 (Stage-II).

    Returns:
        (images, attributes): float32 [50 * images_per_species, size, size, 3] in [-1, 1] and
        {attribute: int32 [N]} for every attribute the renderer draws.

    Raises:
        ValueError: `size` is neither 64 nor 256.
    """
    if size not in _LOAD_SIZES:
        raise ValueError(f"size must be one of {tuple(_LOAD_SIZES)}, got {size}")
    stored, attributes = render(held_out_species(), images_per_species, large=size != IMAGE_SIZE)
    return center_crop(stored, size), attributes


@jax.jit
def to_classifier_input(images: jax.Array | np.ndarray) -> jax.Array:
    """Images in [-1, 1] as the classifier reads them: float32 [N, 64, 64, 3].

    64-pixel images pass as they are. Larger ones are resized as the dataset resized its 304-pixel
    images to 76: PIL's bicubic filter there and `jax.image.resize`'s antialiased bicubic here
    have the same kernel (Keys, a = -0.5) widened by the downscale factor, and PIL's uint8 output
    clips as `jnp.clip` does here. A 256-pixel crop thus becomes the 64-pixel crop of the same
    bird within a few grey levels.

    Args:
        images: float [N, S, S, 3] in [-1, 1], S >= 64.

    Returns:
        float32 [N, 64, 64, 3] in [-1, 1].

    Raises:
        ValueError: the images are not [N, S, S, 3] with S >= 64, or not RGB.
    """
    images = jnp.asarray(images, jnp.float32)
    if images.ndim != 4 or not IMAGE_SIZE <= images.shape[1] == images.shape[2]:
        raise ValueError(f"expected images of [N, S, S, 3], S >= {IMAGE_SIZE}; got {images.shape}")
    if images.shape[3] != 3:
        raise ValueError(f"expected RGB images, got {images.shape[3]} channels")
    if images.shape[1] == IMAGE_SIZE:
        return images
    shape = (images.shape[0], IMAGE_SIZE, IMAGE_SIZE, 3)
    return jnp.clip(jax.image.resize(images, shape, "bicubic", antialias=True), -1, 1)


@functools.partial(jax.jit, static_argnames="net")
def _predict(params: Any, images: jax.Array, net: AttributeNet) -> dict[str, jax.Array]:
    logits = net.apply({"params": params}, images)
    return {name: jnp.argmax(value, axis=-1) for name, value in logits.items()}


def predict(
    classifier: Classifier, images: jax.Array | np.ndarray, batch_size: int = 256
) -> dict[str, np.ndarray]:
    """The most likely value of every attribute the classifier reads.

    Args:
        classifier: a trained classifier, e.g. `load_classifier()`.
        images: float [N, S, S, 3] in [-1, 1], S >= 64; see `to_classifier_input`.
        batch_size: images per forward pass.

    Returns:
        {attribute: int [N] index into classifier.vocabularies[attribute]}.

    Raises:
        ValueError: the images are not [N, S, S, 3] with S >= 64, or not RGB.
    """
    chunks = [
        _predict(
            classifier.params,
            to_classifier_input(images[start : start + batch_size]),
            classifier.net,
        )
        for start in range(0, len(images), batch_size)
    ]
    return {name: np.concatenate([c[name] for c in chunks]) for name in classifier.vocabularies}


def accuracy(
    classifier: Classifier, images: jax.Array | np.ndarray, attributes: dict[str, np.ndarray]
) -> dict[str, float]:
    """The fraction of images whose attribute the classifier reads right, per attribute.

    Args:
        classifier: a trained classifier.
        images: float [N, S, S, 3] in [-1, 1], as for `predict`.
        attributes: {attribute: int [N] true values}; attributes without a head (size) are
            ignored.

    Returns:
        {attribute: accuracy in [0, 1]} for every head of the classifier.

    Raises:
        KeyError: `attributes` lacks one of the classifier's attributes.
    """
    predictions = predict(classifier, images)
    return {
        name: float(np.mean(value == np.asarray(attributes[name])))
        for name, value in predictions.items()
    }


def _augment(
    key: jax.Array, images: jax.Array, labels: dict[str, jax.Array]
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Random 64 crops of the 76 renders and horizontal flips, as Stage-I's training data get."""
    crop_key, flip_key = jax.random.split(key)
    limit = images.shape[1] - IMAGE_SIZE + 1
    offsets = jax.random.randint(crop_key, (len(images), 2), 0, limit)
    crops = jax.vmap(
        lambda image, offset: jax.lax.dynamic_slice(
            image, (offset[0], offset[1], 0), (IMAGE_SIZE, IMAGE_SIZE, image.shape[2])
        )
    )(images, offsets)
    flip = jax.random.bernoulli(flip_key, 0.5, (len(images),))
    crops = jnp.where(flip[:, None, None, None], crops[:, :, ::-1], crops)
    facing = jnp.where(flip, jnp.asarray(_FLIPPED_FACING)[labels["facing"]], labels["facing"])
    return crops.astype(jnp.float32) * (2 / 255) - 1, labels | {"facing": facing}


def _loss(
    params: Any, net: AttributeNet, images: jax.Array, labels: dict[str, jax.Array]
) -> jax.Array:
    """The sum over attributes of the mean softmax cross-entropy."""
    logits = net.apply({"params": params}, images)
    return sum(
        optax.softmax_cross_entropy_with_integer_labels(logits[name], labels[name]).mean()
        for name in logits
    )


@functools.partial(jax.jit, static_argnames=("net", "optimizer"))
def _train_step(
    params: Any,
    opt_state: Any,
    key: jax.Array,
    images: jax.Array,
    labels: dict[str, jax.Array],
    *,
    net: AttributeNet,
    optimizer: optax.GradientTransformation,
) -> tuple[Any, Any, jax.Array]:
    images, labels = _augment(key, images, labels)
    loss, grads = jax.value_and_grad(_loss)(params, net, images, labels)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def _batches(count: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless batches of row indices: a fresh permutation every epoch, its remainder dropped."""
    while True:
        permutation = rng.permutation(count)
        for start in range(0, count - batch_size + 1, batch_size):
            # Sorted rows read the arrays in order; the batch's order does not matter.
            yield np.sort(permutation[start : start + batch_size])


def train_classifier(
    images: np.ndarray,
    attributes: dict[str, np.ndarray],
    *,
    steps: int,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    seed: int = 0,
) -> Classifier:
    """Trains a classifier with Adam and a cosine learning-rate decay; deterministic per seed.

    Args:
        images: uint8 [N, 76, 76, 3] renders as `render` returns them.
        attributes: {attribute: int [N]}; every attribute of `ATTRIBUTES` gets a head.
        steps: training steps.
        batch_size: renders per step; at most N.
        learning_rate: the peak learning rate.
        seed: seed of the initialisation, the batches and the augmentation.

    Returns:
        The trained classifier.

    Raises:
        ValueError: fewer renders than `batch_size`.
    """
    if len(images) < batch_size:
        raise ValueError(f"{len(images)} renders are fewer than a batch of {batch_size}")
    classifier = Classifier(None, ATTRIBUTES)
    net = classifier.net
    init_key, step_key = jax.random.split(jax.random.key(seed))
    params = _init_params(net, init_key)
    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))
    opt_state = optimizer.init(params)
    batches = _batches(len(images), batch_size, np.random.default_rng(seed))
    progress = tqdm.trange(steps, desc="training", unit=" steps", leave=False)
    for step, rows in zip(progress, batches, strict=False):
        params, opt_state, loss = _train_step(
            params,
            opt_state,
            jax.random.fold_in(step_key, step),
            images[rows],
            {name: attributes[name][rows] for name in ATTRIBUTES},
            net=net,
            optimizer=optimizer,
        )
        if step % 100 == 0:
            progress.set_postfix(loss=f"{float(loss):.3f}")
    return dataclasses.replace(classifier, params=params)


def save_classifier(classifier: Classifier, path: str | os.PathLike[str]) -> None:
    """Writes a classifier to one .npz file: flattened parameters and the vocabularies as JSON.

    Args:
        classifier: the classifier.
        path: the file to write.
    """
    arrays = traverse_util.flatten_dict(jax.device_get(classifier.params), sep="/")
    # Through a file object, as numpy would add '.npz' to a path that lacks it.
    with open(path, "wb") as f:
        np.savez_compressed(
            f,
            vocabularies=np.array(json.dumps(classifier.vocabularies)),
            **{f"params/{name}": value for name, value in arrays.items()},
        )


def load_classifier(path: str | os.PathLike[str] | None = None) -> Classifier:
    """Reads a classifier written by `save_classifier`.

    Args:
        path: the .npz file; None reads the weights shipped with the package.

    Returns:
        The classifier.

    Raises:
        FileNotFoundError: there is no file at `path`.
        ValueError: the file is not a classifier that `save_classifier` wrote.
    """
    if path is None:
        shipped = importlib.resources.files(__package__).joinpath(SHIPPED)
        with importlib.resources.as_file(shipped) as shipped_path:
            return load_classifier(shipped_path)
    try:
        with np.load(path, allow_pickle=False) as data:
            vocabularies = json.loads(str(data["vocabularies"]))
            arrays = {
                name.removeprefix("params/"): data[name]
                for name in data.files
                if name.startswith("params/")
            }
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no attribute classifier at {path}; train one with `{_RETRAIN}`"
        ) from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise BadFileError(f"{path} is not an attribute classifier file: {error}") from error
    classifier = Classifier(
        traverse_util.unflatten_dict(arrays, sep="/"),
        {name: tuple(values) for name, values in vocabularies.items()},
    )
    expected = jax.eval_shape(lambda: _init_params(classifier.net, jax.random.key(0)))
    shapes = jax.tree.map(np.shape, classifier.params)
    if shapes != jax.tree.map(np.shape, expected):
        raise BadFileError(f"{path}: parameters do not fit the network of its vocabularies")
    return classifier


def main(argv: Sequence[str]) -> None:
    """Trains a classifier, writes it to --output and prints its test-species accuracy."""
    del argv  # unused
    options = flags.FLAGS
    start = time.perf_counter()
    species = training_species(options.train_species, options.seed)
    images, attributes = render(species, options.per_species, seed=options.seed)
    rendered = time.perf_counter()
    classifier = train_classifier(images, attributes, steps=options.steps, seed=options.seed)
    save_classifier(classifier, options.output)
    trained = time.perf_counter()
    print(
        f"rendered {len(images)} birds of {len(species)} species in {rendered - start:.0f} s, "
        f"trained {options.steps} steps in {trained - rendered:.0f} s; wrote {options.output}"
    )
    test_images, test_attributes = held_out_examples(options.test_per_species)
    scores = accuracy(load_classifier(options.output), test_images, test_attributes)
    print(f"accuracy on {len(test_images)} renders of the test species:")
    for name, score in scores.items():
        print(f"{name:>14}: {100 * score:6.2f} %")


if __name__ == "__main__":
    # Defined here, not at import, so that importing the library defines no global flags.
    flags.DEFINE_string("output", None, "The .npz file to write.", required=True)
    flags.DEFINE_integer("train_species", 5000, "Random attribute combinations to draw.")
    flags.DEFINE_integer("per_species", 1, "Training renders per combination.")
    flags.DEFINE_integer("steps", 1200, "Training steps of 64 renders.")
    flags.DEFINE_integer("seed", 0, "Seed of the combinations, the renders and the training.")
    flags.DEFINE_integer("test_per_species", 20, "Test renders per test species.")
    cli.run(main)
