"""scripts/compare_adelaidet.py's reference-free part: pairing two detection sets and the tolerance verdict;
for ``--losses`` the synthetic batch, its padding for our model and the loss / gradient verdicts.

The AdelaiDet side needs detectron2 and is run by hand (docs/parity.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))
from compare_adelaidet import (  # noqa: E402
    LOSS_BATCH_LAYOUT,
    compare_detections,
    compare_gradients,
    compare_losses,
    mask_iou,
    padded_loss_inputs,
    positives_per_level,
    synthetic_loss_batch,
)


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


def test_synthetic_loss_batch_is_seeded_with_tight_boxes() -> None:
    batch = synthetic_loss_batch(0)
    assert [item["image"].shape for item in batch] == [(300, 420, 3), (260, 390, 3)]
    for item, (_, ellipses) in zip(batch, LOSS_BATCH_LAYOUT):
        # integer centre and semi-axes: the ellipse reaches cx ± ax and cy ± ay exactly; box = last pixel + 1
        expected = [[cx - ax, cy - ay, cx + ax + 1, cy + ay + 1] for cx, cy, ax, ay, _ in ellipses]
        np.testing.assert_array_equal(item["boxes"], np.array(expected, np.float32))
        np.testing.assert_array_equal(item["classes"], [e[4] for e in ellipses])
        assert item["masks"].dtype == bool and item["masks"].shape == (len(ellipses), *item["image"].shape[:2])
        cx, cy = ellipses[-1][:2]
        last = item["masks"][-1]
        assert last[cy, cx] and (item["image"][last] == item["image"][cy, cx]).all()  # painted last, one colour
    again, other = synthetic_loss_batch(0), synthetic_loss_batch(1)
    assert all((a["image"] == b["image"]).all() for a, b in zip(batch, again))
    assert not (batch[0]["image"] == other[0]["image"]).all()


def test_synthetic_loss_batch_has_positives_on_four_levels_and_too_few_to_sample() -> None:
    """FCOS sizes of interest 64/128/256/512, radius 1.5: P3..P6 get positives, fewer than AdelaiDet's
    MAX_PROPOSALS (500 per batch) and our mask.max_proposals (500 per frame), so no side samples."""
    images, _, targets = padded_loss_inputs(synthetic_loss_batch(0))
    counts = positives_per_level(images, targets, 4, [64, 128, 256, 512], 1.5)
    assert list(counts) == ["P3", "P4", "P5", "P6", "P7"]
    assert all(counts[level] > 0 for level in ("P3", "P4", "P5", "P6")) and counts["P7"] == 0
    assert sum(counts.values()) < 500


def test_padded_loss_inputs_pad_images_and_masks_like_detectron2() -> None:
    batch = synthetic_loss_batch(0)
    images, sizes, targets = padded_loss_inputs(batch)
    assert tuple(images.shape) == (2, 1, 3, 320, 448)  # max (300, 420) rounded up to 32
    assert sizes.tolist() == [[[300, 420]], [[260, 390]]]
    for i, item in enumerate(batch):
        h, w = item["image"].shape[:2]
        np.testing.assert_array_equal(images[i, 0, :, :h, :w].numpy(), item["image"].transpose(2, 0, 1))  # RGB
        assert images[i, 0, :, h:].abs().sum() == 0 and images[i, 0, :, :, w:].abs().sum() == 0
        frame = targets[i][0]
        assert tuple(frame["masks"].shape) == (3, 320, 448)
        np.testing.assert_array_equal(frame["masks"][:, :h, :w].numpy(), item["masks"])
        assert not frame["masks"][:, h:].any() and not frame["masks"][:, :, w:].any()
        assert frame["identities"].tolist() == [0, 1, 2]
        np.testing.assert_array_equal(frame["boxes"].numpy(), item["boxes"])


REF_LOSSES = {"loss_fcos_cls": 2.0, "loss_fcos_loc": 1.0, "loss_fcos_ctr": 0.5, "loss_mask": 0.25}


def test_compare_losses_relative_tolerance() -> None:
    ours = {"loss_cls": 2.0001, "loss_box": 1.0, "loss_ctr": 0.5, "loss_mask": 0.25, "loss_cross": 0.0}
    report = compare_losses(REF_LOSSES, ours)
    assert report["ok"] and report["max_rel_diff"] == pytest.approx(5e-5)
    assert report["losses"]["loss_cls"] == {"ours": 2.0001, "reference": 2.0, "rel_diff": pytest.approx(5e-5)}
    report = compare_losses(REF_LOSSES, {**ours, "loss_mask": 0.2501})  # 4e-4 off
    assert not report["ok"] and report["max_rel_diff"] == pytest.approx(4e-4)
    assert compare_losses(REF_LOSSES, {**ours, "loss_mask": 0.2501}, tolerance=1e-3)["ok"]
    assert json.loads(json.dumps(report)) == report
    with pytest.raises(KeyError, match="ours:loss_box"):
        compare_losses(REF_LOSSES, {k: v for k, v in ours.items() if k != "loss_box"})


def test_compare_gradients_relative_norm_and_key_sets() -> None:
    ref = {"a": np.array([3.0, 4.0]), "b": np.zeros((2, 2)), "c": np.array([1.0])}
    report = compare_gradients(ref, {k: v.copy() for k, v in ref.items()})
    assert report["ok"] and report["compared"] == 3 and report["max_rel_diff"] == 0.0
    close = {**ref, "a": np.array([3.0, 4.0004])}  # |diff| 4e-4 over |ref| 5
    report = compare_gradients(ref, close)
    assert report["ok"] and report["max_rel_diff"] == pytest.approx(8e-5) and report["worst"] == "a"
    assert not compare_gradients(ref, {**ref, "a": np.array([3.0, 4.0006])})["ok"]  # 1.2e-4
    report = compare_gradients(ref, {**ref, "c": np.array([0.1])})  # a 0.1x gradient: 0.9 off
    assert not report["ok"] and report["worst"] == "c" and report["max_rel_diff"] == pytest.approx(0.9)
    report = compare_gradients(ref, {**ref, "b": np.full((2, 2), 1e-5)})  # zero reference: absolute norm 2e-5
    assert report["ok"] and report["max_rel_diff"] == pytest.approx(2e-5)
    report = compare_gradients(ref, {"a": ref["a"], "b": np.zeros(4), "d": np.ones(1)})
    assert not report["ok"]
    assert (report["only_reference"], report["only_ours"], report["misshapen"]) == (["c"], ["d"], ["b"])
