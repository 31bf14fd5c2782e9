"""One error contract for every entry point: a user error is one message on stderr and exit code 1.

Wrap the function an entry point runs (under ``@hydra.main`` for Hydra entry points, or the
argparse ``main``) with :func:`user_errors`::

    @hydra.main(config_path="pkg://crossvis.conf", config_name="benchmark", version_base="1.3")
    @user_errors
    def main(cfg: DictConfig) -> None: ...

Any :class:`crossvis.errors.UserError` raised inside (including the data errors
``VISFormatError`` / ``VISFileNotFoundError`` and errors re-raised from data-loader workers) is
printed as ``error: <message>`` and the process exits with status 1; other exceptions are bugs
and keep their traceback. ``HYDRA_FULL_ERROR=1`` shows the traceback of user errors too. In a
Hydra multi-run the error goes on to Hydra after the message, which records that member as failed
and runs the others.
Outputs must be written atomically (:mod:`crossvis.files`) so that nothing half-written remains.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Callable, TypeVar

import cv2
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from crossvis.errors import ConfigError, InputNotFoundError, UserError, user_message

F = TypeVar("F", bound=Callable)


def user_errors(func: F) -> F:
    """Decorator: report :class:`UserError` as one message and exit 1 (traceback with HYDRA_FULL_ERROR=1)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as error:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {user_message(error)}", file=sys.stderr)
            if in_hydra_multirun():
                raise  # Hydra records the failed sweep member and goes on with the others
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def in_hydra_multirun() -> bool:
    """True inside a job of a Hydra multi-run (``-m``): its errors must not end the whole sweep."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def require_file(path: str | os.PathLike, field: str, expected: str) -> Path:
    """``path`` as a Path if it is an existing file; else a user error naming ``field`` and ``expected``."""
    path = Path(path)
    if path.is_dir():
        raise InputNotFoundError(f"{field}: {path} is a directory (expected {expected})")
    if not path.is_file():
        raise InputNotFoundError(f"{field}: no such file {path} (expected {expected})")
    return path


def require_writable_dir(path: str | os.PathLike, field: str) -> Path:
    """Check, before any work starts, that files can be created in folder ``path`` (created later if missing)."""
    path = Path(path).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"{field}: cannot create the output folder {path}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{field}: cannot write into {existing} (no write permission), the output folder of {path}")
    return path


def configure_threads(threads: int | str = "auto", workers: int = 0) -> int:
    """Set torch's (and OpenCV's) intra-op threads; returns the number used.

    ``"auto"``: the cores this process may run on (``os.sched_getaffinity``) that other processes
    leave idle (1-minute load average), minus one per data-loader worker, at least 1. Torch's
    default (every core) makes each op wait for its slowest thread, which is time-sliced with any
    other busy process: on a 2-core machine with one busy process the demo runs 10-17x slower.
    """
    if threads == "auto":
        cores = len(os.sched_getaffinity(0))
        idle = round((os.cpu_count() or cores) - os.getloadavg()[0])
        count = max(1, min(cores, idle) - int(workers))
    elif isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1:
        count = threads
    else:
        raise ConfigError(f"threads: expected 'auto' or a positive integer, got {threads!r}")
    torch.set_num_threads(count)
    cv2.setNumThreads(count)
    return count
