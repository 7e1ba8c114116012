"""Evaluates a trained checkpoint on its dataset's held-out captions.

    python -m stackgan_jax.evaluate --workdir=runs/demo/stage2 --metrics=attributes
    python -m stackgan_jax.evaluate --workdir=runs/birds/stage2 --metrics=fid --num_samples=30000
    python -m stackgan_jax.evaluate --workdir=runs/birds/stage2 --metrics=is \
        --inception_checkpoint=inception_finetuned_models/birds_valid299/model.ckpt-5000

One image is generated per test caption (caption c of every test image before caption c + 1),
up to --num_samples, in batches. The report goes to <workdir>/eval/step_<N>.json and to
TensorBoard under `eval/`.

Metrics:
  attributes: `synthetic_birds` only. The attribute classifier (`metrics.attribute_classifier`)
    reads each generated image; for every attribute a caption names, the image scores if the
    classifier reads the named value. Beside it, the classifier's accuracy on the real test
    images: the ceiling a perfect generator would reach.
  is: StackGAN's Inception Score of each stage's images, the mean and standard deviation over 10
    splits of the shuffled images, by the fine-tuned TF-slim Inception-v3 the user supplies
    (--inception_checkpoint; `metrics.slim_inception`).
"""

import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import tqdm
from absl import app, flags, logging
from clu import metric_writers
from etils import epath

from stackgan_jax import inference, visualize
from stackgan_jax.data import source as source_lib
from stackgan_jax.data import synthetic_birds
from stackgan_jax.metrics import (
    attribute_classifier,
    fid,
    inception,
    inception_score,
    slim_inception,
)
from stackgan_jax.text import MissingWeightsError

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


def generate_images(
    model: inference.TrainedModel, embeddings: np.ndarray, batch_size: int, seed: int
) -> dict[str, np.ndarray]:
    """Generated images per stage: {'stage1': [n, 64, 64, 3], 'stage2': [n, 256, 256, 3]}.

    Batch b draws its noise from fold_in(key(seed), b), so results do not depend on which other
    batches ran.
    """
    stages: dict[str, list[np.ndarray]] = {"stage1": [], "stage2": []}
    starts = range(0, len(embeddings), batch_size)
    for b, start in enumerate(tqdm.tqdm(starts, desc="generating", unit=" batches")):
        chunk = embeddings[start : start + batch_size]
        # Pad the last batch so the generator compiles once.
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - len(chunk), 0)])
        key = jax.random.fold_in(jax.random.key(seed), b)
        low, high = inference.generate(model, padded, key)
        stages["stage1"].append(np.asarray(low)[: len(chunk)])
        if high is not None:
            stages["stage2"].append(np.asarray(high)[: len(chunk)])
    return {stage: np.concatenate(images) for stage, images in stages.items() if images}


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


def evaluate_attributes(
    model: inference.TrainedModel,
    source: source_lib.ArraySource,
    images: dict[str, np.ndarray],
    captions: Sequence[str],
) -> dict[str, Any]:
    """Attribute accuracy of each stage's images, and of the real test images (the ceiling)."""
    if not source.attributes:
        raise ValueError(
            f"the attributes metric needs synthetic_birds; {model.meta['dataset']} has no "
            "attribute labels"
        )
    classifier = attribute_classifier.load_classifier()
    report: dict[str, Any] = {
        stage: attribute_accuracy(classifier, stage_images, captions)
        for stage, stage_images in images.items()
    }
    real = {"stage1": attribute_classifier.center_crop(source.images_small, 64)}
    if "stage2" in images:
        real["stage2"] = attribute_classifier.center_crop(source.images, 256)
    report["real"] = {
        stage: attribute_classifier.accuracy(classifier, real_images, source.attributes)
        for stage, real_images in real.items()
    }
    return report


