"""Online tracker on scripted detections: identities, class gating, threshold, conflicts, outputs."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from crossvis.evaluation.results import write_results_json
from crossvis.tracking import OnlineTracker

H, W = 32, 48
LABEL_TO_CATEGORY = {0: 11, 1: 22}


def emb(cos: float) -> list[float]:
    """Unit embedding at cosine ``cos`` from e0 = [1, 0, 0]."""
    return [cos, math.sqrt(1 - cos * cos), 0.0]


E0, E1 = [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]


def mask_of(b: list[int]) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[b[1] : b[3], b[0] : b[2]] = True
    return m


def detections(items: list[tuple[list[int], int, float, list[float]]]) -> dict[str, torch.Tensor]:
    """Detections dict as the model returns it, from (box xyxy, label, score, embedding) tuples."""
    return {
        "boxes": torch.tensor([it[0] for it in items], dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor([it[1] for it in items], dtype=torch.long),
        "scores": torch.tensor([it[2] for it in items]),
        "masks": torch.from_numpy(
            np.stack([mask_of(it[0]) for it in items]) if items else np.zeros((0, H, W), dtype=bool)
        ),
        "embeddings": torch.tensor([it[3] for it in items]).reshape(-1, 3),
    }


def decode(seg: dict | None) -> np.ndarray | None:
    return None if seg is None else mask_utils.decode(seg).astype(bool)


def test_identities_kept_across_frames_and_results_round_trip(tmp_path: Path) -> None:
    tracker = OnlineTracker()
    a_boxes = [[2 + 2 * t, 2, 12 + 2 * t, 12] for t in range(4)]
    b_boxes = [[30, 10, 42, 24], [29, 10, 41, 24], None, [2, 20, 14, 30]]  # B leaves, returns elsewhere
    a_scores, b_scores = [0.9, 0.7, 0.8, 0.6], [0.5, 0.4, None, 0.3]
    ids = []
    for t in range(4):
        frame = [(a_boxes[t], 0, a_scores[t], E0)]
        if b_boxes[t] is not None:
            frame.append((b_boxes[t], 0, b_scores[t], E1))
        if t % 2:
            frame.reverse()
        out = tracker.update(t, detections(frame))
        ids.append(out[::-1] if t % 2 else out)
    tracker.update(4, detections([]))
    # A is always track 0; B is track 1, re-identified by its embedding after its absence (box IoU 0).
    assert [list(i) for i in ids] == [[0, 1], [0, 1], [0], [0, 1]]

    results = tracker.video_results(3, LABEL_TO_CATEGORY)
    assert [(r["video_id"], r["category_id"]) for r in results] == [(3, 11), (3, 11)]
    assert results[0]["score"] == pytest.approx(0.75)
    assert results[1]["score"] == pytest.approx(0.4)

    path = tmp_path / "results.json"
    write_results_json(path, results)
    loaded = json.loads(path.read_text())
    expected = [[mask_of(b) for b in a_boxes] + [None], [None if b is None else mask_of(b) for b in b_boxes] + [None]]
    for entry, masks in zip(loaded, expected):
        assert len(entry["segmentations"]) == 5
        for seg, mask in zip(entry["segmentations"], masks):
            got = decode(seg)
            assert (got is None) == (mask is None)
            if mask is not None:
                np.testing.assert_array_equal(got, mask)


def test_never_joins_different_classes() -> None:
    tracker = OnlineTracker()
    tracker.update(0, detections([([0, 0, 10, 10], 0, 0.9, E0)]))
    ids = tracker.update(1, detections([([0, 0, 10, 10], 1, 0.9, E0)]))  # identical but for the class
    assert list(ids) == [1]
    assert [r["category_id"] for r in tracker.video_results(0, LABEL_TO_CATEGORY)] == [11, 22]


@pytest.mark.parametrize(
    ("cos", "shift", "joins"),
    [
        (0.3, 20, False),  # 0.3 + IoU 0 < 0.4
        (0.5, 20, True),  # 0.5 + IoU 0
        (0.0, 5, False),  # 0 + IoU 50/150
        (0.1, 5, True),  # 0.1 + 1/3 = 0.43
    ],
)
def test_new_track_below_match_threshold(cos: float, shift: int, joins: bool) -> None:
    tracker = OnlineTracker(match_threshold=0.4)
    tracker.update(0, detections([([0, 0, 10, 10], 0, 0.9, E0)]))
    ids = tracker.update(1, detections([([shift, 0, shift + 10, 10], 0, 0.9, emb(cos))]))
    assert list(ids) == ([0] if joins else [1])


def test_track_takes_one_detection_per_frame_the_best_match() -> None:
    tracker = OnlineTracker()
    tracker.update(0, detections([([0, 0, 10, 10], 0, 0.8, E0)]))
    # X has the higher detection score but the lower match (cos 0.6 + IoU 0.8); Y matches 1 + 1.
    x, y = ([1, 0, 11, 10], 0, 0.9, emb(0.6)), ([0, 0, 10, 10], 0, 0.4, E0)
    ids = tracker.update(1, detections([x, y]))
    assert list(ids) == [-1, 0]
    [track] = tracker.video_results(0, LABEL_TO_CATEGORY)
    np.testing.assert_array_equal(decode(track["segmentations"][1]), mask_of(y[0]))
    assert track["score"] == pytest.approx((0.8 + 0.4) / 2)


@pytest.mark.parametrize(
    ("det", "joins"),
    [
        # new: log(1/(1+e)) + 10 = 8.69; track: log(e/(1+e)) + 2/3 + 10 = 10.36
        (([5, 0, 15, 10], 0, 0.9, E0), True),
        # new: 8.69; track: -0.31 + 2 * 1 + 0 = 1.69 (the category term decides)
        (([0, 0, 10, 10], 1, 0.9, E0), False),
        # dot -0.5: new: log(1/(1+e^-.5)) + 10 = 9.53; track: log(e^-.5/(1+e^-.5)) + 0 + 10 = 9.03
        (([30, 20, 40, 30], 0, 0.9, emb(-0.5)), False),
    ],
)
def test_masktrack_scoring(det: tuple, joins: bool) -> None:
    tracker = OnlineTracker(scoring="masktrack")
    tracker.update(0, detections([([0, 0, 10, 10], 0, 0.9, E0)]))
    assert list(tracker.update(1, detections([det]))) == ([0] if joins else [1])


@pytest.mark.parametrize(("scale", "joins"), [(1.0, False), (4.0, True)])
def test_masktrack_scoring_uses_raw_dot_products(scale: float, joins: bool) -> None:
    """Unit vectors: dot 1 → track log(e/(1+e)) = -0.31 + 2 + 0 (other class) < new -1.31 + 10.
    Norm 4: dot 16 → track ≈ 0 + 2 + 0 = 2 > new ≈ -16 + 10 = -6, the embedding outweighs the category."""
    tracker = OnlineTracker(scoring="masktrack")
    tracker.update(0, detections([([0, 0, 10, 10], 0, 0.9, [scale * v for v in E0])]))
    assert list(tracker.update(1, detections([([0, 0, 10, 10], 1, 0.9, [scale * v for v in E0])]))) == (
        [0] if joins else [1]
    )


@pytest.mark.parametrize(("vote", "category"), [("first", 11), ("majority", 22)])
def test_category_vote(vote: str, category: int) -> None:
    # Without the category term a class change does not start a new track (new -1.31 < track 1.69).
    tracker = OnlineTracker(scoring="masktrack", category_vote=vote, masktrack_weights=(1.0, 2.0, 0.0))
    for t, label in enumerate([0, 1, 1]):
        tracker.update(t, detections([([0, 0, 10, 10], label, 0.9, E0)]))
    [track] = tracker.video_results(0, LABEL_TO_CATEGORY.__getitem__)
    assert track["category_id"] == category


def test_accepts_numpy_detections() -> None:
    tracker = OnlineTracker()
    for t in range(2):
        dets = {k: v.numpy() for k, v in detections([([0, 0, 10, 10], 0, 0.9, E0)]).items()}
        tracker.update(t, dets)
    assert tracker.num_tracks == 1


@pytest.mark.parametrize(
    ("frame", "change", "message"),
    [
        (0, {}, r"frame_index: expected an index above the last one \(0\), got 0"),
        (1, {"masks": torch.ones(1, H, W, dtype=torch.uint8)}, r"detections\['masks'\]: expected bool"),
        (1, {"embeddings": None}, r"missing \['embeddings'\]"),
    ],
)
def test_bad_updates_raise(frame: int, change: dict, message: str) -> None:
    tracker = OnlineTracker()
    tracker.update(0, detections([([0, 0, 10, 10], 0, 0.9, E0)]))
    dets = {**detections([([0, 0, 10, 10], 0, 0.9, E0)]), **change}
    dets = {k: v for k, v in dets.items() if v is not None}
    with pytest.raises(ValueError, match=message):
        tracker.update(frame, dets)


# Two tracks far apart (box IoU 0: the match is the cosine alone), then two detections that both
# prefer track 0: D1 at cos .766 / .643 from tracks 0 / 1, D2 at cos .985 / .174.
T0, T1 = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
D1 = [math.cos(math.radians(40)), math.sin(math.radians(40)), 0.0]
D2 = [math.cos(math.radians(10)), math.sin(math.radians(10)), 0.0]


@pytest.mark.parametrize(("association", "expected"), [("greedy", [-1, 0]), ("hungarian", [1, 0])])
def test_hungarian_association_assigns_one_to_one_where_greedy_drops(association: str, expected: list) -> None:
    tracker = OnlineTracker(association=association)
    tracker.update(0, detections([([0, 0, 8, 8], 0, 0.9, T0), ([30, 20, 38, 28], 0, 0.9, T1)]))
    # Greedy: both pick track 0, D2 keeps it (.985) and D1 is dropped. Hungarian: D1 -> 1 (.643) + D2 -> 0.
    ids = tracker.update(1, detections([([40, 0, 48, 8], 0, 0.9, D1), ([40, 24, 48, 32], 0, 0.9, D2)]))
    assert list(ids) == expected


def test_hungarian_leaves_pairs_below_the_threshold_to_new_tracks() -> None:
    tracker = OnlineTracker(association="hungarian")
    tracker.update(0, detections([([0, 0, 8, 8], 0, 0.9, T0)]))
    ids = tracker.update(1, detections([([40, 0, 48, 8], 0, 0.9, emb(0.3))]))  # cos .3 < .4
    assert list(ids) == [1]


def unit(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees)), 0.0]


@pytest.mark.parametrize(("momentum", "joins"), [(0.0, True), (0.9, False)])
def test_momentum_memory_moves_slowly_with_the_matched_embeddings(momentum: float, joins: bool) -> None:
    tracker = OnlineTracker(momentum=momentum)
    tracker.update(0, detections([([0, 0, 8, 8], 0, 0.9, unit(0))]))
    tracker.update(1, detections([([0, 0, 8, 8], 0, 0.9, unit(40))]))  # joins: cos .766 + IoU 1
    # Far away (IoU 0) at 80°: cos 40° = .766 with the last embedding; the momentum memory
    # 0.9 * e(0°) + 0.1 * e(40°) points at 3.8°: cos 76.2° = .24 < .4, a new track.
    ids = tracker.update(2, detections([([30, 20, 38, 28], 0, 0.9, unit(80))]))
    assert list(ids) == ([0] if joins else [1])


@pytest.mark.parametrize(("track_score", "expected"), [("mean", [0.5, 0.9]), ("coverage", [0.5, 0.9 / 4])])
def test_coverage_scoring_does_not_reward_one_frame_tracks(track_score: str, expected: list) -> None:
    tracker = OnlineTracker(track_score=track_score)
    for frame in range(4):
        dets = [([0, 0, 8, 8], 0, 0.5, unit(0))] + ([([30, 20, 38, 28], 0, 0.9, unit(90))] if frame == 2 else [])
        tracker.update(frame, detections(dets))
    assert [r["score"] for r in tracker.video_results(0, LABEL_TO_CATEGORY)] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"association": "best"}, "association: expected 'greedy' or 'hungarian'"),
        ({"momentum": 1.0}, "momentum: expected a number in [0, 1)"),
        ({"track_score": "sum"}, "track_score: expected 'mean' or 'coverage'"),
        ({"reid_threshold": "high"}, "reid_threshold: expected null or a number"),
    ],
)
def test_bad_association_settings_raise_naming_the_argument(setting: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        OnlineTracker(**setting)


@pytest.mark.parametrize(
    ("reid_threshold", "cos", "expected"),
    [(None, 0.5, 0), (0.7, 0.5, 2), (0.7, 0.8, 0)],
)
def test_reid_after_a_gap_by_embedding_alone(reid_threshold, cos: float, expected: int) -> None:
    tracker = OnlineTracker(reid_threshold=reid_threshold)
    tracker.update(0, detections([([0, 0, 8, 8], 0, 0.9, unit(0)), ([30, 20, 38, 28], 0, 0.9, unit(90))]))
    tracker.update(1, detections([([30, 20, 38, 28], 0, 0.9, unit(90))]))  # track 0 is not seen
    # Far from both boxes, at cosine `cos` from track 0 (and cos(90° - angle) < .4 from track 1).
    angle = math.degrees(math.acos(cos))
    ids = tracker.update(2, detections([([40, 0, 48, 8], 0, 0.9, unit(-angle))]))
    assert list(ids) == [expected]  # public: any track at cos + IoU >= .4; reid: the gap needs cos >= .7


def test_reid_matches_the_tracks_of_the_previous_frame_first() -> None:
    def run(reid_threshold):
        tracker = OnlineTracker(reid_threshold=reid_threshold)
        tracker.update(0, detections([([0, 0, 8, 8], 0, 0.9, unit(0)), ([30, 20, 38, 28], 0, 0.9, unit(90))]))
        tracker.update(1, detections([([30, 20, 38, 28], 0, 0.9, unit(90))]))
        # On track 0's old box (IoU 1 + cos .34) and at cos .94 from track 1, seen last frame (IoU 0).
        return list(tracker.update(2, detections([([0, 0, 8, 8], 0, 0.9, unit(70))])))

    assert run(None) == [0] and run(0.7) == [1]
