"""Images from any sentence with a trained checkpoint.

    python -m stackgan_jax.sample --workdir=runs/demo/stage2 --text="a red bird with blue wings."
    python -m stackgan_jax.sample --workdir=DIR --text_file=captions.txt --num_samples=8
    python -m stackgan_jax.sample --workdir=DIR --embeddings=vectors.npy --individual_dir=out/

The workdir's checkpoint says which networks to build and which text encoder conditions them.
The grid shows, per sentence, a caption band, then the Stage-I row (upscaled) and, for a
Stage-II workdir, the Stage-II row, as the reference demo does. BatchNorm runs in inference mode
on the running averages stored in the checkpoint.
"""

from collections.abc import Sequence

import jax
import numpy as np
from absl import app, flags
from etils import epath
from PIL import Image

from stackgan_jax import cli, inference, visualize
from stackgan_jax.errors import BadFileError
from stackgan_jax.text import caption_file, get_encoder


def read_sentences(texts: Sequence[str], text_file: str | None) -> list[str]:
    """The sentences of --text and --text_file, stripped; fails on empty ones.

    Raises:
        app.UsageError: no sentence, or an empty one.
    """
    sentences = [t.strip() for t in texts]
    if text_file:
        sentences += [line.strip() for line in caption_file.read_lines(text_file) if line.strip()]
    if not sentences:
        raise app.UsageError("give --text (repeatable), --text_file or --embeddings")
    if not all(sentences):
        raise app.UsageError("--text must not be empty")
    return sentences


def load_embeddings(path: str) -> np.ndarray:
    """Reads --embeddings: a float `.npy` of [N, text_dim] with finite values.

    Raises:
        BadFileError: the file is not such an array; the message says how it is not.
    """
    try:
        with epath.Path(path).open("rb") as f:
            embeddings = np.load(f, allow_pickle=False)
    except (ValueError, EOFError) as e:
        raise BadFileError(f"{path} is not a .npy array ({e}); write one with np.save") from None
    if embeddings.ndim != 2 or not np.issubdtype(embeddings.dtype, np.floating):
        raise BadFileError(
            f"{path} holds {embeddings.dtype} [{', '.join(map(str, embeddings.shape))}]; expected"
            " float embeddings [N, text_dim], as `python -m stackgan_jax.text.embed` writes"
        )
    bad_rows = np.flatnonzero(~np.isfinite(embeddings).all(axis=1))
    if bad_rows.size:
        raise BadFileError(
            f"{path}: {bad_rows.size} row(s) hold NaN or infinite values, e.g. row {bad_rows[0]}"
        )
    return embeddings


def embed(
    model: inference.TrainedModel, sentences: Sequence[str], weights: str | None
) -> np.ndarray:
    """Embeds sentences with the text encoder the model was trained on.

    Raises:
        MissingWeightsError: the encoder's weights are not installed; the message says how to
            get them.
    """
    encoder = get_encoder(model.text_encoder, weights)
    return encoder.encode(list(sentences))


def sample(
    model: inference.TrainedModel, embeddings: np.ndarray, num_samples: int, seed: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """`num_samples` images per embedding.

    Args:
        model: from `inference.load`.
        embeddings: float32 [S, text_dim].
        num_samples: images per embedding.
        seed: noise seed.

    Returns:
        (Stage-I images [S, num_samples, 64, 64, 3], Stage-II images [S, num_samples, 256,
        256, 3] or None), in [-1, 1].
    """
    repeated = np.repeat(np.asarray(embeddings, np.float32), num_samples, axis=0)
    low, high = inference.generate(model, repeated, jax.random.key(seed))
    shape = (len(embeddings), num_samples)
    low = np.asarray(low).reshape(*shape, *low.shape[1:])
    if high is not None:
        high = np.asarray(high).reshape(*shape, *high.shape[1:])
    return low, high


def _file_stem(text: str, index: int) -> str:
    kept = "".join(c if c.isalnum() else "_" for c in text.lower())[:60].strip("_")
    return f"{index:03d}_{kept}"


def write_individual(
    directory: str, labels: Sequence[str], low: np.ndarray, high: np.ndarray | None
) -> None:
    """One PNG per image; Stage-I images of a Stage-II model get a `_stage1` suffix."""
    out = epath.Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for i, label in enumerate(labels):
        stem = _file_stem(label, i)
        for j in range(low.shape[1]):
            pictures = (
                {"_stage1": low[i, j], "": high[i, j]} if high is not None else {"": low[i, j]}
            )
            for suffix, image in pictures.items():
                with (out / f"{stem}_{j}{suffix}.png").open("wb") as f:
                    Image.fromarray(visualize.to_uint8(image)).save(f, format="PNG")


def _define_flags() -> None:
    """The command line's flags (defined only when run as a program, so modules import freely)."""
    flags.DEFINE_string("workdir", None, "Training workdir to sample from.", required=True)
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
    flags.DEFINE_multi_string("text", [], "A sentence; repeat for several.")
    flags.DEFINE_string("text_file", None, "A file of sentences, one per line.")
    flags.DEFINE_string(
        "embeddings", None, "A .npy of float32 [N, text_dim] embeddings instead of sentences."
    )
    flags.DEFINE_string(
        "text_encoder_weights",
        None,
        "The text encoder's weights (char_cnn_rnn: the .npz of stackgan_jax.text.convert_t7); "
        "default: the encoder's own.",
    )
    flags.DEFINE_integer("num_samples", 4, "Images per sentence.", lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Noise seed; the same seed gives the same images.")
    flags.DEFINE_string(
        "output", None, "Where to write the grid PNG (default: <workdir>/samples/sentences.png)."
    )
    flags.DEFINE_string(
        "individual_dir", None, "Also write each image as <dir>/<sentence>_<sample>[_stage1].png."
    )


def main(argv: Sequence[str]) -> None:
    """Loads the checkpoint, embeds the sentences, writes the grid (and single images)."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    model = inference.load(flags.FLAGS.workdir, flags.FLAGS.step)
    if flags.FLAGS.embeddings:
        embeddings = load_embeddings(flags.FLAGS.embeddings)
        labels = [f"embedding {i}" for i in range(len(embeddings))]
    else:
        labels = read_sentences(flags.FLAGS.text, flags.FLAGS.text_file)
        embeddings = embed(model, labels, flags.FLAGS.text_encoder_weights)
    low, high = sample(model, embeddings, flags.FLAGS.num_samples, flags.FLAGS.seed)
    output = epath.Path(
        flags.FLAGS.output or epath.Path(flags.FLAGS.workdir) / "samples" / "sentences.png"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    rows = [[low[i]] + ([high[i]] if high is not None else []) for i in range(len(labels))]
    with output.open("wb") as f:
        Image.fromarray(visualize.captioned_grid(labels, rows)).save(f, format="PNG")
    generator = " with the moving average of G" if model.uses_ema else ""
    print(
        f"Wrote {output} ({len(labels)} sentences x {low.shape[1]} samples, step {model.step}"
        f"{generator})."
    )
    if flags.FLAGS.individual_dir:
        write_individual(flags.FLAGS.individual_dir, labels, low, high)
        print(f"Wrote single images to {flags.FLAGS.individual_dir}.")


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
