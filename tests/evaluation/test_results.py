"""Results json / CodaLab zip: round trip through pycocotools, validation errors, atomic writes."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from crossvis.evaluation.results import write_results_json, write_submission_zip


def masks_and_results() -> tuple[list[np.ndarray | None], list[dict]]:
    rng = np.random.default_rng(0)
    masks = [rng.random((6, 9)) > 0.5, None, rng.random((6, 9)) > 0.3]
    segs = []
    for m in masks:
        if m is None:
            segs.append(None)
            continue
        r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        segs.append({"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")})
    return masks, [{"video_id": 4, "category_id": 2, "score": 0.75, "segmentations": segs}]


def test_results_json_round_trips_through_pycocotools(tmp_path: Path) -> None:
    masks, results = masks_and_results()
    path = tmp_path / "out" / "results.json"
    write_results_json(path, results)
    [entry] = json.loads(path.read_text())
    assert (entry["video_id"], entry["category_id"], entry["score"]) == (4, 2, 0.75)
    for mask, seg in zip(masks, entry["segmentations"]):
        if mask is None:
            assert seg is None
        else:
            np.testing.assert_array_equal(mask_utils.decode(seg).astype(bool), mask)


def test_submission_zip_holds_results_json(tmp_path: Path) -> None:
    _, results = masks_and_results()
    path = tmp_path / "submission.zip"
    write_submission_zip(path, results)
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["results.json"]
        assert json.loads(zf.read("results.json")) == results


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"score": float("nan")}, r"results\[0\].score: expected a finite float"),
        ({"video_id": "4"}, r"results\[0\].video_id: expected an int"),
        ({"segmentations": None}, r"results\[0\].segmentations: expected a list"),
        (
            {"segmentations": [{"size": [6, 9], "counts": b"abc"}]},
            r"results\[0\] \(video 4\).segmentations\[0\].counts: expected a compressed RLE string",
        ),
        (
            {"segmentations": [{"size": [6], "counts": "abc"}]},
            r"results\[0\] \(video 4\).segmentations\[0\].size: expected \[height, width\]",
        ),
        ({"track": 1}, r"results\[0\]: expected exactly the keys"),
    ],
)
def test_invalid_entries_raise_and_write_nothing(change: dict, message: str, tmp_path: Path) -> None:
    _, results = masks_and_results()
    path = tmp_path / "results.json"
    with pytest.raises(ValueError, match=message):
        write_results_json(path, [{**results[0], **change}])
    with pytest.raises(ValueError, match=message):
        write_submission_zip(tmp_path / "s.zip", [{**results[0], **change}])
    assert list(tmp_path.iterdir()) == []
