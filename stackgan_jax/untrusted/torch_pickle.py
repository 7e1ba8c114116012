"""Reads PyTorch's pickles with NumPy only: no torch, and no code run from the file.

Two kinds of file are read:

* `.pth` state dicts (`load_state_dict`), as `torch.save(model.state_dict(), path)` writes them;
* TorchScript modules (`read_torchscript`), as `torch.jit.save` writes them: the tree of modules
  with their parameters, buffers and plain attributes, not their code.

Both pickle every tensor as a call of `torch._utils._rebuild_tensor_v2` (torch < 0.4:
`_rebuild_tensor`) on (storage, offset, size, stride, ...), the storage being a "persistent id"
`('storage', <storage class>, key, location, numel[, view])`. The storages' bytes live outside the
pickle, in one of two containers:

* zip (every TorchScript file, and state dicts of torch >= 1.6, its default since):
  `<name>/data.pkl` is the pickle, `<name>/data/<key>` the bytes of each storage,
  `<name>/byteorder` "little" or "big" (absent: little). A TorchScript zip also holds the modules'
  code, under `<name>/code/`, which is never read.
* legacy (state dicts of torch < 1.6, e.g. StackGAN-Pytorch's 2018 release, or
  `_use_new_zipfile_serialization=False`): five pickles in a row (a magic number, the protocol
  version 1001, system information with the byte order, the state dict, the list of storage
  keys), then per key an int64 element count and the storage's bytes.

A pickle may name any importable callable and have the unpickler call it, so these pickles may
name only what their kind of file needs, and every other global is refused before anything is
called. Apart from `OrderedDict` itself, the allowed names resolve to stand-ins here:

* `collections.OrderedDict` (a state dict, its `_metadata`, a tensor's empty hooks);
* `torch._utils._rebuild_tensor_v2` and `torch._utils._rebuild_tensor`, which copy the tensor's
  values out of its storage's bytes;
* the typed storage classes `torch.<Type>Storage` and `torch.cuda.<Type>Storage` of numeric
  types, which only give the element dtype (`_STORAGE_DTYPES`, one table for both kinds of file);
* in TorchScript files only, the module classes `__torch__.*`, each of which becomes an inert
  `ScriptObject` subclass that only holds the pickled attributes, and
  `torch.jit._pickle.build_intlist`, which becomes `list`.

Tensors come back as NumPy arrays with the storage's dtype, the tensor's shape and its strides
and offset into the storage (so views sharing one storage read right).
"""

import collections
import dataclasses
import functools
import io
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from typing import Any, BinaryIO

import jax.numpy as jnp
import numpy as np

from stackgan_jax.untrusted.errors import RefusedFileError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# Storage type name (without "Storage") → element dtype; the bytes are little-endian.
_STORAGE_DTYPES = {
    "Double": np.dtype("<f8"),
    "Float": np.dtype("<f4"),
    "Half": np.dtype("<f2"),
    "BFloat16": np.dtype(jnp.bfloat16),
    "Long": np.dtype("<i8"),
    "Int": np.dtype("<i4"),
    "Short": np.dtype("<i2"),
    "Char": np.dtype("i1"),
    "Byte": np.dtype("u1"),
    "Bool": np.dtype("?"),
}


@dataclasses.dataclass(frozen=True)
class _StorageType:
    """Stands for a `torch.<Type>Storage` class named in the pickle."""

    dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class _Storage:
    """A storage a tensor points at: `count` elements from `start` of the file's storage `key`.

    `start` and `count` differ from (0, the whole storage) only for the legacy format's storage
    views.
    """

    key: str
    dtype: np.dtype
    start: int
    count: int


