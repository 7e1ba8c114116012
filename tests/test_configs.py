"""Configs: every preset builds, the CLI convention works, bad names fail clearly."""

import pytest
from absl import flags
from ml_collections import config_flags

from configs import stage1, stage2
from stackgan_jax import presets

NAMES = ["birds", "flowers", "birds_pytorch", "coco", "demo", "demo_stackgan", "debug"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("module", [stage1, stage2])
def test_every_preset_builds(module, name):
    config = module.get_config(name)
    assert config.name == name and config.stage == (1 if module is stage1 else 2)
    assert config.model.arch in ("tf", "pytorch")
    assert config.train.global_batch_size > 0
    assert config.eval.every_steps == 0  # evaluation during training is opt-in


def test_default_is_demo_and_reference_hyperparameters():
    assert stage1.get_config().name == "demo"
    birds1, birds2 = stage1.get_config("birds"), stage2.get_config("birds")
    assert birds1.train.lr_decay_epochs == tuple(range(50, 600, 50))
    assert birds2.train.lr_decay_epochs == (106, 206, 306, 406, 506)
    assert (birds1.train.adam_b1, birds1.train.learning_rate, birds1.train.kl_coeff) == (
        0.5,
        2e-4,
        2.0,
    )
    coco = stage1.get_config("coco")
    assert (coco.model.gf_dim, coco.model.df_dim, coco.model.num_residual) == (192, 96, 2)
    assert coco.train.lr_decay_epochs == (20, 40, 60, 80, 100)
    assert stage1.get_config("birds_pytorch").model.arch == "pytorch"
    assert stage1.get_config("demo").model.text_dim == 384


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="birds_pytorch"):
        stage1.get_config("birdz")


def test_config_flag_with_name_and_override():
    argv = [
        "prog",
        "--config=configs/stage2.py:flowers",
        "--config.train.global_batch_size=32",
        "--config.stage1_bn=running",
    ]
    flag_values = flags.FlagValues()
    # Override flags are registered from the command line when the flag is defined.
    config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv)
    flag_values(argv)
    config = flag_values.config
    assert config.name == "flowers" and config.train.global_batch_size == 32
    assert config.stage1_bn == "running"
    assert presets.default_workdir(config) == "runs/flowers/stage2"


@pytest.mark.parametrize("module", [stage1, stage2])
def test_demo_departs_from_the_reference_recipe_only_in_its_listed_options(module):
    """`demo` is `birds_pytorch`'s recipe plus DEMO_TRAINING; everything else is the preset's."""
    demo, reference = module.get_config("demo"), module.get_config("birds_pytorch")
    changed = {
        f"{section}.{key}"
        for section in ("model", "data", "train")
        for key in reference[section]
        if demo[section][key] != reference[section][key]
    }
    sized = {"model.gf_dim", "model.df_dim", "model.num_residual", "model.text_dim"}
    sized |= {"model.z_dim", "model.condition_dim", "data.dataset", "data.text_encoder"}
    sized |= {"train.global_batch_size", "train.num_epochs", "train.lr_decay_epochs"}
    sized |= {"train.num_steps"}
    expected = set(presets.DEMO_TRAINING)
    if module is stage2:
        # Stage-II goes back to StackGAN's β1 (and its learning rate, set explicitly).
        expected -= {"train.adam_b1"}
        assert (demo.train.g_learning_rate, demo.train.d_learning_rate) == (2e-4, 2e-4)
    assert changed - sized == expected
    assert demo.data.embedding_norm == "standardize" and demo.train.augment == ("translation",)
