"""Reads a user's text file of captions or sentences: UTF-8, one per line."""

import os

from etils import epath

from stackgan_jax.errors import BadFileError


def read_lines(path: str | os.PathLike[str]) -> list[str]:
    """The lines of a UTF-8 text file, without their line endings (LF or CRLF).

    Args:
        path: the file (local or a bucket path).

    Returns:
        Every line, blank ones included.

    Raises:
        FileNotFoundError: `path` does not exist.
        BadFileError: the file is not UTF-8 text; the message names the line and the byte.
    """
    data = epath.Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise BadFileError(
            f"{path} is not UTF-8 text: line {line} has the byte 0x{data[e.start]:02x}; save it"
            " as UTF-8"
        ) from None
    return text.splitlines()
