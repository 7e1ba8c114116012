"""Reads Torch7 `.t7` files (Lua torch's `torch.save`) with `torchfile`: no Lua, no torch.

The format holds numbers, strings, booleans, tables and torch objects. `torchfile` turns tensors
and storages into NumPy arrays and every other torch class (`nn` modules among them) into a
`torchfile.TorchObject` that only holds its table of fields; a Lua function is kept as its
bytecode and never run. So reading a file runs nothing from it, whatever it names.

A saved `nn` network is a tree of such objects, each container listing its children in
`modules`; `children`, `modules_of_type` and `single_module` walk it and `check_fields` compares a
module's hyper-parameters with a reference. Each raises `RefusedFileError`, naming what does not
fit.
"""

from __future__ import annotations

import math
import os
import struct
from typing import Any

import torchfile

from stackgan_jax.untrusted.errors import RefusedFileError


def load_t7(
    path: str | os.PathLike[str], *, lua_lists: bool = True, decode_strings: bool = False
) -> Any:
    """Reads the object saved in a `.t7` file.

    Args:
      path: the file.
      lua_lists: turn each Lua table whose keys are 1..n into a list (torchfile's list
        heuristic); without it such tables stay dicts, for `lua_list`.
      decode_strings: decode strings (table keys and values, class names) as UTF-8; by default
        they stay bytes.

    Returns:
      The object: numbers, strings, lists, dicts, NumPy arrays and `torchfile.TorchObject`s.

    Raises:
      FileNotFoundError: `path` does not exist.
      RefusedFileError: the file is not a Torch7 file, or is cut short; the message names it.
    """
    try:
        return torchfile.load(
            str(path), use_list_heuristic=lua_lists, utf8_decode_strings=decode_strings
        )
    except (torchfile.T7ReaderException, struct.error, EOFError, UnicodeDecodeError) as e:
        raise RefusedFileError(f"{path} is not a Torch7 file torchfile can read: {e}") from e


def lua_list(table: dict[int, Any]) -> list[Any]:
    """A Lua array as `load_t7(lua_lists=False)` reads it: {1: a, 2: b} -> [a, b]."""
    return [table[i] for i in range(1, len(table) + 1)]


def typename(obj: object) -> str:
    """Torch class name of an object read by `torchfile`, else its Python type name."""
    if isinstance(obj, torchfile.TorchObject):
        return obj.torch_typename().decode()
    return type(obj).__name__


def children(container: torchfile.TorchObject) -> list[torchfile.TorchObject]:
    """The `modules` list of an `nn.Container`.

    Raises:
      RefusedFileError: if it has none.
    """
    if container["modules"] is None:
        raise RefusedFileError(f"{typename(container)} has no modules list")
    return container["modules"]


def modules_of_type(container: torchfile.TorchObject, kind: str) -> list[torchfile.TorchObject]:
    """The direct children of an `nn.Container` with Torch class `kind`, in order."""
    return [module for module in children(container) if typename(module) == kind]


def single_module(container: torchfile.TorchObject, kind: str) -> torchfile.TorchObject:
    """The one direct child of class `kind`.

    Raises:
      RefusedFileError: if there is not exactly one.
    """
    found = modules_of_type(container, kind)
    if len(found) != 1:
        raise RefusedFileError(f"expected one {kind} in the encoder, found {len(found)}")
    return found[0]


def check_fields(module: torchfile.TorchObject, **expected: float) -> None:
    """Checks hyper-parameters stored on a Torch module against the reference architecture.

    Raises:
      RefusedFileError: naming the first field that differs.
    """
    for field, value in expected.items():
        if module[field] is None or not math.isclose(module[field], value, rel_tol=1e-6):
            raise RefusedFileError(
                f"{typename(module)}.{field} is {module[field]}, the reference has {value}"
            )
