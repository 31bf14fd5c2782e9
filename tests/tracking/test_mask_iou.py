"""The peer's mask-IoU tracker, and the interface both trackers share."""

from __future__ import annotations

import numpy as np
import pytest

from crossvis.tracking import MaskIoUTracker, OnlineTracker, Tracker


def _box(y0: int, x0: int, size: int = 4) -> np.ndarray:
    m = np.zeros((12, 16), dtype=bool)
    m[y0 : y0 + size, x0 : x0 + size] = True
    return m


def test_mask_iou_tracker_links_by_overlap() -> None:
    tracker = MaskIoUTracker(match_iou=0.3)
    tracker.update(
        0, {"masks": np.stack([_box(0, 0), _box(6, 10)]), "scores": np.array([0.9, 0.6]), "labels": np.array([0, 1])}
    )
    # frame 1: both moved by one pixel (IoU 9/23 ≈ 0.39, linked); a third object appears far away
    tracker.update(
        1,
        {
            "masks": np.stack([_box(7, 11), _box(0, 1), _box(8, 0)]),
            "scores": np.array([0.5, 0.7, 0.4]),
            "labels": np.array([1, 0, 0]),
        },
    )
    tracker.update(
        2, {"masks": np.zeros((0, 12, 16), dtype=bool), "scores": np.zeros(0), "labels": np.zeros(0, dtype=int)}
    )
    results = tracker.video_results(7, [10, 20])
    assert len(results) == 3
    first, second, third = results
    assert [s is not None for s in first["segmentations"]] == [True, True, False]
    assert first["category_id"] == 10 and first["score"] == pytest.approx(0.8)
    assert second["category_id"] == 20 and second["score"] == pytest.approx(0.55)
    assert [s is not None for s in third["segmentations"]] == [False, True, False]


def test_mask_iou_tracker_gives_a_track_one_detection_per_frame() -> None:
    tracker = MaskIoUTracker(match_iou=0.3)
    tracker.update(0, {"masks": _box(0, 0)[None], "scores": np.array([0.9]), "labels": np.array([0])})
    tracker.update(
        1, {"masks": np.stack([_box(0, 0), _box(0, 1)]), "scores": np.array([0.5, 0.8]), "labels": np.array([0, 0])}
    )
    results = tracker.video_results(0, [3])
    assert len(results) == 2  # the higher-scoring detection continued the track, the other started one
    assert results[0]["score"] == pytest.approx((0.9 + 0.8) / 2)


def test_update_returns_each_detections_track_and_frames_must_advance() -> None:
    tracker = MaskIoUTracker(match_iou=0.3)
    ids = tracker.update(
        0, {"masks": np.stack([_box(0, 0), _box(6, 10)]), "scores": np.array([0.9, 0.6]), "labels": np.array([0, 1])}
    )
    assert ids.tolist() == [0, 1]
    ids = tracker.update(
        1, {"masks": np.stack([_box(8, 0), _box(0, 1)]), "scores": np.array([0.4, 0.7]), "labels": np.array([0, 0])}
    )
    assert ids.tolist() == [2, 0] and tracker.num_tracks == 3 and tracker.num_frames == 2
    with pytest.raises(ValueError, match="^frame_index"):
        tracker.update(
            1, {"masks": np.zeros((0, 12, 16), dtype=bool), "scores": np.zeros(0), "labels": np.zeros(0, dtype=int)}
        )


def test_both_trackers_are_trackers_and_take_a_list_a_mapping_or_a_function_for_categories() -> None:
    assert issubclass(MaskIoUTracker, Tracker) and issubclass(OnlineTracker, Tracker)
    for lookup in ([10, 20], {0: 10, 1: 20}, lambda label: (10, 20)[label]):
        tracker = MaskIoUTracker(match_iou=0.3)
        tracker.update(0, {"masks": _box(0, 0)[None], "scores": np.array([0.9]), "labels": np.array([1])})
        assert [r["category_id"] for r in tracker.video_results(3, lookup)] == [20]
