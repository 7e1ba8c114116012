"""The evaluator: fixed test captions and noise, and the metrics of `config.eval`, by name.

Each metric lives in its own module of this package with a `make_metric(eval_config, context)`
that loads what it needs (networks, reference statistics) once; `make_evaluator` imports only
the modules of the metrics asked for, so training without evaluation never loads them.
"""

import dataclasses
import importlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm

from stackgan_jax.data import source as source_lib
from stackgan_jax.errors import ConfigError

# Metric name -> the module of this package that makes it.
METRICS = {
    "attributes": "attributes",
    "clip_score": "clip_score",
    "fid": "fid",
    "is": "inception_score",
    "r_precision": "r_precision",
}

Images = dict[str, np.ndarray]
# (embeddings [n, text_dim], noise key) -> (64×64 images, 256×256 images or None): a bound
# `generation.generate_from_key`, of a checkpoint (`inference.generate`) or of a training state.
Generate = Callable[[np.ndarray, jax.Array], tuple[jax.Array, jax.Array | None]]
# Generated images per stage -> one metric's report.
Metric = Callable[[Images], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Context:
    """What every metric may need besides `config.eval`.

    Attributes:
        source: the test split; None when scoring images without a dataset
            (`evaluate --images_dir` without `--dataset`).
        captions: the caption of each image the metrics will be given, in order; None for images
            whose captions are not known (a sample dump without its captions).
        dataset: the dataset's name, or what the images are.
        stage: the generator's stage (images larger than 64 pixels count as Stage-II's).
        seed: the noise seed (and the Inception Score's and R-precision's shuffle seed).
        workdir: where FID caches the real images' statistics (in its `eval/`); None: no cache.
    """

    source: source_lib.ArraySource | None
    captions: list[str] | None
    dataset: str
    stage: int
    seed: int
    workdir: str | None
    # What metrics share, loaded once per evaluator (`fid_inception`).
    shared: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def fid_inception(self, weights: str | None, protocol: str | None = None) -> Any:
        """`inception_weights.load_fid_inception(weights, protocol)`, loaded once per evaluator.

        FID and improved-gan's ImageNet IS may both read pytorch-fid's file.
        """
        # Imported here: training imports no metric until one is asked for.
        from stackgan_jax.metrics import inception_weights

        key = f"fid_inception:{weights}"
        network = self.shared.get(key)
        if network is None or protocol not in (None, network.protocol):
            network = inception_weights.load_fid_inception(weights, protocol)
            self.shared[key] = network
        return network

    def test_split(self, metric: str) -> source_lib.ArraySource:
        """The test split, for a metric that cannot run without it.

        Raises:
            ConfigError: there is none; the message says which flag gives it.
        """
        if self.source is None:
            raise ConfigError(
                f"{metric} needs the dataset's test split: pass --dataset (and --data_dir)"
            )
        return self.source

    def image_captions(self, metric: str) -> list[str]:
        """Each image's caption, for a metric that scores images against them.

        Raises:
            ConfigError: they are not known; the message says which flag gives them.
        """
        if self.captions is None:
            raise ConfigError(
                f"{metric} scores each image against its caption, and these images have none:"
                " pass --captions=FILE, one caption per line in the images' order"
            )
        return self.captions


def held_out_order(source: source_lib.ArraySource, count: int) -> list[tuple[int, int]]:
    """(test image, caption) of up to `count` test captions, caption-major.

    Caption c of every test image comes before caption c + 1 of any, so a small `count` still
    covers the test images evenly. Metrics that need each caption's image (R-precision draws
    mismatched captions from other classes) get it here.
    """
    return [
        (image, caption)
        for caption in range(int(source.num_captions.max()))
        for image in range(len(source))
        if caption < source.num_captions[image]
    ][:count]


def caption_images(source: source_lib.ArraySource, captions: Sequence[str]) -> np.ndarray:
    """The test image each caption belongs to, for metrics that need its class.

    The evaluator's own captions (`held_out_order`) map to their images as they were drawn; any
    other captions (images scored from a directory) by their text, a caption that several test
    images share to the first of them in `held_out_order`.

    Returns:
        int [len(captions)] rows of `source`.

    Raises:
        ConfigError: a caption is not one of the test split's.
    """
    order = held_out_order(source, len(captions))
    if [source.captions[i][c] for i, c in order] == list(captions):
        return np.array([i for i, _ in order], np.int64)
    first_image: dict[str, int] = {}
    for image, caption in held_out_order(source, int(source.num_captions.sum())):
        first_image.setdefault(source.captions[image][caption], image)
    missing = [caption for caption in captions if caption not in first_image]
    if missing:
        raise ConfigError(
            f"{len(missing)} of the {len(captions)} captions are not captions of the test split,"
            f" e.g. {missing[0]!r}; this metric needs each image's test caption"
        )
    return np.array([first_image[caption] for caption in captions], np.int64)


def held_out_conditions(source: source_lib.ArraySource, count: int) -> tuple[np.ndarray, list[str]]:
    """Embeddings and captions of the `held_out_order` test captions.

    Returns:
        (float32 [n, text_dim], n captions) with n = min(count, all test captions).
    """
    order = held_out_order(source, count)
    embeddings = np.stack([source.embeddings[i, c] for i, c in order])
    captions = [source.captions[i][c] for i, c in order]
    return embeddings, captions


@dataclasses.dataclass(frozen=True)
class Evaluator:
    """Fixed test captions and noise, and loaded metrics: what evaluates any generator of a run.

    The CLI evaluates a checkpoint with it and training its current state (`config.eval`), so
    both give the same numbers for the same generator.

    Attributes:
        embeddings: float32 [n, text_dim], one image's condition each.
        captions: their n captions.
        batch_size: images per generator call.
        seed: noise seed.
        metrics: {name: metric}, in the order they run.
    """

    embeddings: np.ndarray
    captions: list[str]
    batch_size: int
    seed: int
    metrics: dict[str, Metric]

    def generate_images(self, generate: Generate, *, progress: bool = True) -> Images:
        """Generated images per stage: {'stage1': [n, 64, 64, 3], 'stage2': [n, 256, 256, 3]}.

        Batch b draws its noise from fold_in(key(seed), b), so results do not depend on which
        other batches ran.

        Args:
            generate: the generator to evaluate.
            progress: show a progress bar.
        """
        stages: dict[str, list[np.ndarray]] = {"stage1": [], "stage2": []}
        starts = range(0, len(self.embeddings), self.batch_size)
        batches = tqdm.tqdm(starts, desc="generating", unit=" batches", disable=not progress)
        for b, start in enumerate(batches):
            chunk = self.embeddings[start : start + self.batch_size]
            # Pad the last batch so the generator compiles once.
            padding = np.repeat(chunk[-1:], self.batch_size - len(chunk), 0)
            key = jax.random.fold_in(jax.random.key(self.seed), b)
            low, high = generate(np.concatenate([chunk, padding]), key)
            stages["stage1"].append(np.asarray(low)[: len(chunk)])
            if high is not None:
                stages["stage2"].append(np.asarray(high)[: len(chunk)])
        return {stage: np.concatenate(images) for stage, images in stages.items() if images}

    def score(self, images: Images) -> dict[str, Any]:
        """{metric name: its report} for images from `generate_images`."""
        return {name: metric(images) for name, metric in self.metrics.items()}


def make_evaluator(
    eval_config: ml_collections.ConfigDict,
    source: source_lib.ArraySource,
    *,
    dataset: str,
    stage: int,
    seed: int,
    workdir: str,
) -> Evaluator:
    """Checks `eval_config.metrics` and loads what they need: a metric that cannot run fails here.

    Args:
        eval_config: a `config.eval` section (`evaluation.default_config`).
        source: the test split.
        dataset: the dataset's name.
        stage: the generator's stage.
        seed: noise seed (and the Inception Score's shuffle seed).
        workdir: the training workdir (FID caches the real images' statistics there).

    Returns:
        The evaluator.

    Raises:
        ValueError: an unknown metric, or `attributes` on a dataset without attribute labels.
        MissingWeightsError: a metric's network is not installed.
    """
    embeddings, captions = held_out_conditions(source, eval_config.num_samples)
    context = Context(source, captions, dataset, stage, seed, workdir)
    metrics = load_metrics(eval_config, context)
    return Evaluator(embeddings, captions, eval_config.batch_size, seed, metrics)


def load_metrics(eval_config: ml_collections.ConfigDict, context: Context) -> dict[str, Metric]:
    """{name: metric} of `eval_config.metrics`, each module imported only when asked for.

    Raises:
        ConfigError: an unknown metric, or one that cannot run in this context.
        MissingWeightsError: a metric's network is not installed.
    """
    names = tuple(eval_config.metrics)
    unknown = sorted(set(names) - set(METRICS))
    if unknown:
        raise ConfigError(f"unknown metrics {unknown}; choose from {list(METRICS)}")
    return {
        name: importlib.import_module(f"{__package__}.{METRICS[name]}").make_metric(
            eval_config, context
        )
        for name in names
    }


def scalars(report: dict[str, Any]) -> dict[str, float]:
    """The report's float values as TensorBoard scalars, named by their path under `eval/`.

    E.g. `eval/attributes/stage1/body_colour`, `eval/fid/fid`, `eval/is/stage2/mean`,
    `eval/clip_score/clip_score`.
    """
    return _flatten("eval", report)


def _flatten(prefix: str, tree: Any) -> dict[str, float]:
    if isinstance(tree, dict):
        return {
            k: v for key, sub in tree.items() for k, v in _flatten(f"{prefix}/{key}", sub).items()
        }
    return {prefix: tree} if isinstance(tree, float) else {}
