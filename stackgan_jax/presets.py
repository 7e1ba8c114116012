"""Named presets shared by `configs/stage1.py` and `configs/stage2.py`.

A preset fixes what both stages of one model must agree on: the reference architecture, the
network widths, the dataset and the text encoder (spec §12 for how `tf` and `pytorch` differ).
Each stage's config file adds its own batch size and schedule.
"""

import dataclasses
import math
import os

import ml_collections

from stackgan_jax.errors import ConfigError
from stackgan_jax.evaluation import config as evaluation_config


@dataclasses.dataclass(frozen=True)
class Preset:
    """What both stages of a named configuration share."""

    arch: str
    dataset: str
    text_encoder: str
    text_dim: int
    gf_dim: int
    df_dim: int
    num_residual: int
    condition_dim: int = 128
    z_dim: int = 100
    text_scale: float = 1.0


PRESETS = {
    # The paper's TensorFlow code and hyper-parameters, on the released char-CNN-RNN embeddings.
    "birds": Preset("tf", "stackgan_birds", "char_cnn_rnn", 1024, 128, 64, 4),
    "flowers": Preset("tf", "stackgan_flowers", "char_cnn_rnn", 1024, 128, 64, 4),
    # StackGAN-Pytorch's networks at the birds widths: what the parity tests and the benchmarks
    # compare with ../shared/bench/torch_reference.py.
    "birds_pytorch": Preset("pytorch", "stackgan_birds", "char_cnn_rnn", 1024, 128, 64, 4),
    # StackGAN-Pytorch's COCO configuration.
    "coco": Preset("pytorch", "stackgan_coco", "char_cnn_rnn", 1024, 192, 96, 2),
    # Small `pytorch` networks on the offline procedural bird set with MiniLM embeddings, trained
    # with the opt-in options of DEMO_TRAINING (a CPU run; docs/learning.md).
    "demo": Preset(
        "pytorch", "synthetic_birds", "minilm", 384, 32, 16, 2, condition_dim=64, z_dim=64
    ),
    # The demo's data and widths with StackGAN's own TF recipe: the baseline of docs/learning.md.
    # MiniLM vectors have unit norm, so each of their 384 components is ~0.05 and the CA's
    # N(0, 0.02) layer would start with a mean ~0.02 under unit noise: the text barely reaches
    # G. Scaling by sqrt(384) gives components of unit size, as G and D's inits expect.
    "demo_stackgan": Preset(
        "tf",
        "synthetic_birds",
        "minilm",
        384,
        32,
        16,
        2,
        condition_dim=64,
        z_dim=64,
        text_scale=math.sqrt(384),
    ),
    # Tiny networks for tests.
    "debug": Preset("tf", "synthetic_birds", "minilm", 384, 16, 8, 1, condition_dim=16, z_dim=16),
}


# The demo's departures from StackGAN's recipe (DEVIATIONS.md), chosen by the measurements in
# docs/learning.md: with StackGAN's own recipe the demo's generator ignores the caption.
DEMO_TRAINING = {
    "data.embedding_norm": "standardize",
    "model.d_projection": True,
    "model.d_contrastive": True,
    "model.g_text_modulation": True,
    "model.stage2_residual": True,
    "train.gan_loss": "hinge",
    "train.augment": ("translation",),
    "train.ema_decay": 0.995,
    "train.kl_coeff": 0.2,
    "train.adam_b1": 0.0,
    "train.g_learning_rate": 5e-4,
    "train.d_learning_rate": 1e-3,
}


def preset(name: str) -> Preset:
    """The preset called `name`, with an error that lists the valid names."""
    if name not in PRESETS:
        raise ConfigError(f"Unknown config name {name!r}; choose one of {sorted(PRESETS)}.")
    return PRESETS[name]


