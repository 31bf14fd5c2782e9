"""scripts/compare_adelaidet.py's reference-free part: pairing two detection sets and the tolerance verdict.

The AdelaiDet side needs detectron2 and is run by hand (README "Checking against AdelaiDet").
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))
from compare_adelaidet import compare_detections, mask_iou  # noqa: E402


def _mask(y0: int, x0: int, h: int, w: int) -> np.ndarray:
    m = np.zeros((10, 10), dtype=bool)
    m[y0 : y0 + h, x0 : x0 + w] = True
    return m


def _detections(boxes: list, scores: list, classes: list, masks: list) -> dict[str, np.ndarray]:
    return {
        "boxes": np.array(boxes, np.float32).reshape(-1, 4),
        "scores": np.array(scores, np.float32),
        "classes": np.array(classes, np.int64),
        "masks": np.array(masks, bool).reshape(-1, 10, 10),
    }


REF = _detections(
    [[0, 0, 4, 4], [0, 0, 4, 4], [5, 5, 9, 9]],
    [0.9, 0.8, 0.7],
    [1, 2, 1],
    [_mask(0, 0, 4, 4), _mask(0, 0, 4, 4), _mask(5, 5, 4, 4)],
)


def test_mask_iou_hand_computed() -> None:
    assert mask_iou(_mask(0, 0, 4, 4), _mask(0, 1, 4, 4)) == pytest.approx(12 / 20)
    assert mask_iou(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 1.0  # both empty: they agree


def test_identical_sets_in_another_order_pass() -> None:
    order = [2, 0, 1]
    ours = {key: value[order] for key, value in REF.items()}
    report = compare_detections(REF, ours)
    assert report["ok"] and report["paired"] == 3
    assert report["max_box_diff_px"] == 0.0 and report["max_score_diff"] == 0.0 and report["min_mask_iou"] == 1.0
    assert report["partial_masks"] == 3  # 16 of 100 pixels each
    assert json.loads(json.dumps(report)) == report  # the script prints it as its last line
    full = {**REF, "masks": np.ones_like(REF["masks"])}
    assert compare_detections(full, full)["partial_masks"] == 0


def test_within_tolerance_pairs_by_class_and_box() -> None:
    # Ours lists the class-2 twin first and carries differences just inside the tolerances.
    ours = _detections(
        [[0, 0, 4, 4], [0.005, 0, 4, 4], [5, 5, 9, 9.008]],
        [0.80005, 0.9, 0.7],
        [2, 1, 1],
        [_mask(0, 0, 4, 4), _mask(0, 0, 4, 4), _mask(5, 5, 4, 4)],
    )
    report = compare_detections(REF, ours)
    assert report["ok"], report
    assert report["max_box_diff_px"] == pytest.approx(0.008, abs=1e-6)
    assert report["max_score_diff"] == pytest.approx(5e-5, abs=1e-6)


def test_each_tolerance_fails_the_verdict() -> None:
    shifted = {**REF, "boxes": REF["boxes"] + np.array([0, 0, 0.02, 0], np.float32)}
    report = compare_detections(REF, shifted)
    assert not report["ok"] and report["max_box_diff_px"] == pytest.approx(0.02, abs=1e-6)

    rescored = {**REF, "scores": REF["scores"] + np.array([0, 2e-4, 0], np.float32)}
    report = compare_detections(REF, rescored)
    assert not report["ok"] and report["max_score_diff"] == pytest.approx(2e-4, abs=1e-6)

    masks = REF["masks"].copy()
    masks[2, 4, 5] = True  # one extra pixel: IoU 16/17 < 0.999
    report = compare_detections(REF, {**REF, "masks": masks})
    assert not report["ok"] and report["min_mask_iou"] == pytest.approx(16 / 17)
    assert report["masks_below_iou"] == 1


def test_class_mismatch_and_missing_detections_stay_unpaired() -> None:
    # Same boxes, but the last one has another class; and the class-2 twin is missing.
    ours = _detections([[0, 0, 4, 4], [5, 5, 9, 9]], [0.9, 0.7], [1, 3], [_mask(0, 0, 4, 4), _mask(5, 5, 4, 4)])
    report = compare_detections(REF, ours)
    assert not report["ok"]
    assert (report["paired"], report["unpaired_reference"], report["unpaired_ours"]) == (1, 2, 1)


def test_boxes_beyond_the_gate_are_not_paired() -> None:
    ref = _detections([[0, 0, 4, 4]], [0.9], [1], [_mask(0, 0, 4, 4)])
    far = _detections([[5, 0, 9, 4]], [0.9], [1], [_mask(0, 5, 4, 4)])  # 5 px to the right
    report = compare_detections(ref, far)
    assert report["paired"] == 0 and report["unpaired_ours"] == 1 and not report["ok"]
    report = compare_detections(ref, far, pair_gate=6.0)
    assert report["paired"] == 1 and report["max_box_diff_px"] == 5.0 and report["min_mask_iou"] == 0.0


def test_embeddings_are_compared_when_both_sets_have_them() -> None:
    ref = {**REF, "embeddings": np.array([[0.5, -0.25], [0.0, 1.0], [0.125, 0.0]], np.float32)}
    close = {**ref, "embeddings": ref["embeddings"] + np.array([[0, 5e-5], [0, 0], [0, 0]], np.float32)}
    report = compare_detections(ref, close)
    assert report["ok"] and report["max_embedding_diff"] == pytest.approx(5e-5, abs=1e-7)
    far = {**ref, "embeddings": ref["embeddings"] + np.array([[0, 0], [0, 0], [3e-4, 0]], np.float32)}
    report = compare_detections(ref, far)
    assert not report["ok"] and report["max_embedding_diff"] == pytest.approx(3e-4, abs=1e-7)
    assert "max_embedding_diff" not in compare_detections(REF, REF)  # CondInst: no embeddings
