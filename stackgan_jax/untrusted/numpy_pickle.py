"""Reads the StackGAN release's Python-2 pickles without letting them run code.

The release's `filenames.pickle`, `class_info.pickle`, `char-CNN-RNN-embeddings.pickle` and the
`76images.pickle`/`304images.pickle` files written by `misc/preprocess_*.py` were made by Python 2
with numpy 1.x. Their lists, tuples, dicts, ints, floats and strings are plain pickle opcodes, so
the only globals they can name are numpy's array, dtype and scalar reconstruction. A pickle may name
any importable callable and the unpickler would call it, so every other global is refused.

Left off the allow-list on purpose:

* `copy_reg._reconstructor` (Python 3: `copyreg`): Python 2 writes it for instances of
  user-defined classes pickled with protocol 0/1. Nothing in the release is such an instance, and
  the class it rebuilds would need to be allowed as well, so it only widens what a file can do.
* builtins (`set`, `frozenset`, `object`, ...): the release holds no sets or objects, and its
  containers and scalars need no global.
* `_codecs.encode`: how Python 3 (not 2) writes `bytes` at protocol 2; a file re-saved that way is
  not a release file.
"""

import errno
import io
import os
import pickle
from typing import Any, BinaryIO

import numpy as np

from stackgan_jax.untrusted.errors import RefusedFileError

try:
    from numpy._core import multiarray as _multiarray
except ImportError:  # numpy < 2 has only the old name.
    from numpy.core import multiarray as _multiarray

# Python 2 numpy wrote `numpy.core.*`; numpy 2 renamed the package to `numpy._core`. Both names map
# to the objects directly, so the deprecated `numpy.core` shim is never imported.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    (package, name): getattr(_multiarray, name)
    for package in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy array, dtype and scalar reconstruction."""

    def find_class(self, module: str, name: str) -> Any:
        """Returns an allowed global, refusing all others before anything is called.

        Args:
            module: module name as written in the pickle.
            name: attribute name as written in the pickle.

        Returns:
            The allowed numpy object.

        Raises:
            RefusedFileError: `module.name` is not on the allow-list.
        """
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedFileError(
                f"refusing to load global {module}.{name}: StackGAN data pickles may only "
                "reconstruct numpy arrays, dtypes and scalars"
            ) from None


def load_pickle(path: str | os.PathLike[str]) -> Any:
    """Loads a StackGAN release pickle (Python 2, any protocol) with a global allow-list.

    Python 2 `str` values are decoded as latin-1: numpy needs that to get its raw array bytes back
    intact, and it turns the release's ASCII file names into `str`.

    Args:
        path: the `.pickle` file.

    Returns:
        The unpickled object, e.g. a list of `str` keys, a list of class ids, a float32 array of
        shape (N, 10, 1024) or a list of uint8 images.

    Raises:
        FileNotFoundError: `path` does not exist; the message names it.
        RefusedFileError: the file names a global other than numpy reconstruction (nothing in the
            file has been called when this is raised), is empty or cut short, or its line
            endings were converted.
    """
    try:
        with open(path, "rb") as f:
            # Protocols 2 and up start with PROTO and are read as a stream; only a text pickle
            # (protocol 0 or 1, small in the release) is read whole, to check its line endings.
            if f.read(1) == pickle.PROTO:
                f.seek(0)
                return _unpickle(f, path)
            f.seek(0)
            data = f.read()
    except FileNotFoundError as e:
        raise FileNotFoundError(errno.ENOENT, "StackGAN pickle not found", os.fspath(path)) from e
    if _has_crlf_damage(data):
        raise RefusedFileError(
            f"{path} has Windows line endings (CRLF): a text-mode copy, or git with"
            " core.autocrlf, converted this text pickle, so every string in it would end in"
            " '\\r'. Get the original file again; or, since a text pickle writes line breaks"
            " inside its strings as escapes, undo the conversion with"
            """ python -c "import sys; p = sys.argv[1]; d = open(p, 'rb').read();"""
            """ open(p, 'wb').write(d.replace(b'\\r\\n', b'\\n'))" FILE"""
            " (exact unless a string in the file ended in a carriage return)."
        )
    return _unpickle(io.BytesIO(data), path)


def _unpickle(file: BinaryIO, path: str | os.PathLike[str]) -> Any:
    """Unpickles `file` with the allow-list; a file that ends early is refused."""
    try:
        return _RestrictedUnpickler(file, encoding="latin1").load()
    except RefusedFileError:
        raise
    except (EOFError, pickle.UnpicklingError) as e:
        size = os.path.getsize(path)
        raise RefusedFileError(
            f"{path} is not a whole pickle ({size:,} bytes; {e or 'it ends early'});"
            " get the file again"
        ) from e


def _has_crlf_damage(data: bytes) -> bool:
    """Whether every line of a text pickle (protocol 0 or 1) ends in CRLF.

    Protocol 0 ends each opcode's argument with a line feed and escapes line breaks inside
    strings, so a carriage return before every line feed means the file was converted to
    Windows line endings. (Protocols 2 and up, which hold raw bytes, never come here.)
    """
    line_feeds = data.count(b"\n")
    return line_feeds > 0 and data.count(b"\r\n") == line_feeds
