"""Stage-I (64×64) training configs: `--config=configs/stage1.py:NAME`.

Names: birds, flowers (the paper's TensorFlow code), birds_pytorch (StackGAN-Pytorch networks at
the birds widths), coco (StackGAN-Pytorch's COCO setup), demo (default; a CPU run on the offline
procedural bird set), debug (tiny, for tests). Any field can be overridden on the command line,
e.g. `--config.train.global_batch_size=128`.
"""

from stackgan_jax import presets

SCHEDULES = {
    # TF reference: ×0.5 at every epoch divisible by 50.
    "birds": presets.Schedule(64, 600, presets.every(50, 600)),
    "flowers": presets.Schedule(64, 600, presets.every(50, 600)),
    "birds_pytorch": presets.Schedule(64, 600, presets.every(50, 600)),
    # StackGAN-Pytorch COCO: 128 per GPU on 2 GPUs, ×0.5 every 20 epochs.
    "coco": presets.Schedule(256, 120, presets.every(20, 120)),
    # 1,242 steps on the 1,500 training birds: about 8 minutes on 2 idle CPU cores, where the
    # demo's text alignment and FID level off (docs/learning.md).
    "demo": presets.Schedule(32, 27, every_steps=(20, 200, 200)),
    # About 830 steps: 4.3 minutes on 2 idle Xeon CPU cores.
    "demo_stackgan": presets.Schedule(32, 18, every_steps=(20, 200, 200)),
    "debug": presets.DEBUG_SCHEDULE,
}


def get_config(name: str = "demo"):
    return presets.scheduled_config(name, 1, SCHEDULES)
