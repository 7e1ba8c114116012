"""Stage-II (256×256) training configs: `--config=configs/stage2.py:NAME`.

The same names as configs/stage1.py. Stage-II starts from a trained Stage-I workdir
(`--config.stage1_workdir`, default `runs/<name>/stage1`), whose generator it keeps frozen.
"""

from stackgan_jax import presets

# Each preset's Stage-II schedule; its learning-rate halvings count Stage-II epochs.
SCHEDULES = {
    # TF reference: constant, then ×0.5 at its epochs 700…1100 counted from its start at 594.
    "birds": presets.Schedule(64, 600, (106, 206, 306, 406, 506)),
    "flowers": presets.Schedule(64, 600, (106, 206, 306, 406, 506)),
    "birds_pytorch": presets.Schedule(64, 600, (106, 206, 306, 406, 506)),
    # StackGAN-Pytorch COCO: 40 per GPU on 2 GPUs, ×0.5 every 20 epochs.
    "coco": presets.Schedule(80, 100, presets.every(20, 100)),
    # About 4 minutes on 2 CPU cores.
    "demo": presets.Schedule(16, 10, num_steps=100, every_steps=(10, 50, 50)),
    # A few minutes of Stage-II on 2 CPU cores: enough to run it end to end, not to train it.
    "demo_stackgan": presets.Schedule(16, 10, num_steps=40, every_steps=(10, 40, 40)),
    "debug": presets.DEBUG_SCHEDULE,
}


def get_config(name: str = "demo"):
    config = presets.scheduled_config(name, 2, SCHEDULES)
    # The Stage-I run to start from, and its step (-1: the latest checkpoint).
    config.stage1_workdir = f"runs/{name}/stage1"
    config.stage1_step = -1
    # How the frozen Stage-I generator normalises: 'batch' (batch statistics, as both
    # references; its running averages keep updating) or 'running' (its stored averages).
    config.stage1_bn = "batch"
    if name == "demo":
        # Stage-II keeps StackGAN's learning rate and β1: with Stage-I's faster ones its colours
        # drift and its FID rises (docs/learning.md).
        config.train.g_learning_rate = config.train.d_learning_rate = 2e-4
        config.train.adam_b1 = 0.5
    return config
