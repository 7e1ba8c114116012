"""The mark of an error in what the user passed, as opposed to a bug in the code.

Every CLI prints an error that is a `UserError` (or an `OSError`: a missing file, a full disk) as
one `error: ...` line and exits non-zero (`stackgan_jax.cli`); any other exception is a bug and
keeps its traceback. Each concrete error also derives from the built-in type a caller would
expect (`ValueError`, `FileNotFoundError`, ...), so handlers written for those still catch it.
"""


class UserError(Exception):
    """Something the user passed does not work: a flag, a config value, a file or a workdir.

    The message says which one and what to do about it.
    """


class ConfigError(UserError, ValueError):
    """A config field (or the flag that set it) has a value the code cannot use."""


class BadFileError(UserError, ValueError):
    """A file the user pointed to does not hold what it should (other weights, other shapes)."""
