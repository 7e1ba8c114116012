"""Converters for the released StackGAN generators, into workdirs that sampling reads.

    python -m stackgan_jax.pretrained --config=configs/stage2.py:birds \
        --input=models/birds_model_164000.ckpt --workdir=runs/birds_release/stage2

* `convert`: a release file + the config it matches → a workdir with one checkpoint.
* `stackgan_tf`: the paper's TensorFlow checkpoints (birds, flowers) → the `tf` architecture.
* `stackgan_pytorch`: StackGAN-Pytorch's `netG_epoch_*.pth` → the `pytorch` architecture.
* `mapping`: named tensors → Flax variables, with errors that name the tensor at fault.
"""

from stackgan_jax.pretrained.convert import convert, release_step
from stackgan_jax.pretrained.mapping import ConversionError

__all__ = ["ConversionError", "convert", "release_step"]
