"""COCO mask / box AP of per-image detections on a hand-computed case (pycocotools COCOeval semantics)."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch

from crossvis.evaluation.coco_eval import detections_to_coco, evaluate_coco


def _square(x0: int, y0: int, x1: int, y1: int, size: int = 100) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[y0:y1, x0:x1] = True
    return m


def _ground_truth() -> dict:
    """One 100x100 image: a 40x40 object (area 1600: "medium") and a crowd region."""
    crowd = mask_utils.encode(np.asfortranarray(_square(60, 60, 90, 90).astype(np.uint8)))
    return {
        "images": [{"id": 7, "width": 100, "height": 100, "file_name": "a.jpg"}],
        "categories": [{"id": 3, "name": "thing"}, {"id": 9, "name": "other"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 7,
                "category_id": 3,
                "iscrowd": 0,
                "area": 1600,
                "bbox": [10, 10, 40, 40],
                "segmentation": [[10, 10, 50, 10, 50, 50, 10, 50]],
            },
            {
                "id": 2,
                "image_id": 7,
                "category_id": 3,
                "iscrowd": 1,
                "area": 900,
                "bbox": [60, 60, 30, 30],
                "segmentation": {"size": [100, 100], "counts": crowd["counts"].decode()},
            },
        ],
    }


def test_detections_to_coco_format() -> None:
    det = {
        "boxes": torch.tensor([[10.0, 20.0, 50.0, 60.0]]),
        "masks": torch.from_numpy(_square(10, 20, 50, 60))[None],
        "labels": torch.tensor([1]),
        "scores": torch.tensor([0.5]),
    }
    (result,) = detections_to_coco(7, det, category_ids=[3, 9])
    assert result["image_id"] == 7 and result["category_id"] == 9 and result["score"] == pytest.approx(0.5)
    assert result["bbox"] == [10.0, 20.0, 40.0, 40.0]  # xyxy -> xywh
    assert isinstance(result["segmentation"]["counts"], str)  # compressed RLE, json-serialisable
    assert mask_utils.area(result["segmentation"]) == 1600


def test_coco_ap_hand_case() -> None:
    """Detection A (0.9) covers only the crowd region: ignored, not a false positive (else AP = 0.5).

    Detection B (0.8): exact mask, box [10, 10, 50, 62] with IoU 1600 / 2080 = 0.769 against the
    ground-truth box. Mask: a true positive at all ten IoU thresholds → AP_mask = 1. Box: a true
    positive at 0.50 … 0.75 (six of ten thresholds, precision 1) and a miss above → AP_box = 0.6.
    """
    det = {
        "boxes": torch.tensor([[60.0, 60.0, 90.0, 90.0], [10.0, 10.0, 50.0, 62.0]]),
        "masks": torch.from_numpy(np.stack([_square(60, 60, 90, 90), _square(10, 10, 50, 50)])),
        "labels": torch.tensor([0, 0]),
        "scores": torch.tensor([0.9, 0.8]),
    }
    metrics = evaluate_coco(_ground_truth(), detections_to_coco(7, det, [3, 9]), verbose=False)
    assert metrics["AP_mask"] == pytest.approx(1.0)
    assert metrics["AP_box"] == pytest.approx(0.6)
    assert metrics["AP50_box"] == pytest.approx(1.0) and metrics["AP75_box"] == pytest.approx(1.0)
    assert metrics["APm_mask"] == pytest.approx(1.0)
    assert metrics["APs_mask"] == -1.0  # no small ground truth: COCOeval's -1


def test_coco_ap_without_detections_is_zero() -> None:
    metrics = evaluate_coco(_ground_truth(), [], verbose=False)
    assert metrics["AP_mask"] == 0.0 and metrics["AP_box"] == 0.0
