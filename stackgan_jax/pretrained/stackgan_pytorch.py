"""StackGAN-Pytorch generator state dicts (`netG_epoch_*.pth`) → the `pytorch` architecture.

StackGAN-Pytorch saves `netG.state_dict()`: `STAGE1_G`'s for Stage-I, and for Stage-II
`STAGE2_G`'s, which holds the frozen Stage-I generator under `STAGE1_G.`. The names below are its
modules' (`code/model.py`); the indices are positions in its `nn.Sequential`s:

| Flax module            | StackGAN-Pytorch module                  | kind                       |
|------------------------|------------------------------------------|----------------------------|
| Stage-I `ca/fc`        | `ca_net.fc`                              | Linear with bias           |
| `fc`, `fc_bn`          | `fc.0`, `fc.1`                           | Linear (no bias), BN1d     |
| `up8` … `up64`         | `upsample1` … `upsample4` (`.1` conv, `.2` BN) |                      |
| `to_image`             | `img.0`                                  | conv                       |
| Stage-II `ca/fc`       | `ca_net.fc`                              | Linear with bias           |
| `encode1`              | `encoder.0`                              | conv                       |
| `encode2`, `encode3`   | `encoder.2`/`.3`, `encoder.5`/`.6`       | conv, BN                   |
| `joint`                | `hr_joint.0`/`.1`                        | conv, BN                   |
| `res{r+1}/conv1`/`conv2` | `residual.{r}.block.0`/`.1`, `.3`/`.4` | conv, BN                   |
| `up32` … `up256`       | `upsample1` … `upsample4`                |                            |
| `to_image`             | `img.0`                                  | conv                       |

Conv kernels go from OIHW to HWIO and Linear weights from (out, in) to (in, out). BatchNorm's
`weight`, `bias`, `running_mean`, `running_var` become `scale`, `bias`, `mean`, `var`; its
`num_batches_tracked` counter (torch >= 0.4.1) has no counterpart and is skipped. The Stage-I FC
output is viewed as NCHW in the reference, which `Stage1GeneratorPyTorch` keeps, so the FC
weights load as they are.
"""

import os
from typing import Any

import ml_collections

from stackgan_jax import models
from stackgan_jax.pretrained.mapping import ConversionError, Entry, assemble
from stackgan_jax.untrusted import torch_pickle

# Flax module path → (kind, torch module name): 'conv' (weight only), 'conv_bias' (weight and
# bias), 'dense' (Linear with bias), 'linear' (Linear without bias), 'bn' (BatchNorm).
Layout = dict[str, tuple[str, str]]

STAGE1_PREFIX = "STAGE1_G."
_OIHW_TO_HWIO = (2, 3, 1, 0)
_OUT_IN_TO_IN_OUT = (1, 0)


def block(path: str, conv: str, bn: str | None = None, kind: str = "conv") -> Layout:
    """Layout of a convolution (and its BatchNorm) at Flax module `path`/conv (`path`/bn)."""
    layout = {f"{path}/conv": (kind, conv)}
    if bn is not None:
        layout[f"{path}/bn"] = ("bn", bn)
    return layout


def stage1_generator_layout() -> Layout:
    """`STAGE1_G` → `Stage1GeneratorPyTorch`."""
    layout = {"ca/fc": ("dense", "ca_net.fc"), "fc": ("linear", "fc.0"), "fc_bn": ("bn", "fc.1")}
    for i, size in enumerate((8, 16, 32, 64)):
        layout |= block(f"up{size}", f"upsample{i + 1}.1", f"upsample{i + 1}.2")
    return layout | block("to_image", "img.0")


def stage2_generator_layout(num_residual: int) -> Layout:
    """`STAGE2_G` (without its `STAGE1_G`) → `Stage2Generator`."""
    layout = {"ca/fc": ("dense", "ca_net.fc")}
    layout |= block("encode1", "encoder.0") | block("encode2", "encoder.2", "encoder.3")
    layout |= block("encode3", "encoder.5", "encoder.6")
    layout |= block("joint", "hr_joint.0", "hr_joint.1")
    for r in range(num_residual):
        layout |= block(f"res{r + 1}/conv1", f"residual.{r}.block.0", f"residual.{r}.block.1")
        layout |= block(f"res{r + 1}/conv2", f"residual.{r}.block.3", f"residual.{r}.block.4")
    for i, size in enumerate((32, 64, 128, 256)):
        layout |= block(f"up{size}", f"upsample{i + 1}.1", f"upsample{i + 1}.2")
    return layout | block("to_image", "img.0")


