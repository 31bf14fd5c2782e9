"""Per-frame outputs for applications: one JSON line per frame and mask PNGs per frame and track.

The official results json holds a track per entry and is complete only at the end of the video;
an application that follows the video frame by frame wants each frame's instances as they are
tracked. Both outputs are streamed into temporary files beside their targets and renamed when
the run succeeds (:mod:`crossvis.files`), like the overlay and the results json.

JSON line of frame ``i``: ``{"frame": i, "timestamp": seconds or null, "instances": [{"track_id",
"category_id", "category", "score", "box": [x0, y0, x1, y1], "segmentation": compressed RLE}]}``;
``track_id`` is the index of the track's entry in the results json. PNG: ``<masks_dir>/
frame{i:06d}_track{id:04d}.png``, 8-bit, 255 inside the mask.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from crossvis.errors import UserError
from crossvis.files import atomic_directory, atomic_path
from crossvis.rle import encode_masks


def require_new_dir(path: str | Path | None, field: str) -> None:
    """A mask folder must be new or empty: it is replaced as a whole when the run succeeds."""
    if path and Path(path).is_dir() and any(Path(path).iterdir()):
        raise UserError(f"{field}: {path} is not empty (expected a new or empty folder; it is replaced as a whole)")
    if path and Path(path).exists() and not Path(path).is_dir():
        raise UserError(f"{field}: {path} is a file (expected a new or empty folder)")


class FrameOutputs:
    """Writes the per-frame outputs that are asked for (``jsonl`` and/or ``masks_dir``) as frames are tracked."""

    def __init__(
        self,
        jsonl: str | Path | None,
        masks_dir: str | Path | None,
        category_ids: Sequence[int],
        category_names: Sequence[str],
        timestamp: Callable[[], float | None] = lambda: None,
    ) -> None:
        self.jsonl, self.masks_dir = jsonl, masks_dir
        self.category_ids, self.category_names = list(category_ids), list(category_names)
        self.timestamp = timestamp  # the current frame's (the source's last_timestamp)
        self._stack = contextlib.ExitStack()
        self._lines: Any = None
        self._pngs: Path | None = None

    def __enter__(self) -> FrameOutputs:
        if self.jsonl:
            self._lines = self._stack.enter_context(open(self._stack.enter_context(atomic_path(self.jsonl)), "w"))
        if self.masks_dir:
            self._pngs = self._stack.enter_context(atomic_directory(self.masks_dir, overwrite=True))
        return self

    def __exit__(self, *exc_info) -> None:
        self._stack.__exit__(*exc_info)

    def __call__(self, index: int, frame: np.ndarray, detections: dict, track_ids: np.ndarray) -> None:
        """An ``on_frame`` callback of the online loop (:data:`crossvis.engine.inference.FrameCallback`)."""
        tracked = [i for i, track in enumerate(track_ids) if track >= 0]
        masks = np.asarray(detections["masks"])
        if self._lines is not None:
            rles = encode_masks(masks, tracked)
            instances = [self._instance(detections, i, int(track_ids[i]), rle) for i, rle in zip(tracked, rles)]
            record = {"frame": index, "timestamp": self.timestamp(), "instances": instances}
            self._lines.write(json.dumps(record) + "\n")
        if self._pngs is not None:
            for i in tracked:
                png = self._pngs / f"frame{index:06d}_track{int(track_ids[i]):04d}.png"
                Image.fromarray(masks[i].astype(np.uint8) * 255).save(png)

    def _instance(self, detections: dict, i: int, track_id: int, rle: dict) -> dict:
        label = int(detections["labels"][i])
        return {
            "track_id": track_id,
            "category_id": self.category_ids[label],
            "category": self.category_names[label],
            "score": float(detections["scores"][i]),
            "box": [float(v) for v in detections["boxes"][i]],
            "segmentation": rle,
        }
