"""`r_precision`: AttnGAN / DM-GAN's R-precision of the last stage's images (protocol `attngan`).

Each generated image's DAMSM image code is compared, by cosine similarity, with the DAMSM
sentence embeddings of its own caption and of 99 captions drawn from test images of other
classes; the image scores a hit when its own caption ranks first. The hits are shuffled, cut into
10 groups, and the report is the mean and standard deviation of the groups' hit rates
(`metrics.r_precision` has the details and sources). DM-GAN reports 72.31 ± 0.91 % on CUB and
88.56 ± 0.28 % on COCO, AttnGAN 67.82 ± 4.43 % and 85.47 ± 3.69 %, all over 30,000 images.

Everything textual is prepared here, once: the captions of the generated images (the evaluator's
test captions, in order) and every test caption that can be drawn as a mismatch are tokenised by
the DAMSM vocabulary (`damsm_captions`), cut to `damsm_words_num` words as the reference does,
and embedded (`damsm_text`); the draws use `context.seed`. Per call only the images are encoded
(`damsm_image`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import ml_collections
import numpy as np

from stackgan_jax.errors import BadFileError, ConfigError
from stackgan_jax.evaluation.evaluator import Context, Images, Metric, caption_images
from stackgan_jax.metrics import damsm_captions, damsm_text
from stackgan_jax.metrics import r_precision as r_precision_lib
from stackgan_jax.weights import MissingWeightsError

PROTOCOL = "attngan"
_RELEASE = "AttnGAN's DAMSM release (Google Drive, linked from the AttnGAN and DM-GAN READMEs)"
_WHERE = {
    "damsm_text_encoder": (
        f"DAMSMencoders/bird/text_encoder200.pth (COCO: coco/text_encoder100.pth) of {_RELEASE}"
    ),
    "damsm_image_encoder": (
        f"DAMSMencoders/bird/image_encoder200.pth (COCO: coco/image_encoder100.pth) of {_RELEASE}"
    ),
    "damsm_captions": (
        "captions.pickle of AttnGAN's birds.zip (COCO: coco.zip) metadata (Google Drive, linked"
        " from the AttnGAN README)"
    ),
}


def weight_paths(eval_config: ml_collections.ConfigDict) -> dict[str, str]:
    """The three files R-precision needs, checked before anything is read.

    The image encoder defaults to the text encoder's path with `text_encoder` replaced by
    `image_encoder`, as DM-GAN's `trainer.py` finds it.

    Returns:
        {flag name: path} for `damsm_text_encoder`, `damsm_image_encoder`, `damsm_captions`.

    Raises:
        MissingWeightsError: naming every missing file, where it comes from, and its flag.
    """
    paths = {name: eval_config.get(name) for name in _WHERE}
    if paths["damsm_text_encoder"] and not paths["damsm_image_encoder"]:
        paths["damsm_image_encoder"] = paths["damsm_text_encoder"].replace(
            "text_encoder", "image_encoder"
        )
    problems = [
        f"--{name}: {'no file at ' + path if path else 'not set'}; it is {_WHERE[name]}"
        for name, path in paths.items()
        if not (path and os.path.isfile(path))
    ]
    if problems:
        raise MissingWeightsError(
            "r_precision needs AttnGAN's DAMSM encoders and vocabulary, which are never"
            " downloaded: " + " | ".join(problems)
        )
    return paths


@dataclasses.dataclass(frozen=True)
class Trials:
    """The text side of every trial, embedded.

    Attributes:
        true_codes: float32 [N, D], each generated image's caption.
        codes: float32 [M, D], the sentence embeddings the mismatches index.
        mismatched: int [N, 99] rows of `codes`.
    """

    true_codes: np.ndarray
    codes: np.ndarray
    mismatched: np.ndarray


def _embed(
    encoder: damsm_text.LoadedTextEncoder,
    captions: list[list[int]],
    words_num: int,
    rng: np.random.Generator,
    batch_size: int = 512,
) -> np.ndarray:
    """Sentence embeddings of captions padded or cut by `pad_caption`, in batches of one shape."""
    codes = np.zeros((len(captions), encoder.module.hidden), np.float32)
    for start in range(0, len(captions), batch_size):
        chunk = [
            damsm_captions.pad_caption(c, words_num, rng) for c in captions[start:][:batch_size]
        ]
        indices = np.zeros((batch_size, words_num), np.int32)
        lengths = np.ones(batch_size, np.int32)  # padding rows: one `<end>`, thrown away
        indices[: len(chunk)] = [padded for padded, _ in chunk]
        lengths[: len(chunk)] = [length for _, length in chunk]
        codes[start : start + len(chunk)] = encoder.encode(indices, lengths)[1][: len(chunk)]
    return codes


def _classes(labels: np.ndarray) -> np.ndarray:
    """Each test image's class; an image without one is its own class (COCO, as in DM-GAN)."""
    return np.where(labels >= 0, labels, -1 - np.arange(len(labels)))


