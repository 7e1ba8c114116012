"""`is`: StackGAN's Inception Score of each stage's images.

The mean and standard deviation over 10 splits of the shuffled images, by the classifier given
as `inception_checkpoint`: the fine-tuned TF-slim Inception-v3 of StackGAN-inception-model (CUB,
Oxford-102; `metrics.slim_inception`), or pytorch-fid's `.pth`, whose 1008-way ImageNet softmax
gives improved-gan's score, which StackGAN reports for COCO
(`inception_features.imagenet_probabilities`).
"""

import functools
from typing import Any

import ml_collections

from stackgan_jax.evaluation.evaluator import Context, Images, Metric
from stackgan_jax.metrics import inception_features, slim_inception
from stackgan_jax.metrics import inception_score as inception_score_lib


def make_metric(eval_config: ml_collections.ConfigDict, context: Context) -> Metric:
    """The Inception Score metric; the classifier is loaded once, here.

    The images are shuffled with the context's seed and cut into
    `inception_score.DEFAULT_SPLITS` parts, as StackGAN's `inception_score.py` shuffles them
    before splitting (improved-gan's does not; that changes only which images share a split).
    `eval_config.inception_checkpoint` is StackGAN's fine-tuned TF-slim Inception-v3 (see
    `slim_inception.resolve_checkpoint`), or pytorch-fid's `.pth` for improved-gan's ImageNet
    score (COCO; `inception_features.imagenet_probabilities`), told apart by the `.pth` suffix.

    Raises:
        MissingWeightsError: there is no checkpoint there; the message says where to get it.
        ValueError: a `.pth` that is not pytorch-fid's Inception.
    """
    checkpoint = eval_config.inception_checkpoint
    if checkpoint and checkpoint.endswith(".pth"):
        network = context.fid_inception(checkpoint)
        inception_features.check_classifier(network)
        probabilities = functools.partial(inception_features.imagenet_probabilities, network)
        classifier = "imagenet_1008"
    else:
        params = slim_inception.load_slim_inception(checkpoint)
        probabilities = functools.partial(slim_inception.class_probabilities, params)
        classifier = "stackgan_finetuned"

    def metric(images: Images) -> dict[str, Any]:
        report: dict[str, Any] = {
            name: inception_score_lib.inception_score(
                probabilities(stage_images), seed=context.seed
            )._asdict()
            for name, stage_images in images.items()
        }
        report["splits"] = inception_score_lib.DEFAULT_SPLITS
        report["checkpoint"] = checkpoint
        report["classifier"] = classifier
        return report

    return metric