def entries(layout: Layout, prefix: str = "") -> list[Entry]:
    """Every tensor of `layout`, named `prefix` + module name + '.weight' etc."""
    result = []
    for path, (kind, module) in layout.items():
        name = f"{prefix}{module}"
        if kind == "bn":
            result += [
                Entry(f"{name}.weight", "params", f"{path}/scale"),
                Entry(f"{name}.bias", "params", f"{path}/bias"),
                Entry(f"{name}.running_mean", "batch_stats", f"{path}/mean"),
                Entry(f"{name}.running_var", "batch_stats", f"{path}/var"),
            ]
            continue
        is_conv = kind in ("conv", "conv_bias")
        axes = _OIHW_TO_HWIO if is_conv else _OUT_IN_TO_IN_OUT
        result.append(Entry(f"{name}.weight", "params", f"{path}/kernel", axes))
        if kind in ("conv_bias", "dense"):
            result.append(Entry(f"{name}.bias", "params", f"{path}/bias"))
    return result


def variables(
    state: dict[str, Any], layout: Layout, prefix: str, abstract_variables: Any, what: str
) -> dict[str, Any]:
    """`{'params', 'batch_stats'}` of one network from a state dict (see `mapping.assemble`)."""
    return assemble(entries(layout, prefix), state, abstract_variables, what)


def _check_stage(state: dict[str, Any], stage: int, what: str) -> None:
    """Fails early, with the fix, when the file is the other stage's generator."""
    holds_stage1 = any(name.startswith(STAGE1_PREFIX) for name in state)
    if stage == 1 and holds_stage1:
        raise ConversionError(
            f"{what} is a Stage-II generator (it holds {STAGE1_PREFIX}*): convert it with a "
            "Stage-II config (configs/stage2.py:NAME); the workdir then holds its Stage-I "
            "generator too."
        )
    if stage == 2 and not holds_stage1 and "fc.0.weight" in state:
        raise ConversionError(
            f"{what} is a Stage-I generator: convert it with a Stage-I config "
            "(configs/stage1.py:NAME)."
        )


def generator_variables(
    path: str | os.PathLike[str], config: ml_collections.ConfigDict
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Reads a StackGAN-Pytorch generator file into the variables `config` builds.

    Args:
        path: `netG_epoch_*.pth` (any torch version's `torch.save`, read without torch).
        config: a `pytorch`-architecture training config; `config.stage` says which generator
            the file must hold.

    Returns:
        (the stage's generator variables, the Stage-I generator's for Stage-II or None).

    Raises:
        FileNotFoundError: no file at `path`.
        stackgan_jax.untrusted.RefusedFileError: not a `torch.save` state dict, or one whose
            pickle names a global a state dict never needs.
        ConversionError: a tensor is missing or unexpected, or has the wrong shape.
    """
    what = os.fspath(path)
    state = torch_pickle.load_state_dict(path)
    stage, model = config.stage, config.model
    _check_stage(state, stage, what)
    # (name prefix, layout, stage of the network) of each generator in the file.
    if stage == 1:
        networks = [("", stage1_generator_layout(), 1)]
    else:
        networks = [
            ("", stage2_generator_layout(model.num_residual), 2),
            (STAGE1_PREFIX, stage1_generator_layout(), 1),
        ]
    converted = [
        variables(state, layout, prefix, models.generator_shapes(model, net_stage), what)
        for prefix, layout, net_stage in networks
    ]
    used = {e.source for prefix, layout, _ in networks for e in entries(layout, prefix)}
    unexpected = [n for n in state if n not in used and not n.endswith(".num_batches_tracked")]
    if unexpected:
        raise ConversionError(
            f"{what} holds tensors this config's generator does not have, the first is "
            f"{unexpected[0]!r}. Does the config (num_residual, stage) match the file?"
        )
    return converted[0], converted[1] if stage == 2 else None
