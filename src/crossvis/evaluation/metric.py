"""YouTube-VIS video AP/AR: COCO-style matching on spatio-temporal mask IoU.

The official YouTube-VIS API is a fork of the COCO API in which an "image" is a video and a
mask is a list of per-frame masks. We keep pycocotools' matching, 101-point interpolation and
area-range logic by subclassing ``COCOeval`` with each video as an image, and replace only the
IoU (summed over frames), the area of a track (mean non-empty per-frame area; for ground truth
the json's ``areas`` when present, as the official code), the area ranges
and the category/video bookkeeping. Crowd ground truth is ignored in matching as in COCO; its
IoU is the plain spatio-temporal IoU, as in the YouTube-VIS API.

CLI: ``python -m crossvis.evaluation.metric GT_JSON RESULTS_JSON``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from crossvis.cli import user_errors
from crossvis.errors import InputFormatError
from crossvis.evaluation.results import validate_results
from crossvis.files import read_json
from crossvis.rle import to_rle

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10")
# YouTube-VIS area ranges on a track's mean per-frame area: all, small, medium, large.
AREA_RANGES = [[0.0, 1e10], [0.0, 128.0**2], [128.0**2, 256.0**2], [256.0**2, 1e10]]
MAX_DETS = [1, 10, 100]

Rle = dict[str, Any]
Track = Sequence[Optional[Rle]]  # one entry per frame, None where absent


def track_area(track: Track) -> float:
    """Mean area over the frames where the track's mask is non-empty (0 if never present)."""
    present = [rle for rle in track if rle is not None]
    areas = mask_utils.area(present).astype(np.float64) if present else np.zeros(0)
    nonempty = areas[areas > 0]
    return float(nonempty.mean()) if nonempty.size else 0.0


def json_track_area(areas: Any, where: str, length: int) -> float:
    """A ground-truth track's area from the json's per-frame ``areas``, as the official ``ytvoseval``
    reads it: the mean of the entries that are neither null nor 0 (0 if there are none)."""
    if not isinstance(areas, list) or len(areas) != length:
        got = f"{len(areas)} entries" if isinstance(areas, list) else type(areas).__name__
        raise ValueError(
            f"{where}: field 'areas': expected a list of {length} numbers or nulls (one per frame), got {got}"
        )
    bad = [a for a in areas if a is not None and (isinstance(a, bool) or not isinstance(a, (int, float)))]
    if bad:
        raise ValueError(f"{where}: field 'areas': expected numbers or nulls, got {bad[0]!r}")
    present = [float(a) for a in areas if a]
    return float(np.mean(present)) if present else 0.0


