"""The training index as flat numpy arrays, so that data-loader workers read it without copying it.

A forked loader worker shares its parent's memory copy-on-write, but reading a Python object
writes its reference count. Reading a frame's masks from the json's objects (a list of ~300 int
objects per mask in YouTube-VIS train) copies the pages they sit on, so over an epoch every worker
copies most of the json (about 1 GB at YouTube-VIS 2019 size). :class:`FrameIndex` holds what a
training item needs — frame file names, sizes, the tracks' labels and identities, each (track,
frame)'s compressed RLE and json box — in a few numpy arrays: a worker touches no shared Python
object, and allocates only the item's own masks (detectron2 serialises its dataset list into one
numpy buffer for the same reason).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from crossvis.data.transforms import FrameSample, load_frame_rgb, mask_boxes
from crossvis.data.ytvis import VISDataset, VISFileNotFoundError
from crossvis.rle import to_rle


def _pack(blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """``blobs`` as one uint8 buffer and the offsets of each (``offsets[i]:offsets[i + 1]``)."""
    offsets = np.cumsum([0, *map(len, blobs)], dtype=np.int64)
    return np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets


@dataclass(frozen=True)
class FrameIndex:
    """Videos ``v``, their frames ``f`` (global, ``frame_start[v] + t``), tracks ``i`` and (track, frame)
    cells ``c`` (``cell_start[i] + t``), all as arrays; see :meth:`build` and :meth:`sample`."""

    json_path: str
    image_root: str
    video_ids: np.ndarray  # [V]
    sizes: np.ndarray  # [V, 2] height, width
    frame_start: np.ndarray  # [V + 1]
    names: np.ndarray  # uint8 buffer of the frame file names
    name_start: np.ndarray  # [F + 1]
    track_start: np.ndarray  # [V + 1]: tracks of video v
    labels: np.ndarray  # [I]
    identities: np.ndarray  # [I]
    crowd: np.ndarray  # bool [I]
    cell_start: np.ndarray  # [I + 1]
    rles: np.ndarray  # uint8 buffer of compressed RLE counts (empty: absent)
    rle_start: np.ndarray  # [C + 1]
    boxes: np.ndarray  # float32 [C, 4] json boxes as xyxy, NaN where there is none

    @classmethod
    def build(cls, vis: VISDataset) -> FrameIndex:
        """The index of ``vis`` (its masks re-encoded as compressed RLE: polygons and counts lists included)."""
        names, rles, boxes, labels, identities, crowd = [], [], [], [], [], []
        frames, tracks, cells = [0], [0], [0]
        for video in vis.videos:
            names += [name.encode() for name in video.file_names]
            frames.append(frames[-1] + video.length)
            for inst in video.instances:
                labels.append(inst.label)
                identities.append(inst.identity)
                crowd.append(inst.iscrowd)
                cells.append(cells[-1] + video.length)
                for t, seg in enumerate(inst.segmentations):
                    rle = to_rle(seg, video.height, video.width) if seg is not None else None
                    counts = b"" if rle is None else rle["counts"]
                    rles.append(counts.encode() if isinstance(counts, str) else counts)
                    box = inst.box(t)
                    boxes.append(np.full(4, np.nan, np.float32) if box is None else box)
            tracks.append(tracks[-1] + len(video.instances))
        name_buffer, name_start = _pack(names)
        rle_buffer, rle_start = _pack(rles)
        return cls(
            json_path=str(vis.json_path),
            image_root=str(vis.image_root),
            video_ids=np.array([v.id for v in vis.videos], np.int64),
            sizes=np.array([(v.height, v.width) for v in vis.videos], np.int64).reshape(-1, 2),
            frame_start=np.array(frames, np.int64),
            names=name_buffer,
            name_start=name_start,
            track_start=np.array(tracks, np.int64),
            labels=np.array(labels, np.int64),
            identities=np.array(identities, np.int64),
            crowd=np.array(crowd, bool),
            cell_start=np.array(cells, np.int64),
            rles=rle_buffer,
            rle_start=rle_start,
            boxes=np.array(boxes, np.float32).reshape(-1, 4),
        )

    def frame_path(self, v: int, t: int) -> Path:
        f = self.frame_start[v] + t
        return Path(self.image_root) / self.names[self.name_start[f] : self.name_start[f + 1]].tobytes().decode()

    def sample(self, v: int, t: int) -> FrameSample:
        """Frame ``t`` of video ``v`` with its non-crowd tracks present there (as ``Video`` would give it):
        boxes from the json where it has one, else the mask's box."""
        height, width = (int(s) for s in self.sizes[v])
        path = self.frame_path(v, t)
        if not path.is_file():
            raise VISFileNotFoundError(
                f"{self.json_path}: video {self.video_ids[v]}: field 'file_names'[{t}]: "
                f"expected an image file at {path} (image root {self.image_root})"
            )
        image = load_frame_rgb(
            path, (height, width), f"{self.json_path}: video {self.video_ids[v]}: field 'height'/'width'"
        )
        tracks, masks, boxes = [], [], []
        for i in range(self.track_start[v], self.track_start[v + 1]):
            c = self.cell_start[i] + t
            counts = self.rles[self.rle_start[c] : self.rle_start[c + 1]].tobytes()
            if self.crowd[i] or not counts:
                continue
            mask = mask_utils.decode({"size": [height, width], "counts": counts}).astype(bool)
            tracks.append(i)
            masks.append(mask)
            boxes.append(self.boxes[c] if not np.isnan(self.boxes[c]).any() else mask_boxes(mask[None])[0])
        return FrameSample(
            image=image,
            masks=np.stack(masks) if masks else np.zeros((0, height, width), bool),
            labels=self.labels[tracks],
            identities=self.identities[tracks],
            boxes=np.stack(boxes) if boxes else np.zeros((0, 4), np.float32),
        )
