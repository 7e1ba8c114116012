"""Named tensors of a released file → a Flax generator's `{'params', 'batch_stats'}`.

Each converter describes its file as a list of `Entry`s, one per tensor: the tensor's name in the
file, the Flax variable it becomes and the axis permutation between the two layouts. `assemble`
reads them and checks every tensor against the shapes the config builds, so a wrong file or a
wrong config fails with the name of the tensor at fault.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from stackgan_jax.errors import BadFileError


class ConversionError(BadFileError):
    """A file does not hold the generator the config describes."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One tensor of a released file and the Flax variable it becomes.

    Attributes:
        source: the tensor's name in the file.
        collection: 'params' or 'batch_stats'.
        path: the variable's '/'-separated path in the collection, e.g. 'up8/conv/kernel'.
        axes: `np.transpose` axes from the file's layout to Flax's (None: the same layout).
    """

    source: str
    collection: str
    path: str
    axes: tuple[int, ...] | None = None


def _leaf(tree: Any, collection: str, path: str) -> Any:
    node = tree[collection]
    for key in path.split("/"):
        node = node[key]
    return node


def _set_leaf(tree: dict[str, Any], collection: str, path: str, value: np.ndarray) -> None:
    *parents, leaf = path.split("/")
    node = tree.setdefault(collection, {})
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def assemble(
    entries: list[Entry], tensors: Mapping[str, np.ndarray], abstract_variables: Any, what: str
) -> dict[str, Any]:
    """Builds a network's float32 variables from the named tensors of a file.

    Args:
        entries: every variable of the network, as the file names it.
        tensors: the file's tensors by name (other tensors are ignored here).
        abstract_variables: the network's `{'params', 'batch_stats'}` shapes, as the config
            builds them (`models.generator_shapes`).
        what: the file, as error messages name it.

    Returns:
        `{'params': ..., 'batch_stats': ...}` of NumPy float32 arrays.

    Raises:
        ConversionError: a tensor is missing, or its shape is not the one the config needs.
    """
    variables: dict[str, Any] = {"params": {}, "batch_stats": {}}
    for entry in entries:
        if entry.source not in tensors:
            raise ConversionError(
                f"{what} is not the StackGAN generator this config describes: it has no tensor "
                f"{entry.source!r}."
            )
        value = np.asarray(tensors[entry.source])
        shape = tuple(_leaf(abstract_variables, entry.collection, entry.path).shape)
        # The shape the file would need, in the file's own layout.
        want = shape if entry.axes is None else tuple(shape[a] for a in np.argsort(entry.axes))
        if value.shape != want:
            raise ConversionError(
                f"{what}: tensor {entry.source!r} has shape {value.shape}, but the config needs "
                f"{want} (Flax {entry.collection}/{entry.path} {shape}). Does the config's "
                "architecture and width (gf_dim, num_residual, ...) match the file?"
            )
        if entry.axes is not None:
            value = value.transpose(entry.axes)
        _set_leaf(variables, entry.collection, entry.path, value.astype(np.float32))
    made = jax.tree_util.tree_structure(variables)
    if made != jax.tree_util.tree_structure(abstract_variables):
        # The entries and the model disagree: a mapping that was not updated with the model.
        raise RuntimeError(f"the conversion of {what} does not cover the model's variables")
    return variables
