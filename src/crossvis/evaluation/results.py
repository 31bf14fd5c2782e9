"""YouTube-VIS results files: the json the metric reads and the zip the CodaLab servers take.

A results entry is ``{video_id, category_id, score, segmentations}`` with one compressed RLE
(``{"size": [h, w], "counts": str}``) or ``None`` per frame. Entries are validated before
writing so a malformed submission fails here, with the offending entry named, rather than on
the server.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Sequence
from typing import Any

from crossvis.files import atomic_path, write_json_atomic
from crossvis.rle import segmentation_problem

RESULT_KEYS = ("video_id", "category_id", "score", "segmentations")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_rle(where: str, seg: Any) -> None:
    problem = segmentation_problem(seg, compressed_only=True)
    if problem is not None:
        suffix, expected, got = problem
        raise ValueError(f"{where}{suffix}: expected {expected}, got {got!r:.80}")


def validate_results(results: Any) -> None:
    """Check the structure of results entries (keys and types); raise ValueError naming the entry."""
    if not isinstance(results, list):
        raise ValueError(f"results: expected a list of entries, got {type(results).__name__}")
    for i, entry in enumerate(results):
        where = f"results[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a dict, got {type(entry).__name__}")
        if set(entry) != set(RESULT_KEYS):
            raise ValueError(f"{where}: expected exactly the keys {list(RESULT_KEYS)}, got {sorted(entry)}")
        for key in ("video_id", "category_id"):
            if not _is_int(entry[key]):
                raise ValueError(f"{where}.{key}: expected an int, got {entry[key]!r}")
        score = entry["score"]
        if not (isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score)):
            raise ValueError(f"{where}.score: expected a finite float, got {score!r}")
        segs = entry["segmentations"]
        if not isinstance(segs, list):
            raise ValueError(f"{where}.segmentations: expected a list (one entry per frame), got {type(segs).__name__}")
        for f, seg in enumerate(segs):
            if seg is not None:
                _check_rle(f"{where} (video {entry['video_id']}).segmentations[{f}]", seg)


def write_results_json(path: str | os.PathLike, results: Sequence[dict]) -> None:
    """Validate and write ``results`` as the official results json, atomically."""
    results = list(results)
    validate_results(results)
    write_json_atomic(path, results)


def write_submission_zip(path: str | os.PathLike, results: Sequence[dict]) -> None:
    """Validate and write a CodaLab submission: a zip holding ``results.json`` at its root."""
    results = list(results)
    validate_results(results)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("results.json", json.dumps(results))