@dataclasses.dataclass(frozen=True)
class _TensorRef:
    """A tensor as the pickle describes it, before its storage's bytes are read."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


class ScriptObject:
    """An instance of a TorchScript class (`__torch__.*`) as unpickled: its attributes only."""

    type_name = ""

    def attributes(self) -> dict[str, Any]:
        """The pickled attributes (`training`, sub-modules, tensors, ints, lists)."""
        return vars(self)


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
} | {
    (module, f"{name}Storage"): _StorageType(dtype)
    for module in ("torch", "torch.cuda")
    for name, dtype in _STORAGE_DTYPES.items()
}
_REBUILD_TENSOR = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")}
_STATE_DICT_GLOBALS = (
    "a PyTorch state dict names only OrderedDict, tensor rebuilding and numeric storage types"
)
_TORCHSCRIPT_GLOBALS = (
    "a TorchScript file names only its module classes, int lists, OrderedDict, tensor rebuilding"
    " and numeric storage types"
)


def _to_array(tensor: _TensorRef, storage_bytes: bytes) -> np.ndarray:
    """A tensor's values: a strided read of its storage, copied into a new array."""
    storage = tensor.storage
    itemsize = storage.dtype.itemsize
    if len(storage_bytes) < (storage.start + storage.count) * itemsize:
        raise RefusedFileError(f"storage {storage.key} is shorter than its tensors need")
    flat = np.frombuffer(storage_bytes, storage.dtype, storage.count, storage.start * itemsize)
    if 0 in tensor.shape:
        return np.zeros(tensor.shape, storage.dtype)
    extent = sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride, strict=True))
    last = tensor.offset + extent
    if tensor.offset < 0 or min(tensor.stride, default=0) < 0 or last >= storage.count:
        raise RefusedFileError(f"a tensor reaches outside its storage {storage.key}")
    view = np.lib.stride_tricks.as_strided(
        flat[tensor.offset :],
        tensor.shape,
        [s * itemsize for s in tensor.stride],
        writeable=False,
    )
    return np.array(view)


class _TorchUnpickler(pickle.Unpickler):
    """Resolves only the globals of a state dict or TorchScript pickle.

    Storages become `_Storage` descriptions. Tensors become NumPy arrays when the storages' bytes
    can be read while unpickling (zip files), else `_TensorRef`s to be read afterwards (the legacy
    format stores the bytes after the pickle).
    """

    def __init__(
        self,
        file: BinaryIO,
        read_storage: Callable[[str], bytes] | None = None,
        torchscript: bool = False,
    ):
        # Python 2 wrote `str` keys as bytes; latin-1 turns them into `str` unchanged.
        super().__init__(file, encoding="latin1")
        # Tensors that share a storage read its bytes once.
        self._read_storage = None if read_storage is None else functools.cache(read_storage)
        self._torchscript = torchscript
        self._script_classes: dict[str, type[ScriptObject]] = {}

    def find_class(self, module: str, name: str) -> Any:
        """Returns an allowed stand-in, refusing every other global before anything is called.

        Raises:
            RefusedFileError: `module.name` is not on the allow-list of this kind of file.
        """
        if (module, name) in _REBUILD_TENSOR:
            return self._rebuild_tensor
        if self._torchscript and (module == "__torch__" or module.startswith("__torch__.")):
            qualified = f"{module}.{name}"
            if qualified not in self._script_classes:
                self._script_classes[qualified] = type(
                    name, (ScriptObject,), {"type_name": qualified}
                )
            return self._script_classes[qualified]
        if self._torchscript and (module, name) == ("torch.jit._pickle", "build_intlist"):
            return list
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            allowed = _TORCHSCRIPT_GLOBALS if self._torchscript else _STATE_DICT_GLOBALS
            raise RefusedFileError(f"refusing to load global {module}.{name}: {allowed}") from None

    def persistent_load(self, pid: Any) -> _Storage:
        """`('storage', storage type, key, location, numel[, view])` → a `_Storage`."""
        if not (
            isinstance(pid, tuple)
            and len(pid) in (5, 6)
            and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)
            and isinstance(pid[4], int)
        ):
            raise RefusedFileError(f"unexpected persistent id {pid!r}: not a tensor storage")
        _, storage_type, key, _, numel, *view = pid
        if view and view[0] is not None:
            # Legacy storage views: (view key, offset, size) into the root storage `key`.
            _, start, count = view[0]
            return _Storage(str(key), storage_type.dtype, int(start), int(count))
        return _Storage(str(key), storage_type.dtype, 0, numel)

    def _rebuild_tensor(
        self, storage: Any, storage_offset: Any, size: Any, stride: Any, *unused: Any
    ) -> np.ndarray | _TensorRef:
        """Stands in for `torch._utils._rebuild_tensor[_v2]`; the extra v2 arguments are ignored."""
        del unused  # requires_grad, backward hooks and metadata do not change the values.
        if (
            not isinstance(storage, _Storage)
            or not isinstance(size, tuple)
            or not isinstance(stride, tuple)
            or len(size) != len(stride)
            or not all(isinstance(x, int) for x in (storage_offset, *size, *stride))
        ):
            raise RefusedFileError("a tensor in the file is not (storage, offset, size, stride)")
        tensor = _TensorRef(storage, storage_offset, size, stride)
        if self._read_storage is None:
            return tensor
        return _to_array(tensor, self._read_storage(storage.key))


