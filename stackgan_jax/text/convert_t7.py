r"""Converts Reed et al.'s released char-CNN-RNN encoder from Torch7 `.t7` to `.npz`.

    python -m stackgan_jax.text.convert_t7 \
        --input=lm_sje_nc4_cub_hybrid_gru18_a1_c512_0.00070_1_10_trainvalids.txt_iter30000.t7 \
        --output=char_cnn_rnn_cub.npz

The `.npz` is what `get_encoder("char_cnn_rnn", weights=...)` loads. See `char_cnn_rnn_t7` for the
checks made on the file.
"""

from collections.abc import Sequence

from absl import flags

from stackgan_jax import cli
from stackgan_jax.text import char_cnn_rnn_t7

_INPUT = flags.DEFINE_string("input", None, "Torch7 char-CNN-RNN encoder (.t7).", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Flax parameters to write (.npz).", required=True)


def main(argv: Sequence[str]) -> None:
    """Converts --input to --output."""
    del argv  # unused
    char_cnn_rnn_t7.convert(_INPUT.value, _OUTPUT.value)


if __name__ == "__main__":
    cli.run(main)
