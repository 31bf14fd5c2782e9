"""Per-frame COCO AP of a video split, on hand-computed cases (COCOeval's 101-point AP)."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch

from crossvis.evaluation.frame_ap import FrameDetections, frame_ap, frame_image_ids, frames_ground_truth

H, W = 40, 60


def _square(x0: int, y0: int, size: int = 20) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0 : y0 + size, x0 : x0 + size] = True
    return m


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def _ground_truth() -> dict:
    """Video 5 (2 frames): a square in frame 0 only. Video 3 (1 frame): a square of category 8 (polygon)."""
    return {
        "videos": [
            {"id": 5, "height": H, "width": W, "length": 2},
            {"id": 3, "height": H, "width": W, "length": 1},
        ],
        "categories": [{"id": 2, "name": "a"}, {"id": 8, "name": "b"}],
        "annotations": [
            {"id": 1, "video_id": 5, "category_id": 2, "iscrowd": 0, "segmentations": [_rle(_square(0, 0)), None]},
            {
                "id": 2,
                "video_id": 3,
                "category_id": 8,
                "iscrowd": 0,
                "segmentations": [[[30, 10, 50, 10, 50, 30, 30, 30]]],
            },
        ],
    }


def _detections(masks: list[np.ndarray], labels: list[int], scores: list[float]) -> dict:
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "masks": torch.from_numpy(np.stack(masks)),
        "labels": torch.tensor(labels),
        "scores": torch.tensor(scores),
    }


def test_every_frame_is_an_image_and_every_present_mask_an_annotation() -> None:
    gt = _ground_truth()
    assert frame_image_ids(gt["videos"]) == {(5, 0): 1, (5, 1): 2, (3, 0): 3}
    coco = frames_ground_truth(gt)
    assert [image["id"] for image in coco["images"]] == [1, 2, 3]  # frame 1 of video 5 has no object, still an image
    assert [(a["image_id"], a["category_id"], a["area"]) for a in coco["annotations"]] == [(1, 2, 400.0), (3, 8, 400.0)]
    assert coco["annotations"][1]["bbox"] == [30.0, 10.0, 20.0, 20.0]  # from the polygon


def test_exact_detections_score_one_and_a_false_positive_above_them_halves_ap() -> None:
    gt = _ground_truth()
    frames = FrameDetections(gt["videos"], category_ids=[2, 8])
    frames.add(5, 0, _detections([_square(0, 0)], [0], [0.9]))
    frames.add(3, 0, _detections([_square(30, 10)], [1], [0.8]))
    assert frame_ap(gt, frames)["frame_AP_mask"] == pytest.approx(1.0)
    assert frame_ap(gt, frames)["frame_AP_box"] == pytest.approx(1.0)
    # A category-2 detection on the empty frame 1 of video 5, scored above the true one:
    # precision 1/2 at recall 1 for category 2 → AP 0.5; category 8 keeps AP 1 → mean 0.75.
    frames.add(5, 1, _detections([_square(0, 0)], [0], [0.95]))
    assert frame_ap(gt, frames)["frame_AP_mask"] == pytest.approx(0.75)


def test_the_collector_keys_frames_by_video_and_index() -> None:
    gt = _ground_truth()
    frames = FrameDetections(gt["videos"], category_ids=[2, 8])
    frames.collector(5)(0, None, _detections([_square(0, 0)], [0], [0.9]), None)  # VideoInference's on_frame
    assert [r["image_id"] for r in frames.results] == [1]
    with pytest.raises(KeyError):
        frames.add(5, 2, _detections([_square(0, 0)], [0], [0.9]))  # video 5 has 2 frames
