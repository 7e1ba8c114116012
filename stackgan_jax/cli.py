"""What every command-line tool shares: one `error:` line for a user's mistake.

Each CLI ends with `cli.run(main)` instead of `absl.app.run(main)`. Errors in the input (a
`UserError` or an `OSError`, raised while parsing the flags or while running) print as

    error: <what is wrong and what to do>

on stderr with exit status 1; a bug still shows its traceback, and `--traceback` shows it for
input errors too.
"""

import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from absl import app, flags

from stackgan_jax.errors import UserError

# The exceptions that are the user's to fix. OSError: missing files, permissions, a full disk.
# UsageError: absl's for a bad command line, which it would answer with the whole module doc.
INPUT_ERRORS = (UserError, OSError, app.UsageError)
TRACEBACK_FLAG = "traceback"


def run(main: Callable[[list[str]], None]) -> None:
    """Runs `main` as `absl.app.run` does, printing input errors as one line."""
    flags.DEFINE_bool(TRACEBACK_FLAG, False, "Show the Python traceback of input errors too.")

    def main_reporting_errors(argv: list[str]) -> None:
        try:
            main(argv)
        except INPUT_ERRORS as error:
            if flags.FLAGS[TRACEBACK_FLAG].value:
                raise
            fail(str(error))

    app.run(main_reporting_errors, flags_parser=parse_flags)


def fail(message: str) -> NoReturn:
    """Prints `error: message` on stderr and exits with status 1."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def parse_flags(argv: Sequence[str]) -> list[str]:
    """Parses the command line as absl does, reporting a bad flag in one line.

    A config file's `get_config` that raises a `UserError` (an unknown preset name) reaches
    absl wrapped twice, with the traceback in its message; the message shown is the inner one.
    An override of a field the config lacks (`--config.train.nosuch=1`) escapes absl's own
    handling as a KeyError or AttributeError.
    """
    wants_traceback = f"--{TRACEBACK_FLAG}" in argv
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        if wants_traceback:
            raise
        cause = _innermost_user_error(error)
        fail(f"{error}" if cause is None else f"{_flag_of(error)}{cause}")
    except (AttributeError, KeyError) as error:
        if wants_traceback:
            raise
        overrides = [arg.split("=")[0] for arg in argv[1:] if arg.startswith("--config.")]
        field = str(error).strip("\"'")  # KeyError quotes its message, ml_collections twice
        fail(
            f"the config has no field {field}; check the overrides {' '.join(overrides)} "
            "(--helpfull lists the fields)"
        )


def _innermost_user_error(error: BaseException | None) -> UserError | None:
    """The innermost `UserError` in the chain of exceptions that led to `error`, if any.

    Innermost, because ml_collections re-raises a config file's error as a copy of its type
    whose message is the traceback.
    """
    found = None
    while error is not None:
        if isinstance(error, UserError):
            found = error
        error = error.__cause__ or error.__context__
    return found


def _flag_of(error: flags.Error) -> str:
    """The `flag --name=value: ` that absl puts before the message of a bad value, or nothing."""
    text, inner = str(error), error.__cause__ or error.__context__
    if inner is None or str(inner) not in text:
        return ""
    return text[: text.index(str(inner))]