def _state_dict(path: str, obj: Any, tensor_type: type) -> dict[str, Any]:
    """`obj` if it is a state dict: a mapping of names to tensors (arrays or `_TensorRef`s)."""
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, tensor_type) for k, v in obj.items()
    ):
        raise RefusedFileError(
            f"{path} does not hold a state dict (a mapping of names to tensors), as "
            "torch.save(model.state_dict(), f) writes"
        )
    return dict(obj)


def _load_zip(path: str, torchscript: bool) -> Any:
    """The unpickled `data.pkl` of a zip container, its tensors read."""
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pickles) != 1:
            kind = "TorchScript" if torchscript else "torch.save"
            raise RefusedFileError(f"{path} is a zip file but not a {kind} archive")
        prefix = pickles[0].removesuffix("data.pkl")
        byteorder = f"{prefix}byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder) != b"little":
            raise RefusedFileError(f"{path} was written on a big-endian machine")
        return _TorchUnpickler(
            io.BytesIO(archive.read(pickles[0])),
            lambda key: archive.read(f"{prefix}data/{key}"),
            torchscript,
        ).load()


def _unpickle(file: BinaryIO) -> Any:
    """The next pickle of a legacy file, its tensors left as `_TensorRef`s."""
    return _TorchUnpickler(file).load()


def _unpickle_whole(file: BinaryIO, path: str) -> Any:
    """`_unpickle` where the file is known to be a legacy one, so that an early end means cut."""
    try:
        return _unpickle(file)
    except RefusedFileError:
        raise
    except (EOFError, pickle.UnpicklingError) as e:
        if isinstance(e, EOFError) or "truncated" in str(e):
            raise _incomplete(path, file.tell(), "of its pickles") from e
        raise


def _incomplete(path: str, end: int, short_of: str) -> RefusedFileError:
    return RefusedFileError(
        f"{path} is incomplete: it ends at byte {end:,}, short {short_of} (an interrupted"
        " download or copy?); get the file again"
    )


def _load_legacy(path: str) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        try:
            magic = _unpickle(f)
        except (pickle.UnpicklingError, EOFError, ValueError) as e:
            raise RefusedFileError(f"{path} is neither a torch.save zip nor a legacy file") from e
        if magic != _LEGACY_MAGIC:
            raise RefusedFileError(f"{path} is not a torch.save file")
        if _unpickle_whole(f, path) != _LEGACY_PROTOCOL:
            raise RefusedFileError(f"{path} uses an unknown legacy torch.save protocol")
        if not _unpickle_whole(f, path).get("little_endian", True):
            raise RefusedFileError(f"{path} was written on a big-endian machine")
        tensors = _state_dict(path, _unpickle_whole(f, path), _TensorRef)
        # The storages follow in the order of this key list, each as an int64 element count and
        # its bytes; the element size comes from the tensors that use the storage.
        itemsizes = {t.storage.key: t.storage.dtype.itemsize for t in tensors.values()}
        data = {}
        for key in _unpickle_whole(f, path):
            if key not in itemsizes:
                raise RefusedFileError(f"{path} stores a storage {key} that no tensor uses")
            (count,) = struct.unpack("<q", _read_exactly(f, 8, path))
            data[key] = _read_exactly(f, count * itemsizes[key], path)
        return {name: _to_array(t, data[t.storage.key]) for name, t in tensors.items()}


