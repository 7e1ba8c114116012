"""Reads PyTorch `.pth` state dicts with NumPy only: no torch, and no code run from the file.

`torch.save` pickles the state dict with every tensor pointing at a raw storage through a
"persistent id" `('storage', <storage class>, key, location, numel[, view])`. The storages' bytes
live outside the pickle, in one of two containers:

* zip (torch >= 1.6 and its default since): `<name>/data.pkl` is the pickle, `<name>/data/<key>`
  the bytes of each storage, `<name>/byteorder` "little" or "big" (absent: little).
* legacy (torch < 1.6, e.g. StackGAN-Pytorch's 2018 release, or `_use_new_zipfile_serialization=
  False`): five pickles in a row (a magic number, the protocol version 1001, system information
  with the byte order, the state dict, the list of storage keys), then per key an int64 element
  count and the storage's bytes.

A pickle may name any importable callable and have the unpickler call it, so the state-dict
pickle may name only what a state dict of tensors needs, and every other global is refused before
anything is called. Apart from `OrderedDict` itself, the allowed names resolve to stand-ins here:

* `collections.OrderedDict` (the state dict, its `_metadata`, a tensor's empty hooks);
* `torch._utils._rebuild_tensor_v2` (torch >= 0.4) and `torch._utils._rebuild_tensor` (older),
  which only record (storage, offset, shape, strides);
* the typed storage classes `torch.<Type>Storage` and `torch.cuda.<Type>Storage` of numeric
  types, which only give the element dtype.

Tensors come back as NumPy arrays with the storage's dtype, the tensor's shape and its strides
and offset into the storage (so views sharing one storage read right).
"""

import collections
import dataclasses
import io
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from typing import Any, BinaryIO

import jax.numpy as jnp
import numpy as np

from stackgan_jax.untrusted import RefusedFileError

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


class TorchFileError(ValueError):
    """A file that is not a `torch.save` state dict this reader understands."""


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


def _rebuild_tensor(
    storage: Any, storage_offset: Any, size: Any, stride: Any, *unused: Any
) -> _TensorRef:
    """Stands in for `torch._utils._rebuild_tensor[_v2]` (the extra v2 arguments are ignored)."""
    del unused  # requires_grad, backward hooks and metadata do not change the values.
    if (
        not isinstance(storage, _Storage)
        or not isinstance(size, tuple)
        or not isinstance(stride, tuple)
        or len(size) != len(stride)
        or not all(isinstance(x, int) for x in (storage_offset, *size, *stride))
    ):
        raise TorchFileError("a tensor in the file is not (storage, offset, size, stride)")
    return _TensorRef(storage, storage_offset, tuple(size), tuple(stride))


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
} | {
    (module, f"{name}Storage"): _StorageType(dtype)
    for module in ("torch", "torch.cuda")
    for name, dtype in _STORAGE_DTYPES.items()
}


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves only the globals of a state dict; storages become `_Storage` descriptions."""

    def find_class(self, module: str, name: str) -> Any:
        """Returns an allowed stand-in, refusing every other global before anything is called.

        Raises:
            RefusedFileError: `module.name` is not on the allow-list.
        """
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedFileError(
                f"refusing to load global {module}.{name}: a PyTorch state dict names only "
                "OrderedDict, tensor rebuilding and numeric storage types"
            ) from None

    def persistent_load(self, pid: Any) -> _Storage:
        """`('storage', storage type, key, location, numel[, view])` → a `_Storage`."""
        if not (
            isinstance(pid, tuple)
            and len(pid) in (5, 6)
            and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)
            and isinstance(pid[4], int)
        ):
            raise TorchFileError(f"unexpected persistent id {pid!r}: not a tensor storage")
        _, storage_type, key, _, numel, *view = pid
        if view and view[0] is not None:
            # Legacy storage views: (view key, offset, size) into the root storage `key`.
            _, start, count = view[0]
            return _Storage(str(key), storage_type.dtype, int(start), int(count))
        return _Storage(str(key), storage_type.dtype, 0, numel)


def _unpickle(file: BinaryIO) -> Any:
    # Python 2 wrote `str` keys as bytes; latin-1 turns them into `str` unchanged.
    return _StateDictUnpickler(file, encoding="latin1").load()


def _to_array(tensor: _TensorRef, storage_bytes: bytes) -> np.ndarray:
    """A tensor's values: a strided read of its storage, copied into a new array."""
    storage = tensor.storage
    itemsize = storage.dtype.itemsize
    if len(storage_bytes) < (storage.start + storage.count) * itemsize:
        raise TorchFileError(f"storage {storage.key} is shorter than its tensors need")
    flat = np.frombuffer(storage_bytes, storage.dtype, storage.count, storage.start * itemsize)
    if 0 in tensor.shape:
        return np.zeros(tensor.shape, storage.dtype)
    extent = sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride, strict=True))
    last = tensor.offset + extent
    if tensor.offset < 0 or min(tensor.stride, default=0) < 0 or last >= storage.count:
        raise TorchFileError(f"a tensor reaches outside its storage {storage.key}")
    view = np.lib.stride_tricks.as_strided(
        flat[tensor.offset :],
        tensor.shape,
        [s * itemsize for s in tensor.stride],
        writeable=False,
    )
    return np.array(view)


