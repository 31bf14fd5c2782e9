"""File IO with the error contract: atomic output (a reader never sees a half-written file) and one JSON reader."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crossvis.errors import InputFormatError, InputNotFoundError, OutputWriteError, UserError, user_message

JSON_TYPES = {dict: "a JSON object", list: "a JSON array"}
# Left in a run folder by a run that failed: read by crossvis.cli.tables to mark the run's cell.
FAILURE_RECORD = "failed.json"


def read_json(
    path: str | os.PathLike,
    what: str,
    top_level: type | None = dict,
    not_found: type[InputNotFoundError] = InputNotFoundError,
    bad_format: type[InputFormatError] = InputFormatError,
) -> Any:
    """The JSON document at ``path``; a missing file, a folder, bad JSON or the wrong top-level type
    (``top_level``: dict, list or None for any) is a user error naming the file and ``what`` it should be.
    ``not_found`` / ``bad_format``: the error types to raise (e.g. the dataset readers' own subclasses)."""
    path = Path(path)
    if path.is_dir():
        raise not_found(f"{path}: is a directory (expected a {what} file)")
    if not path.is_file():
        raise not_found(f"{path}: {what} file not found")
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except json.JSONDecodeError as e:
        raise bad_format(
            f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg} (expected a {what})"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise bad_format(f"{path}: cannot read the {what} file: {e}") from None
    if top_level is not None and not isinstance(value, top_level):
        raise bad_format(
            f"{path}: expected {JSON_TYPES[top_level]} at the top level ({what}), got {type(value).__name__}"
        )
    return value


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A failing write (full disk, quota, I/O error) becomes an :class:`OutputWriteError` naming ``path``
    and the cause; the temporary file is removed and the file at ``path`` stays as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the real suffix last: writers such as imageio pick the format from it.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; outputs get the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as error:
        if isinstance(error, UserError):  # e.g. a missing input, already reported as such
            raise
        kept = "the previous file is unchanged" if path.exists() else "no file was written"
        raise OutputWriteError(f"{path}: writing failed ({error.strerror or error}); {kept}") from error
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj))


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces ``path`` only if the block succeeds.

    A non-empty ``path`` is an error unless ``overwrite``; the old content is removed only after
    the new directory is in place.
    """
    path = Path(path)
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"{path}: output directory is not empty (pass overwrite=True / --overwrite)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; outputs are meant to be shared
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


@contextlib.contextmanager
def record_failure(run_dir: str | os.PathLike) -> Iterator[None]:
    """If the block raises, leave :data:`FAILURE_RECORD` (``{"error": "<type>: <message>"}``) in ``run_dir``
    before passing the error on, so that a sweep's collector can say why the run has no result; a
    record left by an earlier attempt is removed when the block succeeds."""
    record = Path(run_dir) / FAILURE_RECORD
    try:
        yield
    except Exception as error:
        write_json_atomic(record, {"error": f"{type(error).__name__}: {user_message(error)}"})
        raise
    record.unlink(missing_ok=True)