def _read_exactly(file: BinaryIO, count: int, path: str) -> bytes:
    """The next `count` bytes of a legacy file; a file that ends before them was cut short."""
    start = file.tell()
    data = file.read(count)
    if len(data) < count:
        raise _incomplete(path, start + len(data), f"{count - len(data):,} bytes of its tensors")
    return data


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The tensors of a `.pth` state dict, in file order, as NumPy arrays.

    Args:
        path: a file written by `torch.save(state_dict, path)`, by any torch version from 0.3 on
            (zip or legacy container).

    Returns:
        {name: array} with each tensor's dtype and shape.

    Raises:
        FileNotFoundError: `path` does not exist.
        RefusedFileError: the file is not a `torch.save` state dict, or its pickle names a global
            other than a state dict's; nothing in the file has been called when this is raised.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no PyTorch file at {path}")
    if zipfile.is_zipfile(path):
        return _state_dict(path, _load_zip(path, torchscript=False), np.ndarray)
    _refuse_cut_zip(path)
    return _load_legacy(path)


def _refuse_cut_zip(path: str) -> None:
    """Refuses a file that starts as a zip archive but lacks the directory zips end with.

    That is what an interrupted download or copy of a zip-format `.pth` leaves.
    """
    with open(path, "rb") as f:
        if f.read(4) == b"PK\x03\x04":
            raise RefusedFileError(
                f"{path} is incomplete: it starts as a zip archive (torch.save's format) but its"
                f" end is missing ({os.path.getsize(path):,} bytes; an interrupted download or"
                " copy?); get the file again"
            )


def is_torchscript(path: str | os.PathLike[str]) -> bool:
    """Whether a file is a TorchScript archive (which, unlike a `torch.save` zip, holds code)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.count("/") >= 2 and "/code/" in name for name in archive.namelist())


def read_torchscript(path: str | os.PathLike[str]) -> ScriptObject:
    """Reads the module tree of a TorchScript `.pt` zip.

    Args:
        path: a file written by `torch.jit.save`.

    Returns:
        The root module: a `ScriptObject` whose attributes are sub-modules, NumPy arrays (the
        parameters and buffers, as stored) and plain values.

    Raises:
        FileNotFoundError: `path` does not exist.
        RefusedFileError: the file is not a TorchScript archive (or one cut short), or its
            pickle names a global other than a TorchScript module's; nothing in the file has
            been called when this is raised.
    """
    path = os.fspath(path)
    if not zipfile.is_zipfile(path):
        _refuse_cut_zip(path)
        raise RefusedFileError(f"{path} is not a TorchScript archive (torch.jit.save's zip)")
    root = _load_zip(path, torchscript=True)
    if not isinstance(root, ScriptObject):
        raise RefusedFileError(f"{path} holds no TorchScript module, but {type(root).__name__}")
    return root


def script_state_dict(module: ScriptObject, prefix: str = "") -> dict[str, np.ndarray]:
    """The arrays of a TorchScript module tree by dotted name, as `module.state_dict()` has them.

    Parameters, buffers and any other tensor attributes, depth first in attribute order; plain
    values (`training`, ints, lists) are left out.

    Args:
        module: from `read_torchscript`.
        prefix: prepended to every name.

    Returns:
        {'visual.conv1.weight': array, ...}.
    """
    arrays = {}
    for name, value in module.attributes().items():
        if isinstance(value, ScriptObject):
            arrays |= script_state_dict(value, f"{prefix}{name}.")
        elif isinstance(value, np.ndarray):
            arrays[f"{prefix}{name}"] = value
    return arrays