def _tensors(path: str, obj: Any) -> dict[str, _TensorRef]:
    """`obj` if it is a state dict: a mapping of names to tensors."""
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, _TensorRef) for k, v in obj.items()
    ):
        raise TorchFileError(
            f"{path} does not hold a state dict (a mapping of names to tensors), as "
            "torch.save(model.state_dict(), f) writes"
        )
    return obj


def _read(
    tensors: dict[str, _TensorRef], read_storage: Callable[[str], bytes]
) -> dict[str, np.ndarray]:
    """Each tensor's values, reading every storage once."""
    storages = {t.storage.key: read_storage(t.storage.key) for t in tensors.values()}
    return {name: _to_array(t, storages[t.storage.key]) for name, t in tensors.items()}


def _load_zip(path: str) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise TorchFileError(f"{path} is a zip file but not a torch.save archive")
        prefix = pickles[0].removesuffix("data.pkl")
        byteorder = f"{prefix}byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder) != b"little":
            raise TorchFileError(f"{path} was written on a big-endian machine")
        tensors = _tensors(path, _unpickle(io.BytesIO(archive.read(pickles[0]))))
        return _read(tensors, lambda key: archive.read(f"{prefix}data/{key}"))


def _load_legacy(path: str) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        try:
            magic = _unpickle(f)
        except (pickle.UnpicklingError, EOFError, ValueError) as e:
            raise TorchFileError(f"{path} is neither a torch.save zip nor a legacy file") from e
        if magic != _LEGACY_MAGIC:
            raise TorchFileError(f"{path} is not a torch.save file")
        if _unpickle(f) != _LEGACY_PROTOCOL:
            raise TorchFileError(f"{path} uses an unknown legacy torch.save protocol")
        if not _unpickle(f).get("little_endian", True):
            raise TorchFileError(f"{path} was written on a big-endian machine")
        tensors = _tensors(path, _unpickle(f))
        # The storages follow in the order of this key list, each as an int64 element count and
        # its bytes; the element size comes from the tensors that use the storage.
        itemsizes = {t.storage.key: t.storage.dtype.itemsize for t in tensors.values()}
        data = {}
        for key in _unpickle(f):
            if key not in itemsizes:
                raise TorchFileError(f"{path} stores a storage {key} that no tensor uses")
            (count,) = struct.unpack("<q", f.read(8))
            data[key] = f.read(count * itemsizes[key])
        return _read(tensors, data.__getitem__)


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The tensors of a `.pth` state dict, in file order, as NumPy arrays.

    Args:
        path: a file written by `torch.save(state_dict, path)`, by any torch version from 0.3 on
            (zip or legacy container).

    Returns:
        {name: array} with each tensor's dtype and shape.

    Raises:
        FileNotFoundError: `path` does not exist.
        TorchFileError: the file is not a `torch.save` state dict.
        RefusedFileError: the pickle names a global other than a state dict's; nothing in the
            file has been called when this is raised.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no PyTorch file at {path}")
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    return _load_legacy(path)
