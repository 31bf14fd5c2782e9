"""``python -m crossvis.data.check``: summary on a good set, exit 1 naming the problem otherwise."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path


def _check(json_path: Path, image_root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "crossvis.data.check", str(json_path), str(image_root)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_passes_and_summarises(synthetic_root: Path) -> None:
    result = _check(synthetic_root / "train.json", synthetic_root / "train" / "JPEGImages")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    raw = json.loads((synthetic_root / "train.json").read_text())
    names = {c["id"]: c["name"] for c in raw["categories"]}
    per_category = Counter(names[a["category_id"]] for a in raw["annotations"])
    assert summary == {
        "videos": 6,
        "frames": 6 * 8,
        "instances": len(raw["annotations"]),
        "identities": len(raw["annotations"]),
        "categories": {name: per_category.get(name, 0) for name in names.values()},
    }
    assert "identities M" in result.stdout


def test_check_passes_on_split_without_annotations(synthetic_root: Path) -> None:
    result = _check(synthetic_root / "valid.json", synthetic_root / "valid" / "JPEGImages")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["instances"] == 0


def test_check_fails_on_deleted_frame(synthetic_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(synthetic_root, root)
    raw = json.loads((root / "train.json").read_text())
    video = raw["videos"][1]
    (root / "train" / "JPEGImages" / video["file_names"][3]).unlink()
    result = _check(root / "train.json", root / "train" / "JPEGImages")
    assert result.returncode == 1
    assert str(root / "train.json") in result.stderr
    assert f"video {video['id']}" in result.stderr and "'file_names'[3]" in result.stderr


def test_check_fails_on_undecodable_mask(synthetic_root: Path, tmp_path: Path) -> None:
    raw = json.loads((synthetic_root / "train.json").read_text())
    is_list_rle = lambda s: isinstance(s, dict) and isinstance(s["counts"], list)  # noqa: E731
    ann = next(a for a in raw["annotations"] if any(is_list_rle(s) for s in a["segmentations"]))
    t = next(i for i, s in enumerate(ann["segmentations"]) if isinstance(s, dict))
    ann["segmentations"][t]["counts"] = ann["segmentations"][t]["counts"][:-1]  # runs no longer cover the frame
    path = tmp_path / "train.json"
    path.write_text(json.dumps(raw))
    result = _check(path, synthetic_root / "train" / "JPEGImages")
    assert result.returncode == 1
    assert str(path) in result.stderr and f"annotation {ann['id']}" in result.stderr
    assert f"'segmentations'[{t}]" in result.stderr and "height*width" in result.stderr
