"""YouTube-VIS metric: hand-computed cases, an independent reference, input errors and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from crossvis.evaluation.metric import METRIC_KEYS, evaluate, main, spatiotemporal_iou

H = W = 40


def rle(mask: np.ndarray) -> dict:
    out = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": out["size"], "counts": out["counts"].decode()}


def box(y: int, x: int, h: int, w: int, size: tuple[int, int] = (H, W)) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    mask[y : y + h, x : x + w] = True
    return mask


SQUARE = box(5, 5, 10, 10)  # area 100


def ground_truth(tracks: list[tuple[int, list]], length: int = 3, size: tuple[int, int] = (H, W)) -> dict:
    """One video (id 7) holding the given (category_id, per-frame segmentations) tracks."""
    return {
        "videos": [
            {
                "id": 7,
                "height": size[0],
                "width": size[1],
                "length": length,
                "file_names": [f"v/{i:05d}.jpg" for i in range(length)],
            }
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {
                "id": 10 + i,
                "video_id": 7,
                "category_id": c,
                "iscrowd": 0,
                "segmentations": segs,
                "bboxes": [None] * length,
            }
            for i, (c, segs) in enumerate(tracks)
        ],
    }


def result(masks: list, score: float = 0.9, category_id: int = 1) -> dict:
    return {
        "video_id": 7,
        "category_id": category_id,
        "score": score,
        "segmentations": [None if m is None else rle(m) for m in masks],
    }


GT_ONE = ground_truth([(1, [rle(SQUARE)] * 3)])
# Frame 0 shifted by 5 columns: intersection 50 + 100 + 100 = 250, union 150 + 100 + 100 = 350.
SHIFTED = [box(5, 10, 10, 10), SQUARE, SQUARE]  # IoU 5/7 = 0.714: thresholds .50 ... .70 (5 of 10)


def test_perfect_prediction_scores_one() -> None:
    m = evaluate(GT_ONE, [result([SQUARE] * 3)])
    assert m == pytest.approx({"AP": 1, "AP50": 1, "AP75": 1, "APs": 1, "APm": -1, "APl": -1, "AR1": 1, "AR10": 1})


def test_shifted_mask_counts_only_thresholds_below_its_spatiotemporal_iou() -> None:
    # The mean of per-frame IoUs would be (1/3 + 1 + 1) / 3 = 0.78 (6 thresholds): the sum over frames gives 5.
    m = evaluate(GT_ONE, [result(SHIFTED)])
    assert m["AP"] == pytest.approx(0.5)
    assert (m["AP50"], m["AP75"]) == pytest.approx((1.0, 0.0))


def test_wrong_category_scores_zero() -> None:
    m = evaluate(GT_ONE, [result([SQUARE] * 3, category_id=2)])
    assert m["AP"] == 0 and m["AR10"] == 0


def test_lower_scored_duplicate_does_not_hurt() -> None:
    m = evaluate(GT_ONE, [result([SQUARE] * 3, score=0.9), result([SQUARE] * 3, score=0.5)])
    assert m["AP"] == pytest.approx(1.0)


def test_worse_duplicate_ranked_first() -> None:
    # IoU <= .70: the shifted one matches first (precision 1). IoU >= .75: it is a false positive and the
    # perfect one is matched second: precision 1/2 at recall 1, AP_t = 0.5. AP = (5 * 1 + 5 * 0.5) / 10.
    m = evaluate(GT_ONE, [result(SHIFTED, score=0.9), result([SQUARE] * 3, score=0.5)])
    assert m["AP"] == pytest.approx(0.75)
    assert m["AP75"] == pytest.approx(0.5)
    assert m["AR1"] == pytest.approx(0.5)  # top-1 is the shifted track: recalled at 5 of 10 thresholds
    assert m["AR10"] == pytest.approx(1.0)


def test_prediction_missing_a_frame() -> None:
    # Intersection 200, union 300 (the ground truth's third frame): IoU 2/3 → thresholds .50 ... .65.
    m = evaluate(GT_ONE, [result([SQUARE, SQUARE, None])])
    assert m["AP"] == pytest.approx(0.4)


def test_prediction_where_ground_truth_is_absent_adds_to_union() -> None:
    gt = ground_truth([(1, [rle(SQUARE), rle(SQUARE), None])])
    # Intersection 200, union 200 + 40 = 240: IoU 0.833 → thresholds .50 ... .80 (7 of 10).
    m = evaluate(gt, [result([SQUARE, SQUARE, box(0, 0, 4, 10)])])
    assert m["AP"] == pytest.approx(0.7)


def test_no_results_scores_zero() -> None:
    m = evaluate(GT_ONE, [])
    assert m == pytest.approx({"AP": 0, "AP50": 0, "AP75": 0, "APs": 0, "APm": -1, "APl": -1, "AR1": 0, "AR10": 0})


@pytest.mark.parametrize(("side", "expected"), [(10, (1, -1, -1)), (150, (-1, 1, -1)), (260, (-1, -1, 1))])
def test_area_ranges_are_minus_one_without_ground_truth(side: int, expected: tuple[int, int, int]) -> None:
    size = (300, 300)
    mask = box(0, 0, side, side, size)
    gt = ground_truth([(1, [rle(mask)])], length=1, size=size)
    m = evaluate(gt, [result([mask])])
    assert (m["APs"], m["APm"], m["APl"]) == pytest.approx(expected)
    assert m["AP"] == pytest.approx(1.0)


def test_area_range_uses_mean_of_non_empty_frames() -> None:
    size = (300, 300)
    big = box(0, 0, 150, 150, size)  # 22500: medium; averaging in the absent frames would make it small
    gt = ground_truth([(1, [rle(big), None, None])], size=size)
    m = evaluate(gt, [result([big, None, None])])
    assert (m["APs"], m["APm"]) == pytest.approx((-1, 1))


def test_ground_truth_area_comes_from_json_areas_when_given() -> None:
    # The official ytvoseval ranges a ground-truth track by the mean of its non-null, non-zero json
    # `areas`, not by its masks: a 100-pixel mask annotated as 20000 and 70000 pixels is medium.
    size = (300, 300)
    small = box(0, 0, 10, 10, size)
    gt = ground_truth([(1, [rle(small), rle(small), None])], size=size)
    gt["annotations"][0]["areas"] = [20000, 0, None]  # mean over the truthy entries: 20000 -> medium
    m = evaluate(gt, [result([small, small, None])])
    assert (m["APs"], m["APm"], m["APl"]) == pytest.approx((-1, 1, -1))
    gt["annotations"][0]["areas"] = [70000, 70000, None]  # large
    assert evaluate(gt, [result([small, small, None])])["APl"] == pytest.approx(1)
    medium = box(0, 0, 150, 150, size)
    gt = ground_truth([(1, [rle(medium), rle(medium), None])], size=size)
    gt["annotations"][0]["areas"] = [None, None, None]  # no area at all: 0, small (as the official code)
    assert evaluate(gt, [result([medium, medium, None])])["APs"] == pytest.approx(1)
    del gt["annotations"][0]["areas"]  # no field: the masks' mean area (22500, medium)
    assert evaluate(gt, [result([medium, medium, None])])["APm"] == pytest.approx(1)


@pytest.mark.parametrize(
    ("areas", "message"),
    [([1, 2], "expected a list of 3 numbers or nulls"), ("big", "got str"), ([1, "2", None], "got '2'")],
)
def test_malformed_ground_truth_areas_are_rejected(areas: object, message: str) -> None:
    gt = ground_truth([(1, [rle(SQUARE)] * 3)])
    gt["annotations"][0]["areas"] = areas
    with pytest.raises(ValueError, match=f"ground truth annotation 10 \\(video 7\\): field 'areas': .*{message}"):
        evaluate(gt, [result([SQUARE] * 3)])


def test_ar1_vs_ar10_with_two_ground_truth_tracks() -> None:
    other = box(25, 25, 10, 10)
    gt = ground_truth([(1, [rle(SQUARE)] * 3), (1, [rle(other)] * 3)])
    m = evaluate(gt, [result([SQUARE] * 3, score=0.9), result([other] * 3, score=0.8)])
    assert (m["AP"], m["AR1"], m["AR10"]) == pytest.approx((1.0, 0.5, 1.0))


def test_ground_truth_encodings_are_equivalent() -> None:
    polygon = [[5.0, 5.0, 15.0, 5.0, 15.0, 15.0, 5.0, 15.0]]
    poly_mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygon, H, W))).astype(bool)
    # Uncompressed RLE written by hand: column-major runs, starting with background.
    flat = SQUARE.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    counts = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    gt = ground_truth([(1, [polygon, {"size": [H, W], "counts": counts}, rle(SQUARE)])])
    m = evaluate(gt, [result([poly_mask, SQUARE, SQUARE])])
    assert m["AP"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# Independent reference: per-pair IoU with mask merges, greedy matching and 101-point AP by hand.


def reference_iou(d: list, g: list) -> float:
    inter = union = 0
    for a, b in zip(d, g):
        if a and b:
            inter += mask_utils.area(mask_utils.merge([a, b], intersect=True))
            union += mask_utils.area(mask_utils.merge([a, b], intersect=False))
        elif a or b:
            union += mask_utils.area(a or b)
    return inter / union if union else 0.0


def reference_ap(gts: dict[int, list], dets: list[tuple[int, float, list]], threshold: float) -> float:
    """AP of one category: dets (video, score, track) pooled over videos, best unmatched GT of the same video."""
    dets = sorted(dets, key=lambda d: -d[1])
    matched: set[tuple[int, int]] = set()
    hits = []
    for video, _, track in dets:
        best, best_iou = None, threshold
        for j, g in enumerate(gts[video]):
            iou = reference_iou(track, g)
            if (video, j) not in matched and iou >= best_iou:
                best, best_iou = j, iou
        hits.append(best is not None)
        if best is not None:
            matched.add((video, best))
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    recall = tp / sum(len(g) for g in gts.values())
    return float(np.mean([precision[recall >= r].max(initial=0.0) for r in np.linspace(0, 1, 101)]))


def random_case(seed: int) -> tuple[dict, list[dict], dict[int, list], list]:
    rng = np.random.default_rng(seed)
    length, size = 4, (24, 24)

    def jitter(y: int, x: int, shift: int) -> list:
        """A 10x10 box track moved by up to ``shift`` pixels per frame, absent in ~15% of frames."""
        return [
            None
            if rng.random() < 0.15
            else rle(box(y + rng.integers(-shift, shift + 1), x + rng.integers(-shift, shift + 1), 10, 10, size))
            for _ in range(length)
        ]

    videos, annotations, results = [], [], []
    gts: dict[int, list] = {}
    dets = []
    for vid in (3, 5):
        videos.append({"id": vid, "height": size[0], "width": size[1], "length": length, "file_names": ["x"] * length})
        gts[vid] = []
        for _ in range(2):
            y, x = rng.integers(3, 11, size=2)
            track = jitter(y, x, 0)
            track[0] = rle(box(y, x, 10, 10, size))  # at least one present frame
            gts[vid].append(track)
            annotations.append(
                {"id": len(annotations) + 1, "video_id": vid, "category_id": 1, "iscrowd": 0, "segmentations": track}
            )
            for _ in range(2):
                pred = jitter(y, x, int(rng.integers(0, 3)))
                score = float(rng.random())
                dets.append((vid, score, pred))
                results.append({"video_id": vid, "category_id": 1, "score": score, "segmentations": pred})
    gt = {"videos": videos, "categories": [{"id": 1, "name": "a"}], "annotations": annotations}
    return gt, results, gts, dets


def test_spatiotemporal_iou_matches_per_pair_reference() -> None:
    _, _, gts, dets = random_case(0)
    tracks = [d[2] for d in dets if d[0] == 3]
    expected = np.array([[reference_iou(d, g) for g in gts[3]] for d in tracks])
    assert expected.min() < 0.5 < expected.max()  # a meaningful mix
    np.testing.assert_allclose(spatiotemporal_iou(tracks, gts[3]), expected, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_independent_reference(seed: int) -> None:
    gt, results, gts, dets = random_case(seed)
    thresholds = [0.5 + 0.05 * k for k in range(10)]
    aps = [reference_ap(gts, dets, t) for t in thresholds]
    m = evaluate(gt, results)
    assert 0 < m["AP"] < 1
    assert m["AP"] == pytest.approx(np.mean(aps))
    assert (m["AP50"], m["AP75"]) == pytest.approx((aps[0], aps[5]))


# ---------------------------------------------------------------------------------------------
# Input errors and CLI.


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"video_id": 99}, "video_id 99 is not a ground-truth video id"),
        ({"category_id": 5}, r"\(video 7\): category_id 5 is not a ground-truth category, expected one of \[1, 2\]"),
        (
            {"segmentations": [rle(SQUARE)] * 2},
            r"\(video 7\): segmentations has 2 entries, expected the video length 3",
        ),
        (
            {"segmentations": [rle(box(0, 0, 2, 2, (20, 40)))] * 3},
            r"\(video 7\): segmentations\[0\].size is \[20, 40\], expected \[height, width\] = \[40, 40\]",
        ),
        ({"score": "high"}, r"results\[0\].score: expected a finite float"),
    ],
)
def test_bad_results_raise_naming_video_field_and_expected_value(entry: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate(GT_ONE, [{**result([SQUARE] * 3), **entry}])


def test_ground_truth_without_annotations_is_rejected() -> None:
    gt = {k: v for k, v in GT_ONE.items() if k != "annotations"}
    with pytest.raises(ValueError, match="missing field 'annotations'"):
        evaluate(gt, [])


def test_cli_prints_table_then_json(tmp_path: Path) -> None:
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(GT_ONE))
    res_path.write_text(json.dumps([result(SHIFTED)]))
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "crossvis.evaluation.metric", str(gt_path), str(res_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    metrics = json.loads(lines[-1])
    assert set(metrics) == set(METRIC_KEYS)
    assert metrics["AP"] == pytest.approx(0.5)
    assert "AP50" in lines[0]


@pytest.mark.parametrize("case", ["missing", "malformed", "unknown_video"])
def test_cli_exits_1_on_bad_input(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(GT_ONE))
    expected = {
        "missing": "results file not found",
        "malformed": "res.json: malformed JSON at line 1",
        "unknown_video": "video_id 8 is not a ground-truth video id",
    }[case]
    if case == "malformed":
        res_path.write_text("[{")
    elif case == "unknown_video":
        res_path.write_text(json.dumps([{**result([SQUARE] * 3), "video_id": 8}]))
    with pytest.raises(SystemExit) as exit_info:
        main([str(gt_path), str(res_path)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1