def frame_overlaps(dts: Sequence[Track], gts: Sequence[Track]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame intersections [F, D, G] and areas [F, D], [F, G] of the tracks of one video.

    Per frame, one ``mask.iou`` call gives all pairwise IoUs; intersections are recovered from
    ``i = iou * (a + b) / (1 + iou)`` so no pair of masks is merged individually.
    """
    frames = len(gts[0]) if gts else (len(dts[0]) if dts else 0)
    inter = np.zeros((frames, len(dts), len(gts)))
    area_d = np.zeros((frames, len(dts)))
    area_g = np.zeros((frames, len(gts)))
    for f in range(frames):
        di = [i for i, t in enumerate(dts) if t[f] is not None]
        gi = [j for j, t in enumerate(gts) if t[f] is not None]
        d_rles = [dts[i][f] for i in di]
        g_rles = [gts[j][f] for j in gi]
        a_d = mask_utils.area(d_rles).astype(np.float64) if di else np.zeros(0)
        a_g = mask_utils.area(g_rles).astype(np.float64) if gi else np.zeros(0)
        area_d[f, di] = a_d
        area_g[f, gi] = a_g
        if di and gi:
            iou = mask_utils.iou(d_rles, g_rles, [0] * len(gi))
            inter[f][np.ix_(di, gi)] = np.rint(iou * (a_d[:, None] + a_g[None, :]) / (1.0 + iou))
    return inter, area_d, area_g


def overlaps_to_iou(inter: np.ndarray, area_d: np.ndarray, area_g: np.ndarray) -> np.ndarray:
    """IoU from intersections and areas of the same leading shape ([D, G] with [D], [G])."""
    union = area_d[..., :, None] + area_g[..., None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def spatiotemporal_iou(dts: Sequence[Track], gts: Sequence[Track]) -> np.ndarray:
    """IoU matrix [D, G] between tracks of one video, intersection and union summed over frames.

    A frame where only one track is present adds its area to the union.
    """
    if not dts or not gts:
        return np.zeros((len(dts), len(gts)))
    inter, area_d, area_g = frame_overlaps(dts, gts)
    return overlaps_to_iou(inter.sum(0), area_d.sum(0), area_g.sum(0))


class _VideoCOCO(COCO):
    """COCO index whose "images" are videos and whose segmentations are already per-frame RLE lists."""

    def __init__(self, dataset: dict) -> None:
        super().__init__()
        self.dataset = dataset
        with contextlib.redirect_stdout(io.StringIO()):
            self.createIndex()

    def annToRLE(self, ann: dict) -> list[Rle | None]:  # noqa: N802 (pycocotools name)
        """Segmentations were converted on load; COCOeval's per-image conversion is a no-op here."""
        return ann["segmentation"]


IouFn = Callable[[int, list[dict], list[dict]], np.ndarray]


class VideoCOCOeval(COCOeval):
    """COCOeval over videos with spatio-temporal IoU and the YouTube-VIS area ranges.

    ``ranges``: the ranges of the annotations' ``area`` field (the analysis puts other track
    attributes there, e.g. the duration, to get the official protocol restricted to a subset);
    ``iou_fn(video_id, sorted_dts, gts)``: an IoU source (e.g. a cache shared by many evaluations).
    """

    def __init__(
        self, gt: COCO, dt: COCO, ranges: Sequence[Sequence[float]] = AREA_RANGES, iou_fn: IouFn | None = None
    ) -> None:
        super().__init__(gt, dt, iouType="segm")
        self.params.areaRng = [list(r) for r in ranges]
        if self.params.areaRng != AREA_RANGES:  # summarize() only knows the labels of the area ranges
            self.params.areaRngLbl = [str(i) for i in range(len(ranges))]
        self.params.maxDets = MAX_DETS
        self._iou_fn = iou_fn

    def computeIoU(self, imgId: int, catId: int) -> np.ndarray:  # noqa: N802,N803 (pycocotools names)
        """Rows follow evaluateImg's order: results by descending score, top maxDets[-1]."""
        dts = self._dts[imgId, catId]
        gts = self._gts[imgId, catId]
        order = np.argsort([-d["score"] for d in dts], kind="mergesort")[: self.params.maxDets[-1]]
        if self._iou_fn is not None:
            return self._iou_fn(imgId, [dts[i] for i in order], gts) if len(order) and gts else []
        return spatiotemporal_iou([dts[i]["segmentation"] for i in order], [g["segmentation"] for g in gts])


def run_protocol(
    gt: dict,
    dt: dict,
    ranges: Sequence[Sequence[float]] = AREA_RANGES,
    iou_fn: IouFn | None = None,
    iou_thresholds: Sequence[float] | None = None,
    video_ids: Sequence[int] | None = None,
) -> VideoCOCOeval:
    """The official matching and accumulation on indexed datasets (see :func:`index_datasets`),
    optionally on some IoU thresholds or videos only; ``.eval['precision']`` is [T, R, K, A, M]."""
    coco_eval = VideoCOCOeval(_VideoCOCO(gt), _VideoCOCO(dt), ranges, iou_fn)
    if iou_thresholds is not None:
        coco_eval.params.iouThrs = np.asarray(iou_thresholds, dtype=np.float64)
    if video_ids is not None:
        coco_eval.params.imgIds = sorted(video_ids)
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval narrates every step
        coco_eval.evaluate()
        coco_eval.accumulate()
    return coco_eval


def mean_valid(values: np.ndarray) -> float:
    """COCOeval's summary of a slice of precision or recall: the mean of the entries > -1, or -1."""
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else -1.0


def _field(obj: Any, key: str, where: str) -> Any:
    """``obj[key]``, or a ValueError naming where the field is missing."""
    if not isinstance(obj, Mapping) or key not in obj:
        raise ValueError(f"{where}: missing field '{key}'")
    return obj[key]


def _check_track(where: str, track: Track, video: Mapping[str, int]) -> None:
    """A track has one entry per frame of its video, each mask of the video's size."""
    if len(track) != video["length"]:
        raise ValueError(
            f"{where}: segmentations has {len(track)} entries, expected the video length {video['length']}"
        )
    expected = [video["height"], video["width"]]
    for f, rle in enumerate(track):
        if rle is not None and list(rle["size"]) != expected:
            raise ValueError(
                f"{where}: segmentations[{f}].size is {list(rle['size'])}, expected [height, width] = {expected}"
            )


def _ground_truth_dataset(ground_truth: Mapping[str, Any]) -> dict:
    """Index the ground truth json by video, converting every frame's mask to compressed RLE."""
    hint = " (valid/test jsons hide their annotations: evaluate a held-out training split)"
    videos = {}
    for v in _field(ground_truth, "videos", "ground truth"):
        where = "ground truth video"
        vid = _field(v, "id", where)
        videos[vid] = {key: _field(v, key, f"{where} {vid}") for key in ("id", "height", "width", "length")}
    categories = [
        {"id": _field(c, "id", "ground truth category")} for c in _field(ground_truth, "categories", "ground truth")
    ]
    annotations = []
    for ann in _field(ground_truth, "annotations", "ground truth" + hint):
        ann_id = _field(ann, "id", "ground truth annotation")
        vid = _field(ann, "video_id", f"ground truth annotation {ann_id}")
        where = f"ground truth annotation {ann_id} (video {vid})"
        video = videos.get(vid)
        if video is None:
            raise ValueError(f"{where}: video_id {vid} is not in 'videos'")
        track = []
        for f, seg in enumerate(_field(ann, "segmentations", where)):
            try:
                track.append(to_rle(seg, video["height"], video["width"]))
            except (KeyError, TypeError, IndexError) as e:
                raise ValueError(f"{where}: segmentations[{f}] is not null, polygons or RLE ({e!r})") from None
        _check_track(where, track, video)
        # As the official evaluator: the json's areas when given (they may differ from the masks').
        area = json_track_area(ann["areas"], where, video["length"]) if "areas" in ann else track_area(track)
        annotations.append(
            {
                "id": ann_id,
                "image_id": vid,
                "category_id": _field(ann, "category_id", where),
                "iscrowd": int(ann.get("iscrowd", 0)),
                "area": area,
                "segmentation": track,
            }
        )
    return {"images": list(videos.values()), "categories": categories, "annotations": annotations}


def _results_dataset(results: list[dict], gt: dict) -> dict:
    """Index results like the ground truth, rejecting videos, categories or mask sizes it does not have."""
    videos = {v["id"]: v for v in gt["images"]}
    category_ids = sorted(c["id"] for c in gt["categories"])
    annotations = []
    for i, res in enumerate(results):
        vid = res["video_id"]
        video = videos.get(vid)
        if video is None:
            raise ValueError(
                f"results[{i}]: video_id {vid} is not a ground-truth video id "
                f"(expected one of {len(videos)} ids, e.g. {sorted(videos)[:5]})"
            )
        where = f"results[{i}] (video {vid})"
        if res["category_id"] not in category_ids:
            raise ValueError(
                f"{where}: category_id {res['category_id']} is not a ground-truth category, "
                f"expected one of {category_ids}"
            )
        segs = res["segmentations"]
        _check_track(where, segs, video)
        annotations.append(
            {
                "id": i + 1,
                "image_id": vid,
                "category_id": res["category_id"],
                "score": res["score"],
                "iscrowd": 0,
                "area": track_area(segs),
                "segmentation": segs,
            }
        )
    return {"images": gt["images"], "categories": gt["categories"], "annotations": annotations}


def index_datasets(ground_truth: Mapping[str, Any], results: list[dict]) -> tuple[dict, dict]:
    """Checked, RLE-converted ground truth and results in the COCO layout the protocol runs on."""
    gt = _ground_truth_dataset(ground_truth)
    validate_results(results)
    return gt, _results_dataset(results, gt)


def evaluate(ground_truth: Mapping[str, Any], results: list[dict]) -> dict[str, float]:
    """YouTube-VIS AP, AP50, AP75, APs, APm, APl, AR1, AR10 as fractions (-1 where a range has no ground truth)."""
    gt, dt = index_datasets(ground_truth, results)
    coco_eval = run_protocol(gt, dt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval.summarize()
    # summarize() stats order: AP, AP50, AP75, APs, APm, APl, AR@maxDets[0]=1, AR@maxDets[1]=10, ...
    return {key: float(value) for key, value in zip(METRIC_KEYS, coco_eval.stats[: len(METRIC_KEYS)])}


def format_table(metrics: Mapping[str, float], keys: Sequence[str] = METRIC_KEYS) -> str:
    """Metrics as percentages in the paper's column order; '-' where a range has no ground truth."""
    cells = ["-" if metrics[k] < 0 else f"{100 * metrics[k]:.1f}" for k in keys]
    return "\n".join(["".join(f"{c:>7}" for c in row) for row in (keys, cells)])


@user_errors
def main(argv: Sequence[str] | None = None) -> int:
    """Print the metric table, then one JSON line with the eight metrics; exit 1 on bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m crossvis.evaluation.metric",
        description="YouTube-VIS video AP/AR of a results json against a ground-truth json.",
    )
    parser.add_argument("ground_truth", type=Path, help="YouTube-VIS ground-truth json (with annotations)")
    parser.add_argument(
        "results", type=Path, help="results json: list of {video_id, category_id, score, segmentations}"
    )
    args = parser.parse_args(argv)
    try:
        ground_truth = read_json(args.ground_truth, "ground truth", dict)
        metrics = evaluate(ground_truth, read_json(args.results, "results", list))
    except ValueError as e:  # the metric's input checks raise ValueError naming file and field
        raise InputFormatError(str(e)) from e
    print(format_table(metrics))
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
