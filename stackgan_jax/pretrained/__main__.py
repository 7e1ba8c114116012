r"""Converts a released StackGAN generator into a workdir that `sample` and `evaluate` read.

    python -m stackgan_jax.pretrained --config=configs/stage2.py:birds \
        --input=models/birds_model_164000.ckpt --workdir=runs/birds_release/stage2
    python -m stackgan_jax.pretrained --config=configs/stage2.py:coco \
        --input=netG_epoch_90.pth --workdir=runs/coco_release/stage2

The config says which architecture and widths the file holds (`tf` configs read TensorFlow
checkpoints, `pytorch` configs `.pth` files) and which stage: a Stage-II config reads the Stage-II
generator and the Stage-I generator stored with it.
"""

from collections.abc import Sequence

from absl import app, flags
from ml_collections import config_flags

from stackgan_jax import cli
from stackgan_jax.pretrained.convert import convert

config_flags.DEFINE_config_file(
    "config",
    None,
    "The config the release matches, e.g. configs/stage2.py:birds.",
    lock_config=True,
)
flags.DEFINE_string("input", None, "The release file (.ckpt or .pth).")
flags.DEFINE_string("workdir", None, "Where to write the workdir (must hold no checkpoints yet).")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the last number in the file name).")
flags.mark_flags_as_required(["config", "input", "workdir"])


def main(argv: Sequence[str]) -> None:
    """Converts --input into --workdir."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    flag_values = flags.FLAGS
    config = flag_values.config
    step = convert(flag_values.input, config, flag_values.workdir, flag_values.step)
    text_weights = " --text_encoder_weights=<converted .npz>"
    if config.data.text_encoder != "char_cnn_rnn":
        text_weights = ""
    print(
        f"Wrote {flag_values.workdir} (stage {config.stage}, step {step}). Sample it with:\n"
        f"  python -m stackgan_jax.sample --workdir={flag_values.workdir}{text_weights} "
        '--text="a small bird with a red head."'
    )


if __name__ == "__main__":
    cli.run(main)
