"""Stage-I (64×64) training configs: `--config=configs/stage1.py:NAME`.

Names: birds, flowers (the paper's TensorFlow code), birds_pytorch (StackGAN-Pytorch networks at
the birds widths), coco (StackGAN-Pytorch's COCO setup), demo (default; a CPU run on the offline
procedural bird set), debug (tiny, for tests). Any field can be overridden on the command line,
e.g. `--config.train.global_batch_size=128`.
"""

from stackgan_jax import presets

# name: (global batch, epochs, learning-rate halvings at these epochs)
SCHEDULES = {
    # TF reference: ×0.5 at every epoch divisible by 50.
    "birds": (64, 600, presets.every(50, 600)),
    "flowers": (64, 600, presets.every(50, 600)),
    "birds_pytorch": (64, 600, presets.every(50, 600)),
    # StackGAN-Pytorch COCO: 128 per GPU on 2 GPUs, ×0.5 every 20 epochs.
    "coco": (256, 120, presets.every(20, 120)),
    # 1,242 steps on the 1,500 training birds: about 8 minutes on 2 idle CPU cores, where the
    # demo's text alignment and FID level off (docs/learning.md).
    "demo": (32, 27, ()),
    # About 830 steps: 4.3 minutes on 2 idle Xeon CPU cores.
    "demo_stackgan": (32, 18, ()),
    "debug": (8, 1, ()),
}


def get_config(name: str = "demo"):
    config = presets.base_config(name, stage=1)
    batch, epochs, decay = SCHEDULES[name]
    config.train.global_batch_size = batch
    config.train.num_epochs = epochs
    config.train.lr_decay_epochs = decay
    if name == "debug":
        config.train.num_steps = 4
        config.log_every_steps = 1
        config.sample_every_steps = 2
        config.checkpoint_every_steps = 2
    elif name in ("demo", "demo_stackgan"):
        config.log_every_steps = 20
        config.sample_every_steps = 200
        config.checkpoint_every_steps = 200
    return config
