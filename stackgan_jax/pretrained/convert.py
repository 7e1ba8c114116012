"""Writes a released generator as a workdir that sampling and evaluation read.

The workdir holds one Orbax checkpoint, at the release's step, with the items `generator`,
`stage1_generator` (Stage-II) and `meta`, laid out as training writes them, so
`inference.load(workdir)` and the `sample` and `evaluate` CLIs take it as it is. The release
files hold no discriminator and no optimiser state, so the checkpoint has none either: its meta
carries `pretrained` (the source file), and training refuses to resume from it.
"""

import os
import re

import ml_collections
import orbax.checkpoint as ocp

from stackgan_jax import checkpointing
from stackgan_jax.errors import ConfigError
from stackgan_jax.pretrained import stackgan_pytorch, stackgan_tf

# What reads a release file for each architecture, and what the files are called.
READERS = {"pytorch": stackgan_pytorch.generator_variables, "tf": stackgan_tf.generator_variables}
SOURCES = {"pytorch": "StackGAN-Pytorch state dict", "tf": "TensorFlow checkpoint"}


def release_step(path: str | os.PathLike[str]) -> int:
    """The last number in a release file's name before its first '.', 0 if none.

    That is the training iteration for the TF release (`birds_model_164000.ckpt`, also named by
    its `.index` or `.data-00000-of-00001` file) and the epoch for StackGAN-Pytorch
    (`netG_epoch_90.pth`).
    """
    numbers = re.findall(r"\d+", os.path.basename(os.fspath(path)).split(".")[0])
    return int(numbers[-1]) if numbers else 0


def convert(
    source: str | os.PathLike[str],
    config: ml_collections.ConfigDict,
    workdir: str,
    step: int | None = None,
) -> int:
    """Converts a released StackGAN generator into a new workdir's checkpoint.

    Args:
        source: the release file: a StackGAN-Pytorch `netG_epoch_*.pth` for a `pytorch` config,
            or a TF checkpoint (`*.ckpt`) for a `tf` config.
        config: the training config the release matches (`configs/stage2.py:birds` for the TF
            birds model, `configs/stage2.py:coco` for StackGAN-Pytorch's COCO model, ...); its
            stage says which generator(s) to read.
        workdir: where to write; must not hold checkpoints yet.
        step: the checkpoint's step (default: `release_step(source)`).

    Returns:
        The step written.

    Raises:
        FileNotFoundError: `source` does not exist.
        FileExistsError: `workdir` already holds checkpoints.
        ValueError: an unknown architecture, or the file does not fit the config (a
            `mapping.ConversionError` names the tensor, an `untrusted.RefusedFileError` the
            problem with a `.pth`, e.g. a global a state dict never needs).
    """
    arch = config.model.arch
    if arch not in READERS:
        raise ConfigError(f"model.arch must be one of {sorted(READERS)}, got {arch!r}")
    directory = checkpointing.checkpoint_dir(workdir)
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"{directory} already holds checkpoints; choose a new --workdir.")
    generator, stage1_generator = READERS[arch](source, config)
    step = release_step(source) if step is None else step
    meta = checkpointing.make_meta(
        config,
        text_encoder={"name": config.data.text_encoder, "dim": config.model.text_dim},
        dataset={"name": config.data.dataset},
        # Not trained here, so there is no epoch to count steps over.
        steps_per_epoch=0,
        extra={
            checkpointing.PRETRAINED: {
                "source": SOURCES[arch],
                "file": os.path.basename(os.fspath(source)),
            }
        },
    )
    items = {
        checkpointing.GENERATOR: ocp.args.PyTreeSave(generator),
        checkpointing.META: ocp.args.JsonSave(meta),
    }
    if stage1_generator is not None:
        items[checkpointing.STAGE1_GENERATOR] = ocp.args.PyTreeSave(stage1_generator)
    with checkpointing.make_manager(workdir) as manager:
        manager.save(step, args=ocp.args.Composite(**items), force=True)
        manager.wait_until_finished()
    return step