def prepare_trials(
    context: Context,
    wordtoix: dict[str, int],
    encoder: damsm_text.LoadedTextEncoder,
    words_num: int,
    rng: np.random.Generator,
) -> Trials:
    """Tokenises, draws and embeds the captions of every trial (see the module docstring).

    Raises:
        ConfigError: there is no test split, no captions, a caption that is not a test caption
            (`evaluator.caption_images`), or one without a word of the vocabulary.
    """
    source = context.test_split("r_precision")
    captions = context.image_captions("r_precision")
    own_images = caption_images(source, captions)
    true = [damsm_captions.caption_indices(caption, wordtoix) for caption in captions]
    for caption, indices in zip(captions, true, strict=True):
        if not indices:
            raise ConfigError(
                f"no word of {caption!r} is in the DAMSM vocabulary: is --damsm_captions the"
                " vocabulary of this dataset's DAMSM?"
            )
    # The pool: each test image's captions that keep a word, as AttnGAN's `load_captions` keeps.
    per_image = [
        [ids for ids in (damsm_captions.caption_indices(c, wordtoix) for c in captions) if ids]
        for captions in source.captions
    ]
    drawable = np.array([i for i, captions in enumerate(per_image) if captions])
    counts = np.array([len(per_image[i]) for i in drawable])
    pool = [caption for i in drawable for caption in per_image[i]]
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    classes = _classes(np.asarray(source.labels))
    images, captions = r_precision_lib.draw_mismatched(
        classes[own_images], classes[drawable], counts, rng
    )
    rows = first[images] + captions
    true_codes = _embed(encoder, true, words_num, rng)
    # A caption longer than words_num keeps a random subset each time it is drawn, as in
    # `get_caption`; the others are embedded once.
    lengths = np.array([len(caption) for caption in pool])
    long = lengths[rows] > words_num
    redrawn = [pool[row] for row in rows[long]]
    codes = np.concatenate(
        [_embed(encoder, pool, words_num, rng), _embed(encoder, redrawn, words_num, rng)]
    )
    rows[long] = len(pool) + np.arange(len(redrawn))
    return Trials(true_codes, codes, rows)


def make_metric(eval_config: ml_collections.ConfigDict, context: Context) -> Metric:
    """The R-precision metric; the DAMSM encoders are loaded and the captions embedded here.

    Uses `eval_config.damsm_text_encoder`, `damsm_image_encoder` (default: beside the text
    encoder), `damsm_captions` and `damsm_words_num`.

    Raises:
        MissingWeightsError: a DAMSM file is missing; the message says which, where it comes
            from, and its flag.
        RefusedFileError: a file that is not what its flag names.
        ValueError: the text encoder and the vocabulary do not belong together.
    """
    paths = weight_paths(eval_config)
    # Before the encoders load: a context that cannot give trials fails at once.
    context.test_split("r_precision")
    context.image_captions("r_precision")
    # Imported here: it needs the torchvision Inception trunk, which no other metric loads.
    from stackgan_jax.metrics import damsm_image

    vocabulary = damsm_captions.load_captions(paths["damsm_captions"])
    text_encoder = damsm_text.load_text_encoder(paths["damsm_text_encoder"])
    if text_encoder.module.num_words != vocabulary.num_words:
        raise BadFileError(
            f"{paths['damsm_text_encoder']} embeds {text_encoder.module.num_words} words but"
            f" {paths['damsm_captions']} has {vocabulary.num_words}: they are not one DAMSM's"
        )
    image_encoder = damsm_image.load_image_encoder(paths["damsm_image_encoder"])
    words_num = eval_config.damsm_words_num
    trials = prepare_trials(
        context, vocabulary.wordtoix, text_encoder, words_num, np.random.default_rng(context.seed)
    )
    name = f"stage{context.stage}"
    described = {
        "protocol": PROTOCOL,
        "mismatched": r_precision_lib.MISMATCHED,
        "groups": r_precision_lib.GROUPS,
        "words_num": words_num,
        "text_encoder": paths["damsm_text_encoder"],
        "image_encoder": paths["damsm_image_encoder"],
        "captions": paths["damsm_captions"],
    }

    def metric(images: Images) -> dict[str, Any]:
        generated = images[name]
        if len(generated) != len(trials.true_codes):
            raise ValueError(
                f"r_precision was prepared for {len(trials.true_codes)} images, got"
                f" {len(generated)}"
            )
        hits = r_precision_lib.pooled_hits(
            image_encoder.image_codes(generated), trials.true_codes, trials.codes, trials.mismatched
        )
        mean, std = r_precision_lib.grouped_mean_std(hits, np.random.default_rng(context.seed))
        report = {"stage": name, "r_precision": mean, "std": std, "trials": len(hits)}
        return report | described

    return metric
