"""`attributes`: how often the attribute classifier reads in an image what its caption names.

`synthetic_birds` only. For every attribute a caption names, the image scores if the classifier
(`metrics.attribute_classifier`) reads the named value. Beside it, the classifier's accuracy on
the real test images: the ceiling a perfect generator would reach.
"""

from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from stackgan_jax.data import synthetic_birds
from stackgan_jax.errors import ConfigError
from stackgan_jax.evaluation.evaluator import Context, Images, Metric
from stackgan_jax.metrics import attribute_classifier


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


def make_metric(eval_config: ml_collections.ConfigDict, context: Context) -> Metric:
    """Attribute accuracy of each stage's images, and of the real test images (the ceiling).

    The classifier is loaded, and the ceiling computed, once, here; Stage-II also reads the
    real 256-pixel images.

    Raises:
        ValueError: the dataset has no attribute labels (only `synthetic_birds` has).
    """
    del eval_config  # The metric has no settings.
    source = context.test_split("attributes")
    captions = context.image_captions("attributes")
    if not source.attributes:
        raise ConfigError(
            f"the attributes metric needs synthetic_birds; {context.dataset} has no attribute "
            "labels"
        )
    classifier = attribute_classifier.load_classifier()
    real = {"stage1": attribute_classifier.center_crop(source.images_small, 64)}
    if context.stage == 2:
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
