"""crossvis.files: atomic outputs leave nothing half-written; the JSON reader names the file and what it expected."""

from __future__ import annotations

import errno
import json
import os
import zipfile
from pathlib import Path

import pytest
import torch

from crossvis.checkpoint.training_state import AtomicCheckpointIO
from crossvis.data.ytvis import VISFormatError, read_annotation_json
from crossvis.errors import InputFormatError, InputNotFoundError, OutputWriteError, UserError
from crossvis.evaluation.results import write_submission_zip
from crossvis.files import FAILURE_RECORD, atomic_directory, atomic_path, read_json, record_failure, write_json_atomic


def test_atomic_path_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out" / "a.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".txt" and tmp != target
        tmp.write_text("new")
        assert not target.exists()  # nothing visible before the block ends
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "new" and sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]


def test_write_json_atomic_round_trips(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "m.json", {"AP": 0.5})
    assert json.loads((tmp_path / "m.json").read_text()) == {"AP": 0.5}


def test_atomic_directory_refuses_non_empty_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(FileExistsError, match="not empty"), atomic_directory(out):
        pass
    with pytest.raises(RuntimeError), atomic_directory(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError("failed")
    assert [p.name for p in out.iterdir()] == ["old.txt"]  # a failed write keeps the old content
    with atomic_directory(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temporary folders left


def test_read_json_errors_name_the_file_and_what_it_should_be(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text('{"a": [1, 2]}')
    assert read_json(good, "config") == {"a": [1, 2]}
    with pytest.raises(InputNotFoundError, match=r"nope\.json: results file not found"):
        read_json(tmp_path / "nope.json", "results")
    with pytest.raises(InputNotFoundError, match="is a directory"):
        read_json(tmp_path, "results")
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": ')
    with pytest.raises(InputFormatError, match=r"bad\.json: malformed JSON at line 1 column 7"):
        read_json(bad, "results")
    with pytest.raises(
        InputFormatError, match=r"good\.json: expected a JSON array at the top level \(results\), got dict"
    ):
        read_json(good, "results", list)
    with pytest.raises(VISFormatError, match=r"bad\.json: malformed JSON"):  # the readers' own error types
        read_annotation_json(bad)


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _half_then_disk_full(target_arg: int):
    """A writer that gets half a file onto disk (argument ``target_arg`` is its path), then runs out of space."""

    def write(*args, **kwargs):
        Path(args[target_arg]).write_bytes(b"half a file")
        _disk_full()

    return write


WRITERS = {  # output kind: (write version v to path, read it back, where to inject the failure)
    "metrics json": (
        lambda path, v: write_json_atomic(path, {"AP": v}),
        lambda path: json.loads(path.read_text())["AP"],
        ("pathlib.Path.write_text", _half_then_disk_full(0)),
    ),
    "checkpoint": (
        lambda path, v: AtomicCheckpointIO().save_checkpoint({"global_step": v}, path),
        lambda path: torch.load(path, weights_only=True)["global_step"],
        ("lightning_fabric.plugins.io.torch_io._atomic_save", _half_then_disk_full(1)),
    ),
    "submission zip": (
        lambda path, v: write_submission_zip(
            path, [{"video_id": v, "category_id": 1, "score": 0.5, "segmentations": [None]}]
        ),
        lambda path: json.loads(zipfile.ZipFile(path).read("results.json"))[0]["video_id"],
        ("zipfile.ZipFile.writestr", _disk_full),
    ),
}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_a_failing_write_keeps_the_previous_file_and_says_what_failed(tmp_path, monkeypatch, kind) -> None:
    write, read, (target, failure) = WRITERS[kind]
    path = (
        tmp_path / {"metrics json": "metrics.json", "checkpoint": "last.ckpt", "submission zip": "submission.zip"}[kind]
    )
    write(path, 1)
    monkeypatch.setattr(target, failure)
    with pytest.raises(OutputWriteError) as raised:
        write(path, 2)
    assert str(path) in str(raised.value) and "No space left on device" in str(raised.value)
    assert "previous file is unchanged" in str(raised.value)
    assert isinstance(raised.value, UserError) and isinstance(raised.value, OSError)
    monkeypatch.undo()
    assert read(path) == 1 and [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_record_failure_leaves_the_reason_and_a_success_clears_it(tmp_path) -> None:
    with pytest.raises(InputFormatError), record_failure(tmp_path):
        raise InputFormatError("train.json: field 'videos': expected a list")
    assert read_json(tmp_path / FAILURE_RECORD, "failure") == {
        "error": "InputFormatError: train.json: field 'videos': expected a list"
    }
    with record_failure(tmp_path):  # the run, tried again, succeeds
        pass
    assert not (tmp_path / FAILURE_RECORD).exists()
    with pytest.raises(SystemExit), record_failure(tmp_path):  # a pre-empted run exits: not a failure
        raise SystemExit(138)
    assert not (tmp_path / FAILURE_RECORD).exists()
