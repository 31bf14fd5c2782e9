"""crossvis.io: atomic outputs leave nothing half-written; the JSON reader names the file and what it expected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crossvis.data.ytvis import VISFormatError, read_annotation_json
from crossvis.errors import InputFormatError, InputNotFoundError
from crossvis.io import atomic_directory, atomic_path, read_json, write_json_atomic


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