def base_config(name: str, stage: int) -> ml_collections.ConfigDict:
    """Fields common to both stages, filled from preset `name`; stage files add the schedule."""
    p = preset(name)
    config = ml_collections.ConfigDict()
    config.name = name
    config.stage = stage
    config.seed = 0

    config.model = ml_collections.ConfigDict()
    config.model.arch = p.arch
    config.model.text_dim = p.text_dim
    config.model.z_dim = p.z_dim
    config.model.condition_dim = p.condition_dim
    config.model.gf_dim = p.gf_dim
    config.model.df_dim = p.df_dim
    config.model.num_residual = p.num_residual
    # Add the projection discriminator's text term to D's conditional logit (not in StackGAN).
    config.model.d_projection = False
    # BatchNorm in D, as both references have it; False leaves every one out (not in StackGAN).
    config.model.d_batch_norm = True
    # D also embeds images and text for XMC-GAN's contrastive loss (train.contrastive_weight).
    config.model.d_contrastive = False
    # Stage-II corrects the enlarged Stage-I image instead of drawing anew (not in StackGAN).
    config.model.stage2_residual = False
    # The Stage-I generator's text condition also modulates each up-block (conditional
    # BatchNorm; not in StackGAN).
    config.model.g_text_modulation = False
    # Computation dtype; 'bfloat16' for mixed precision (parameters, optimiser state, BatchNorm
    # statistics and losses stay float32).
    config.model.dtype = "float32"

    config.data = ml_collections.ConfigDict()
    config.data.dataset = p.dataset
    # TFDS data directory (local path or gs://); None means TFDS's default.
    config.data.data_dir = ml_collections.config_dict.placeholder(str)
    config.data.text_encoder = p.text_encoder
    # What the embeddings become before G and D see them: 'scale' (× data.text_scale, as the
    # references with 1) or 'standardize' (per dimension, by the training split's statistics,
    # which checkpoints keep; see stackgan_jax/embedding_norm.py).
    config.data.embedding_norm = "scale"
    # With 'scale': embeddings are multiplied by this before they reach G or D (1 in the
    # references).
    config.data.text_scale = p.text_scale

    config.train = ml_collections.ConfigDict()
    config.train.global_batch_size = 64
    config.train.num_epochs = 600
    # -1: derive from num_epochs and the dataset size.
    config.train.num_steps = -1
    config.train.learning_rate = 2e-4
    config.train.adam_b1 = 0.5
    config.train.adam_b2 = 0.999
    # Both learning rates are multiplied by lr_decay_factor at each of these epochs.
    config.train.lr_decay_epochs = ()
    config.train.lr_decay_factor = 0.5
    config.train.kl_coeff = 2.0
    # Opt-in departures from the references (DEVIATIONS.md); the defaults are StackGAN's.
    # G's and D's own initial learning rates (None: learning_rate for both).
    config.train.g_learning_rate = ml_collections.config_dict.placeholder(float)
    config.train.d_learning_rate = ml_collections.config_dict.placeholder(float)
    # 'bce' (StackGAN) or 'hinge' (DF-GAN).
    config.train.gan_loss = "bce"
    # DF-GAN's matching-aware gradient penalty on real, matching pairs (DF-GAN: 2; 0: off).
    config.train.ma_gp_weight = 0.0
    # Weight of the image–sentence contrastive loss in D's and G's losses, where
    # model.d_contrastive gives D its contrastive head (XMC-GAN: 1).
    config.train.contrastive_weight = 1.0
    # Differentiable augmentation of every image D sees: any of 'translation', 'cutout'.
    config.train.augment = ()
    # Decay of the moving average of G's weights that sampling and evaluation use (0: none).
    config.train.ema_decay = 0.0

    config.log_every_steps = 50
    config.sample_every_steps = 1000
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 3
    # Profile this many steps after the first few (0: no profiling).
    config.profile_steps = 0

    # Evaluation during training, as `python -m stackgan_jax.evaluate` computes it, of the current
    # generator every `eval.every_steps` steps (0: off), written to TensorBoard as `eval/...`
    # scalars; the fields and their help are in `stackgan_jax/evaluation/config.py`.
    config.eval = evaluation_config.default_config()
    # One image per test caption, up to this many: the same captions and noise every time.
    config.eval.num_samples = 500
    if name == "demo":
        for field, value in DEMO_TRAINING.items():
            section, key = field.split(".")
            # Only fields set above: a misspelt one would otherwise become a new, unused field.
            if key not in config[section]:
                raise KeyError(f"DEMO_TRAINING sets an unknown field {field!r}")
            config[section][key] = value
    return config


@dataclasses.dataclass(frozen=True)
class Schedule:
    """One stage's batch, length and step intervals under a preset name (the config files').

    Attributes:
      global_batch_size: examples per step, over all devices.
      num_epochs: epochs to train, unless `num_steps` is set.
      lr_decay_epochs: epochs at which both learning rates are halved.
      num_steps: steps to train; -1 derives them from `num_epochs` and the dataset size.
      every_steps: (log, sample, checkpoint) every this many steps; None keeps
        `base_config`'s.
    """

    global_batch_size: int
    num_epochs: int
    lr_decay_epochs: tuple[int, ...] = ()
    num_steps: int = -1
    every_steps: tuple[int, int, int] | None = None


# The `debug` preset's schedule in both stages: four steps, with everything every step or two.
DEBUG_SCHEDULE = Schedule(8, 1, num_steps=4, every_steps=(1, 2, 2))


def scheduled_config(
    name: str, stage: int, schedules: dict[str, Schedule]
) -> ml_collections.ConfigDict:
    """`base_config(name, stage)` with the batch, length and intervals of `schedules[name]`."""
    config = base_config(name, stage)
    schedule = schedules[name]
    config.train.global_batch_size = schedule.global_batch_size
    config.train.num_epochs = schedule.num_epochs
    config.train.lr_decay_epochs = schedule.lr_decay_epochs
    config.train.num_steps = schedule.num_steps
    if schedule.every_steps is not None:
        log, sample, checkpoint = schedule.every_steps
        config.log_every_steps = log
        config.sample_every_steps = sample
        config.checkpoint_every_steps = checkpoint
    return config


def every(period: int, last: int) -> tuple[int, ...]:
    """Epochs period, 2·period, … strictly before `last`: a step-decay schedule."""
    return tuple(range(period, last, period))


def default_workdir(config: ml_collections.ConfigDict) -> str:
    """`runs/<config name>/stage<N>`, where a run writes when no --workdir is given."""
    return os.path.join("runs", config.name, f"stage{config.stage}")
