"""The peer's tracker (src/crossvis/baselines/peer.py): link by mask overlap with each track's last mask."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from crossvis.rle import encode_masks
from crossvis.tracking.base import CategoryLookup, Tracker, category_of


class MaskIoUTracker(Tracker):
    """Links each frame's detections (best score first) to the free track whose last mask overlaps most,
    if that IoU reaches ``match_iou``; the others start tracks. A track's score is its mean detection
    score, its category the one with the highest summed score."""

    def __init__(self, match_iou: float) -> None:
        self.match_iou = match_iou
        self._last: list[dict] = []  # per track: last RLE
        self._tracks: list[dict] = []  # per track: {frame: rle}, scores, labels
        self._last_frame = -1

    @property
    def num_frames(self) -> int:
        return self._last_frame + 1

    @property
    def num_tracks(self) -> int:
        return len(self._tracks)

    def update(self, frame_index: int, detections: Mapping[str, Any]) -> np.ndarray:
        """``detections``: ``masks [N, H, W]`` (bool), ``scores [N]``, ``labels [N]`` (arrays)."""
        if frame_index <= self._last_frame:
            raise ValueError(
                f"frame_index: expected an index above the last one ({self._last_frame}), got {frame_index}"
            )
        masks, scores, labels = (np.asarray(detections[key]) for key in ("masks", "scores", "labels"))
        self._last_frame = frame_index
        rles = encode_masks(masks.astype(bool), range(len(masks)))
        matched: dict[int, int] = {}
        if self._last and len(rles):
            iou = mask_utils.iou(rles, self._last, [0] * len(self._last))
            for det in np.argsort(-scores):
                best = int(iou[det].argmax())
                if iou[det, best] >= self.match_iou:
                    matched[int(det)] = best
                    iou[:, best] = -1.0  # a track takes one detection per frame
        for det, rle in enumerate(rles):
            if det not in matched:
                matched[det] = len(self._tracks)
                self._tracks.append({"rles": {}, "scores": [], "labels": []})
                self._last.append(rle)
            track = self._tracks[matched[det]]
            track["rles"][frame_index] = rle
            track["scores"].append(float(scores[det]))
            track["labels"].append(int(labels[det]))
            self._last[matched[det]] = rle
        return np.array([matched[det] for det in range(len(rles))], dtype=np.int64)

    def video_results(self, video_id: int, label_to_category_id: CategoryLookup) -> list[dict]:
        to_category = category_of(label_to_category_id)
        entries = []
        for track in self._tracks:
            votes = np.bincount(track["labels"], weights=track["scores"])
            entries.append(
                {
                    "video_id": video_id,
                    "category_id": int(to_category(int(votes.argmax()))),
                    "score": float(np.mean(track["scores"])),
                    "segmentations": [track["rles"].get(f) for f in range(self.num_frames)],
                }
            )
        return entries
