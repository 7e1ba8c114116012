"""Stage-II (256×256) training configs: `--config=configs/stage2.py:NAME`.

The same names as configs/stage1.py. Stage-II starts from a trained Stage-I workdir
(`--config.stage1_workdir`, default `runs/<name>/stage1`), whose generator it keeps frozen.
"""

from stackgan_jax import presets

# name: (global batch, epochs, learning-rate halvings at these Stage-II epochs)
SCHEDULES = {
    # TF reference: constant, then ×0.5 at its epochs 700…1100 counted from its start at 594.
    "birds": (64, 600, (106, 206, 306, 406, 506)),
    "flowers": (64, 600, (106, 206, 306, 406, 506)),
    "birds_pytorch": (64, 600, (106, 206, 306, 406, 506)),
    # StackGAN-Pytorch COCO: 40 per GPU on 2 GPUs, ×0.5 every 20 epochs.
    "coco": (80, 100, presets.every(20, 100)),
    "demo": (16, 10, ()),
    "demo_stackgan": (16, 10, ()),
    "debug": (8, 1, ()),
}


def get_config(name: str = "demo"):
    config = presets.base_config(name, stage=2)
    batch, epochs, decay = SCHEDULES[name]
    config.train.global_batch_size = batch
    config.train.num_epochs = epochs
    config.train.lr_decay_epochs = decay
    # The Stage-I run to start from, and its step (-1: the latest checkpoint).
    config.stage1_workdir = f"runs/{name}/stage1"
    config.stage1_step = -1
    # How the frozen Stage-I generator normalises: 'batch' (batch statistics, as both
    # references; its running averages keep updating) or 'running' (its stored averages).
    config.stage1_bn = "batch"
    if name == "debug":
        config.train.num_steps = 4
        config.log_every_steps = 1
        config.sample_every_steps = 2
        config.checkpoint_every_steps = 2
    elif name == "demo":
        # About 4 minutes on 2 CPU cores. Stage-II keeps StackGAN's learning rate and β1: with
        # Stage-I's faster ones its colours drift and its FID rises (docs/learning.md).
        config.train.num_steps = 100
        config.train.g_learning_rate = config.train.d_learning_rate = 2e-4
        config.train.adam_b1 = 0.5
        config.log_every_steps = 10
        config.sample_every_steps = 50
        config.checkpoint_every_steps = 50
    elif name == "demo_stackgan":
        # A few minutes of Stage-II on 2 CPU cores: enough to run it end to end, not to train it.
        config.train.num_steps = 40
        config.log_every_steps = 10
        config.sample_every_steps = 40
        config.checkpoint_every_steps = 40
    return config
