"""Telling a damaged checkpoint from other failures of a restore, and keeping its report short.

`checkpointing` restores inside `checkpointing._reading`, which asks `unreadable_file_error`
whether a failure means a file of the checkpoint cannot be read (cut short, missing, corrupt);
only then is it a `DamagedCheckpointError`, described by `describe` in one line.
"""

import json
import logging as pylogging
import re
import sys
from collections.abc import Callable
from typing import Any

# A TensorStore error's message starts with its status code: "OUT_OF_RANGE: ..." for a file cut
# short, "DATA_LOSS: ..." for one that does not decode, "NOT_FOUND: ..." for a missing one.
_TENSORSTORE_STATUS = re.compile(r"[A-Z][A-Z_]+: ")


def unreadable_file_error(error: BaseException) -> BaseException | None:
    """The error in `error`'s chain of causes that says a checkpoint file cannot be read, if any.

    What reading a damaged checkpoint raises: TensorStore's ValueErrors (Orbax re-raises an
    array's as a bare Exception `from` it), `json.JSONDecodeError` for a metadata file cut short,
    OSError for a missing file, and Orbax's KeyError for a missing item. Anything else (a bug, a
    checkpoint of another layout) is no sign of damage and is not caught.
    """
    while error is not None:
        if (
            isinstance(error, (OSError, json.JSONDecodeError))
            or (isinstance(error, ValueError) and _TENSORSTORE_STATUS.match(str(error)))
            or (isinstance(error, KeyError) and "was not found in the checkpoint" in str(error))
        ):
            return error
        error = error.__cause__
    return None


def describe(error: BaseException) -> str:
    """The first line of `error`, without the store specs (kilobytes of JSON) TensorStore adds."""
    # A KeyError's str() is the repr of its message.
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    lines = str(message).strip().splitlines()
    line = re.sub(r"\s*\[tensorstore_spec.*", "", lines[0]) if lines else ""
    if isinstance(error, ValueError) and _TENSORSTORE_STATUS.match(line):
        return line
    return f"{type(error).__name__}: {line}" if line else type(error).__name__


# When one read of a restore fails, Orbax closes the asyncio event loop that runs them all, and
# the reads still in flight report their ends in two ways, as dozens of tracebacks that would bury
# the one line naming the damaged checkpoint: TensorStore hands each completion to the closed loop
# (an unraisable `RuntimeError('Event loop is closed')`), and asyncio logs each failed read nobody
# awaited ("Task exception was never retrieved"). The two classes below drop those reports only.


class _DropClosedLoopReports:
    """A `sys.unraisablehook` passing everything but 'Event loop is closed' to the previous one."""

    def __init__(self, previous: Callable[[Any], None]) -> None:
        self.previous = previous

    def __call__(self, unraisable: Any) -> None:
        error = unraisable.exc_value
        if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
            return
        self.previous(unraisable)


class _DropUnawaitedReadErrors(pylogging.Filter):
    """Drops asyncio's reports of unawaited tasks that failed to read a checkpoint file."""

    def filter(self, record: pylogging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (
            record.getMessage().split("\n", 1)[0].endswith("exception was never retrieved")
            and error is not None
            and unreadable_file_error(error) is not None
        )


def quiet_late_read_reports() -> None:
    """Installs the hook and the filter above, once."""
    if not isinstance(sys.unraisablehook, _DropClosedLoopReports):
        sys.unraisablehook = _DropClosedLoopReports(sys.unraisablehook)
    asyncio_logger = pylogging.getLogger("asyncio")
    if not any(isinstance(f, _DropUnawaitedReadErrors) for f in asyncio_logger.filters):
        asyncio_logger.addFilter(_DropUnawaitedReadErrors())