def evaluate_fid(
    model: inference.TrainedModel,
    source: source_lib.ArraySource,
    images: dict[str, np.ndarray],
    captions: Sequence[str],
    *,
    workdir: str,
    ref_stats: str | None = None,
) -> dict[str, Any]:
    """FID of the last stage's images against the real test images' statistics."""
    del captions
    stage = "stage2" if "stage2" in images else "stage1"
    generated = images[stage]
    params = inception.load_fid_inception()
    if ref_stats:
        mu, sigma = fid.load_statistics(ref_stats)
        reference = ref_stats
    else:
        size = generated.shape[1]
        cache = epath.Path(workdir) / "eval" / f"fid_reference_{size}px.npz"
        if cache.exists():
            mu, sigma = fid.load_statistics(cache)
        else:
            stored = source.images if size > 64 else source.images_small
            real = visualize.to_uint8(attribute_classifier.center_crop(stored, size))
            mu, sigma = fid.feature_statistics(inception.fid_features(params, real))
            cache.parent.mkdir(parents=True, exist_ok=True)
            fid.save_statistics(cache, mu, sigma)
        reference = f"{len(source)} real test images, centre-cropped to {size} px ({cache})"
    features = inception.fid_features(params, generated)
    return {
        "stage": stage,
        "fid": float(fid.frechet_distance(*fid.feature_statistics(features), mu, sigma)),
        "reference": reference,
    }


def evaluate_is(
    model: inference.TrainedModel,
    source: source_lib.ArraySource,
    images: dict[str, np.ndarray],
    captions: Sequence[str],
    *,
    inception_checkpoint: str | None,
    seed: int,
) -> dict[str, Any]:
    """StackGAN's Inception Score of each stage's images, by the fine-tuned Inception-v3.

    The images are shuffled with `seed` and cut into `inception_score.DEFAULT_SPLITS` parts, as
    StackGAN's `inception_score.py` shuffles them before splitting.
    """
    del model, source, captions
    params = slim_inception.load_slim_inception(inception_checkpoint)
    report: dict[str, Any] = {
        stage: inception_score.inception_score(
            slim_inception.class_probabilities(params, stage_images), seed=seed
        )._asdict()
        for stage, stage_images in images.items()
    }
    report["splits"] = inception_score.DEFAULT_SPLITS
    report["checkpoint"] = inception_checkpoint
    return report


EVALUATORS: dict[str, Callable[..., dict[str, Any]]] = {
    "attributes": evaluate_attributes,
    "fid": evaluate_fid,
    "is": evaluate_is,
}


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
        inception_checkpoint: StackGAN's fine-tuned TF-slim Inception-v3, which `is` needs
            (see `slim_inception.resolve_checkpoint`).

    Returns:
        The report, also written to <workdir>/eval/step_<N>.json and TensorBoard.
    """
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {list(METRICS)}")
    if "is" in metrics:
        # Fail before generating the images, not after.
        slim_inception.resolve_checkpoint(inception_checkpoint)
    model = inference.load(workdir, step)
    data = model.config.data
    source = source_lib.load_split(
        data.dataset, "test", data_dir or data.data_dir, text_dim=model.config.model.text_dim
    )
    embeddings, captions = test_conditions(source, num_samples)
    start = time.perf_counter()
    images = generate_images(model, embeddings, batch_size, seed)
    report: dict[str, Any] = {
        "workdir": workdir,
        "step": model.step,
        "dataset": data.dataset,
        "num_samples": len(captions),
        "seed": seed,
        "generation_seconds": round(time.perf_counter() - start, 1),
    }
    options = {
        "fid": {"workdir": workdir, "ref_stats": ref_stats},
        "is": {"inception_checkpoint": inception_checkpoint, "seed": seed},
    }
    for metric in metrics:
        report[metric] = EVALUATORS[metric](
            model, source, images, captions, **options.get(metric, {})
        )
    _write_report(workdir, model.step, report)
    return report


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
    writer.write_scalars(step, {k: v for k, v in _flatten("eval", report).items()})
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
        "inception_checkpoint",
        None,
        "For --metrics=is: StackGAN's fine-tuned TF-slim Inception-v3 checkpoint, e.g."
        " inception_finetuned_models/birds_valid299/model.ckpt-5000 from the zip linked in the"
        " README of hanzhanggit/StackGAN-inception-model.",
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
