"""The project's user-error types: problems with the user's files, data or config.

Every entry point reports a :class:`UserError` as one message and exit code 1 (see
:mod:`crossvis.cli`); anything else is a bug and keeps its traceback. Subclasses also derive
from the matching built-in type so ``except ValueError`` / ``except FileNotFoundError`` keep
working.
"""

from __future__ import annotations

import re


class UserError(Exception):
    """A problem the user can fix: the message names the file/field and what was expected."""


class InputFormatError(UserError, ValueError):
    """A file exists but does not hold what was expected (corrupt image, not a checkpoint, ...)."""


class InputNotFoundError(UserError, FileNotFoundError):
    """A required input file or folder does not exist."""


class ConfigError(UserError, ValueError):
    """A config value is not one of the accepted ones."""


# torch re-raises a DataLoader worker's exception in the main process with the message
# "Caught X in DataLoader worker process N.\nOriginal Traceback (most recent call last): ..."
_WORKER_PREFIX = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")


def user_message(error: BaseException) -> str:
    """The error's own message; for an error re-raised from a data-loader worker, without the worker's traceback."""
    message = str(error)
    if _WORKER_PREFIX.match(message):
        # The worker traceback ends with "<module>.<Type>: <original message>".
        name = f"{type(error).__module__}.{type(error).__qualname__}: "
        if name in message:
            return message.rsplit(name, 1)[1].rstrip("\n")
    return message
