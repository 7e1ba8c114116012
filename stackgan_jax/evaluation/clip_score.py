"""`clip_score`: GALIP's CLIP score of the last stage's images against their captions.

The mean cosine similarity of CLIP ViT-B/32 image and text features, as tobran/GALIP's
`calc_clip_sim` computes it (`metrics.clip_score` says what that involves), by OpenAI's
`ViT-B-32.pt` or Hugging Face's `openai/clip-vit-base-patch32` (`clip_weights`), image i scored
against `context.captions[i]`.
"""

from typing import Any

import ml_collections

from stackgan_jax.evaluation.evaluator import Context, Images, Metric
from stackgan_jax.metrics import clip_score, clip_weights


def make_metric(eval_config: ml_collections.ConfigDict, context: Context) -> Metric:
    """The CLIP score metric; CLIP and its tokenizer are loaded once, here.

    Uses `eval_config.clip_weights` (OpenAI's `.pt` or a Hugging Face directory; None:
    `~/.cache/clip/ViT-B-32.pt`), `eval_config.clip_vocab` (the BPE vocabulary for a `.pt`) and
    `eval_config.batch_size`.

    Raises:
        MissingWeightsError: the weights or the vocabulary are not there; the message says where
            they come from and which flag to set.
        RefusedFileError: the `.pt` is not a TorchScript archive or state dict.
        ClipWeightsError: the weights are not a ViT CLIP's.
    """
    captions = context.image_captions("clip_score")
    model = clip_weights.load_clip(eval_config.clip_weights, eval_config.clip_vocab)
    name = f"stage{context.stage}"
    config = model.config
    described = {
        "protocol": clip_score.PROTOCOL,
        "weights": model.weights,
        "vocab": model.vocab,
        "model": (
            f"ViT-{config.patch_size} {config.image_size}px, vision {config.vision.width}x"
            f"{config.vision.layers}, text {config.text.width}x{config.text.layers}"
        ),
    }

    def metric(images: Images) -> dict[str, Any]:
        score = clip_score.clip_score(model, images[name], captions, eval_config.batch_size)
        return {"stage": name, "clip_score": score, "samples": len(images[name])} | described

    return metric
