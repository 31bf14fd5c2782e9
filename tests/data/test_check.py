"""``python -m crossvis.data.check``: summary on a good set, exit 1 naming the problem otherwise."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crossvis.data.ytvis import load_vis
from crossvis.errors import InputFormatError

from helpers import run_module, train_args


def _break_frame(path: Path, how: str) -> None:
    """Damage one frame file the way real datasets get damaged."""
    if how == "truncated":  # an interrupted download or copy
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":  # not an image at all
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    else:  # "resized": a valid JPEG at another size than the video's height/width
        Image.open(path).resize((100, 60)).save(path, format="JPEG")


@pytest.fixture
def broken_copy(synthetic_root: Path, tmp_path: Path, request) -> tuple[Path, Path, str]:
    """A copy of the synthetic set with frame 5 of the second training video damaged; (root, frame, expected)."""
    root = tmp_path / "copy"
    shutil.copytree(synthetic_root, root)
    video = json.loads((root / "train.json").read_text())["videos"][1]
    frame = root / "train" / "JPEGImages" / video["file_names"][5]
    _break_frame(frame, request.param)
    expected = {
        "truncated": "image file is truncated",
        "garbage": "cannot identify image file",
        "resized": f"video {video['id']}: field 'height'/'width': expected the frame size "
        f"{video['height']}x{video['width']}, but {frame} is 60x100",
    }[request.param]
    return root, frame, expected


BROKEN = ["truncated", "garbage", "resized"]


def _check(json_path: Path, image_root: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "crossvis.data.check", str(json_path), str(image_root), *flags],
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


@pytest.mark.parametrize("broken_copy", BROKEN, indirect=True)
def test_check_decodes_every_frame_and_names_the_bad_one(broken_copy) -> None:
    root, frame, expected = broken_copy
    result = _check(root / "train.json", root / "train" / "JPEGImages")
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and str(frame) in error and expected in error
    assert "Traceback" not in result.stderr
    # --no-decode: the quick pass only looks for the files.
    assert _check(root / "train.json", root / "train" / "JPEGImages", "--no-decode").returncode == 0


@pytest.mark.parametrize("broken_copy", BROKEN, indirect=True)
def test_training_reader_raises_the_same_error(broken_copy) -> None:
    root, frame, expected = broken_copy
    vis = load_vis(root / "train.json", root / "train" / "JPEGImages")
    with pytest.raises(InputFormatError) as error:
        vis.videos[1].load_frame(5)
    assert str(frame) in str(error.value) and expected in str(error.value)


@pytest.mark.parametrize("broken_copy", ["truncated"], indirect=True)
def test_training_on_a_truncated_frame_stops_with_one_message_from_the_worker(broken_copy, tmp_path) -> None:
    root, frame, expected = broken_copy
    proc = run_module(
        "crossvis.cli.train",
        *train_args(
            root, tmp_path / "run", "trainer.max_steps=200", "trainer.limit_val_batches=0", "data.num_workers=1"
        ),
        check=False,
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(frame) in last and expected in last
    assert "Traceback" not in proc.stderr and "DataLoader worker" not in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
