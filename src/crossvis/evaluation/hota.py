"""HOTA, DetA and AssA of a YouTube-VIS results file through TrackEval's YouTube-VIS dataset class.

TrackEval reads its ground truth and tracker files from a folder layout of its own, so both are
written to a temporary folder: the ground truth with per-video folder names (TrackEval names a
sequence by the first path component of ``file_names``) and the per-frame fields it reads
(``height``, ``width``, ``areas``), the results scored at least ``score_threshold``. HOTA does not
use scores, so every result counts. Reported: the figures combined over the classes
(``cls_comb_det_av``: a class without ground truth or results does not count as 0),
each the mean over its localisation thresholds.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from crossvis.rle import to_rle

SPLIT = "analysis"


def _uncompressed(rle: dict) -> dict:
    """TrackEval re-encodes ground truth with ``frPyObjects``, which takes polygons or uncompressed RLE only."""
    flat = mask_utils.decode(rle).flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], changes, [flat.size]]))
    if flat.size and flat[0]:
        counts = np.concatenate([[0], counts])  # runs start with background
    return {"size": list(rle["size"]), "counts": counts.astype(int).tolist()}


def _trackeval_ground_truth(ground_truth: Mapping[str, Any]) -> dict:
    videos = [
        {**v, "file_names": [f"video{v['id']}/{f:05d}.jpg" for f in range(v["length"])]} for v in ground_truth["videos"]
    ]
    size = {v["id"]: (v["height"], v["width"]) for v in ground_truth["videos"]}
    annotations = []
    for ann in ground_truth["annotations"]:
        h, w = size[ann["video_id"]]
        rles = [None if s is None else to_rle(s, h, w) for s in ann["segmentations"]]
        areas = [None if r is None else int(mask_utils.area(r)) for r in rles]
        segs = [None if r is None else _uncompressed(r) for r in rles]
        annotations.append({**ann, "segmentations": segs, "areas": areas, "height": h, "width": w})
    return {"videos": videos, "categories": ground_truth["categories"], "annotations": annotations}


def hota_metrics(ground_truth: Mapping[str, Any], results: list[dict], score_threshold: float = 0.0) -> dict:
    """HOTA, DetA, AssA (fractions, combined over classes) of the results scored ≥ ``score_threshold``."""
    import trackeval

    kept = [r for r in results if r["score"] >= score_threshold]
    with tempfile.TemporaryDirectory(prefix="crossvis-hota-") as tmp:
        root = Path(tmp)
        gt_dir = root / "gt" / f"youtube_vis_{SPLIT}"
        tr_dir = root / "trackers" / f"youtube_vis_{SPLIT}" / "results" / "data"
        gt_dir.mkdir(parents=True)
        tr_dir.mkdir(parents=True)
        (gt_dir / "gt.json").write_text(json.dumps(_trackeval_ground_truth(ground_truth)))
        (tr_dir / "results.json").write_text(json.dumps(kept))
        dataset_config = {
            "GT_FOLDER": f"{root / 'gt'}/",
            "TRACKERS_FOLDER": f"{root / 'trackers'}/",
            "OUTPUT_FOLDER": str(root / "out"),
            "SPLIT_TO_EVAL": SPLIT,
            "PRINT_CONFIG": False,
        }
        eval_config = {
            "USE_PARALLEL": False,
            "PRINT_RESULTS": False,
            "PRINT_CONFIG": False,
            "TIME_PROGRESS": False,
            "OUTPUT_SUMMARY": False,
            "OUTPUT_DETAILED": False,
            "PLOT_CURVES": False,
            "LOG_ON_ERROR": None,
        }
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator = trackeval.Evaluator(eval_config)
            dataset = trackeval.datasets.YouTubeVIS(dataset_config)
            res, _ = evaluator.evaluate([dataset], [trackeval.metrics.HOTA({"PRINT_CONFIG": False})])
    combined = res["YouTubeVIS"]["results"]["COMBINED_SEQ"]["cls_comb_det_av"]["HOTA"]
    return {k: float(np.mean(combined[k])) for k in ("HOTA", "DetA", "AssA")} | {"score_threshold": score_threshold}
