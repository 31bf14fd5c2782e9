"""COCO mask and box AP of per-image detections, with pycocotools' COCOeval (the COCO stage, Table 4).

Results follow the official COCO results format: ``{image_id, category_id, score, bbox [x, y, w, h],
segmentation}`` with compressed RLE (``counts`` a string). As in detectron2's COCOEvaluator the
``bbox`` field is removed for the mask evaluation: otherwise ``loadRes`` takes the box area as
the detection's area, which changes the small/medium/large split of the mask AP.
"""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from crossvis.rle import encode_masks

# COCOeval.stats indices → metric suffix
STATS = {"AP": 0, "AP50": 1, "AP75": 2, "APs": 3, "APm": 4, "APl": 5}
IOU_TYPES = {"segm": "mask", "bbox": "box"}


def detections_to_coco(image_id: int, detections: dict[str, torch.Tensor], category_ids: list[int]) -> list[dict]:
    """``forward_infer`` output (xyxy boxes, bool masks at the image size, labels, scores) → COCO results."""
    boxes = detections["boxes"].cpu().numpy().astype(np.float64)
    masks = detections["masks"].cpu().numpy()
    results = []
    rles = encode_masks(masks.astype(bool), range(len(masks)))
    for box, rle, label, score in zip(boxes, rles, detections["labels"].tolist(), detections["scores"].tolist()):
        results.append(
            {
                "image_id": int(image_id),
                "category_id": int(category_ids[label]),
                "score": float(score),
                "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                "segmentation": rle,
            }
        )
    return results


def evaluate_coco(ground_truth: dict, results: list[dict], verbose: bool = True) -> dict[str, float]:
    """``AP_mask``, ``AP_box`` and their AP50/AP75/APs/APm/APl variants: COCOeval's stats (0..1, −1
    where no ground truth exists), like ``evaluation.metric``. No detections at all score 0.
    ``verbose`` prints COCOeval's summary tables.
    """
    gt = COCO()
    gt.dataset = copy.deepcopy(ground_truth)
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    metrics = {}
    for iou_type, suffix in IOU_TYPES.items():
        stats = np.zeros(len(STATS))
        if results:
            dets = [{k: v for k, v in r.items() if iou_type == "bbox" or k != "bbox"} for r in copy.deepcopy(results)]
            quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
            with quiet:
                evaluator = COCOeval(gt, gt.loadRes(dets), iou_type)
                evaluator.evaluate()
                evaluator.accumulate()
                if verbose:
                    print(f"COCO {suffix} AP:")
                evaluator.summarize()
            stats = evaluator.stats
        for name, index in STATS.items():
            metrics[f"{name}_{suffix}"] = float(stats[index])
    return metrics
