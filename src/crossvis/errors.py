"""The project's user-error types: problems with the user's files, data or config.

Every entry point reports a :class:`UserError` as one message and exit code 1 (see
:mod:`crossvis.cli`); anything else is a bug and keeps its traceback. Subclasses also derive
from the matching built-in type so ``except ValueError`` / ``except FileNotFoundError`` keep
working.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator


class UserError(Exception):
    """A problem the user can fix: the message names the file/field and what was expected."""


class InputFormatError(UserError, ValueError):
    """A file exists but does not hold what was expected (corrupt image, not a checkpoint, ...)."""


class InputNotFoundError(UserError, FileNotFoundError):
    """A required input file or folder does not exist."""


class OutputWriteError(UserError, OSError):
    """Writing an output failed (full disk, quota, I/O error); the file it was to replace is unchanged."""


class ConfigError(UserError, ValueError):
    """A config value is not one of the accepted ones."""


class ArgumentError(ValueError):
    """Library code (e.g. ``crossvis.modeling``) rejecting one of its own arguments, named by ``argument``.

    Library code knows nothing of config paths; the code that builds it from a config re-raises
    this as a :class:`ConfigError` naming the config key (:func:`config_node`).
    """

    def __init__(self, argument: str, detail: str) -> None:
        self.argument, self.detail = argument, detail
        super().__init__(f"{argument}{detail}")


def check_choice(argument: str, value: object, choices: tuple[str, ...]) -> None:
    """Raise an :class:`ArgumentError` about ``argument`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ArgumentError(argument, f"={value!r}: expected one of {choices}")


@contextlib.contextmanager
def argument_prefix(prefix: str) -> Iterator[None]:
    """Re-raise an :class:`ArgumentError` about ``a`` as one about ``prefix.a`` (the argument's owner)."""
    try:
        yield
    except ArgumentError as error:
        raise ArgumentError(f"{prefix}.{error.argument}", error.detail) from None


@contextlib.contextmanager
def config_node(path: str) -> Iterator[None]:
    """Re-raise an :class:`ArgumentError` of code built from the config node ``path`` as a
    :class:`ConfigError` naming the key (``path.argument``)."""
    try:
        yield
    except ArgumentError as error:
        raise ConfigError(f"{path}.{error.argument}{error.detail}") from None


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
