"""Per-frame COCO AP of a video split: every frame an image, detections scored before tracking.

The YouTube-VIS metric mixes detection and linking; this one isolates detection. A video AP far
below the per-frame AP points at the tracker, a low per-frame AP at the detector. The ground
truth is the split's own: each frame where an annotation has a segmentation becomes a COCO
annotation; frames without any stay images, so detections there count as false positives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pycocotools import mask as mask_utils

from crossvis.evaluation.coco_eval import STATS, detections_to_coco, evaluate_coco
from crossvis.evaluation.metric import format_table
from crossvis.rle import to_rle


class FrameDetections:
    """Collects per-frame detections of a split as COCO results, keyed to :func:`frames_ground_truth`'s images."""

    def __init__(self, videos: Sequence[Mapping[str, Any]], category_ids: Sequence[int]) -> None:
        self.image_ids = frame_image_ids(videos)
        self.category_ids = list(category_ids)
        self.results: list[dict] = []

    def add(self, video_id: int, frame_index: int, detections: Mapping[str, Any]) -> None:
        """One frame's ``forward_infer`` output (xyxy boxes, bool masks at the frame size, labels, scores)."""
        image_id = self.image_ids[(int(video_id), int(frame_index))]
        self.results.extend(detections_to_coco(image_id, dict(detections), self.category_ids))

    def collector(self, video_id: int) -> Callable[[int, Any, Mapping[str, Any], Any], None]:
        """An ``on_frame`` callback of :class:`crossvis.engine.inference.VideoInference` adding ``video_id``'s frames."""
        return lambda frame_index, _frame, detections, _track_ids: self.add(video_id, frame_index, detections)


def frame_image_ids(videos: Sequence[Mapping[str, Any]]) -> dict[tuple[int, int], int]:
    """(video id, frame index) → image id, numbering the frames of ``videos`` in order from 1."""
    pairs = [(int(v["id"]), f) for v in videos for f in range(int(v["length"]))]
    return {pair: number for number, pair in enumerate(pairs, start=1)}


def frames_ground_truth(ground_truth: Mapping[str, Any]) -> dict:
    """A YouTube-VIS ground truth json as a COCO one: an image per frame, an annotation per present mask."""
    videos = {v["id"]: v for v in ground_truth["videos"]}
    image_ids = frame_image_ids(ground_truth["videos"])
    images = [
        {"id": image_id, "height": videos[vid]["height"], "width": videos[vid]["width"]}
        for (vid, _), image_id in image_ids.items()
    ]
    annotations = []
    for ann in ground_truth["annotations"]:
        video = videos.get(ann["video_id"])
        if video is None:
            raise ValueError(f"ground truth annotation {ann['id']}: video_id {ann['video_id']} is not in 'videos'")
        for frame, seg in enumerate(ann["segmentations"]):
            rle = to_rle(seg, video["height"], video["width"])
            if rle is None:
                continue  # the instance is absent from this frame
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_ids[(video["id"], frame)],
                    "category_id": ann["category_id"],
                    "iscrowd": int(ann.get("iscrowd", 0)),
                    "area": float(mask_utils.area(rle)),
                    "bbox": [float(x) for x in mask_utils.toBbox(rle)],
                    "segmentation": rle,
                }
            )
    categories = [{"id": c["id"], "name": c.get("name", str(c["id"]))} for c in ground_truth["categories"]]
    return {"images": images, "annotations": annotations, "categories": categories}


def frame_ap(ground_truth: Mapping[str, Any], detections: FrameDetections) -> dict[str, float]:
    """COCOeval mask and box AP over every frame of the split, as ``frame_AP_mask``, ``frame_AP50_box``, ..."""
    metrics = evaluate_coco(frames_ground_truth(ground_truth), detections.results, verbose=False)
    return {f"frame_{name}": value for name, value in metrics.items()}


def format_frame_table(metrics: Mapping[str, float]) -> str:
    """The per-frame mask AP columns of ``metrics`` (see :func:`frame_ap`) as a titled table."""
    return "Per-frame mask AP (every frame an image):\n" + format_table(
        {name: metrics[f"frame_{name}_mask"] for name in STATS}, list(STATS)
    )
