"""Reader for the YouTube-VIS 2019/2021 and OVIS annotation jsons.

The three datasets share one json format (``videos``, ``categories``, ``annotations`` with one
``segmentations`` entry per frame) but differ in directory layout, so the image root is passed
separately from the json. Ids in the files are not contiguous: categories map to contiguous
labels (index in the id-sorted list) and annotation ids map to identities 0..M-1 for the
embedding loss, with M read from the data (never hard-coded).

Structural problems (wrong lengths, sizes, unknown ids) are detected when the json is loaded,
so training fails at start-up with a message naming file, video/annotation and field rather
than deep inside a worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crossvis.data.transforms import load_frame_rgb
from crossvis.errors import InputFormatError, InputNotFoundError
from crossvis.files import read_json
from crossvis.rle import decode_segmentation, segmentation_problem


class VISFormatError(InputFormatError):
    """The annotation json does not follow the YouTube-VIS format."""


class VISFileNotFoundError(InputNotFoundError):
    """An annotation json or a referenced frame does not exist."""


def _format_error(path: Path, where: str, field_name: str, expected: str, got: Any) -> VISFormatError:
    shown = repr(got)
    shown = shown if len(shown) <= 200 else shown[:200] + "..."  # RLE counts can be huge
    return VISFormatError(f"{path}: {where}: field '{field_name}': expected {expected}, got {shown}")


@dataclass
class Category:
    id: int
    name: str


@dataclass
class Instance:
    """One annotation: an object track through a video."""

    ann_id: int
    identity: int
    label: int
    category_id: int
    iscrowd: bool
    segmentations: list  # raw per-frame entries, None where absent
    height: int
    width: int
    bboxes: list | None = None  # per-frame [x, y, w, h] or None (json ``bboxes``; optional)

    def mask(self, frame: int) -> np.ndarray | None:
        """Bool mask (H, W) of this instance in ``frame``, or None when absent."""
        seg = self.segmentations[frame]
        return None if seg is None else decode_segmentation(seg, self.height, self.width)

    def box(self, frame: int) -> np.ndarray | None:
        """The json box of ``frame`` as xyxy (x2 = x + w, as the public code), clipped to the frame; None if absent."""
        entry = self.bboxes[frame] if self.bboxes is not None else None
        if entry is None:
            return None
        x, y, w, h = (float(v) for v in entry)
        return np.clip([x, y, x + w, y + h], 0, [self.width, self.height, self.width, self.height]).astype(np.float32)


@dataclass
class Video:
    id: int
    width: int
    height: int
    length: int
    file_names: list[str]
    image_root: Path
    json_path: Path
    instances: list[Instance] = field(default_factory=list)

    def frame_path(self, i: int) -> Path:
        return self.image_root / self.file_names[i]

    def require_frame(self, i: int) -> Path:
        """Path of frame ``i``; raises naming json, video and field when the file is missing."""
        path = self.frame_path(i)
        if not path.is_file():
            raise VISFileNotFoundError(
                f"{self.json_path}: video {self.id}: field 'file_names'[{i}] = {self.file_names[i]!r}: "
                f"expected an image file at {path} (image root {self.image_root})"
            )
        return path

    def load_frame(self, i: int) -> np.ndarray:
        """Frame ``i`` as uint8 RGB, decoded strictly; raises naming the file unless it decodes at (height, width)."""
        where = f"{self.json_path}: video {self.id}: field 'height'/'width'"
        return load_frame_rgb(self.require_frame(i), (self.height, self.width), where)

    def annotated_frames(self) -> np.ndarray:
        """Sorted indices of frames with at least one non-crowd instance present."""
        present = np.zeros(self.length, dtype=bool)
        for inst in self.instances:
            if not inst.iscrowd:
                present |= np.array([s is not None for s in inst.segmentations], dtype=bool)
        return np.flatnonzero(present)


class CategoryTable:
    """Contiguous labels (index in the id-sorted ``categories``) ↔ the dataset's category ids and names."""

    categories: list[Category]

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    @property
    def category_names(self) -> list[str]:
        return [c.name for c in self.categories]

    def label_to_category_id(self, label: int) -> int:
        return self.categories[int(label)].id


@dataclass
class VISDataset(CategoryTable):
    json_path: Path
    image_root: Path
    videos: list[Video]
    categories: list[Category]
    has_annotations: bool
    num_identities: int
    raw: dict

    def __post_init__(self) -> None:
        self.category_id_to_label: dict[int, int] = {c.id: i for i, c in enumerate(self.categories)}
        self.video_by_id: dict[int, Video] = {v.id: v for v in self.videos}


def read_annotation_json(path: str | Path) -> dict:
    """A YouTube-VIS / OVIS / COCO annotation json (a JSON object), with the dataset readers' error types."""
    return read_json(path, "YouTube-VIS/OVIS annotation json", dict, VISFileNotFoundError, VISFormatError)


def _require(obj: dict, key: str, types: type | tuple[type, ...], path: Path, where: str) -> Any:
    if not isinstance(obj, dict):
        raise _format_error(path, where, "<entry>", "a JSON object", type(obj).__name__)
    if key not in obj:
        raise _format_error(path, where, key, "the key to be present", "missing")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, types):  # bool is an int subclass
        names = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise _format_error(path, where, key, names, value)
    return value


def _check_segmentation(seg: Any, video: Video, path: Path, where: str, frame: int) -> None:
    """Cheap structural check so a bad entry fails at load time, not in a data-loader worker."""
    problem = segmentation_problem(seg, (video.height, video.width))
    if problem is not None:
        suffix, expected, got = problem
        raise _format_error(path, where, f"segmentations[{frame}]{suffix}", expected, got)


def _check_bboxes(bboxes: Any, video: Video, path: Path, where: str) -> list | None:
    """The optional per-frame ``bboxes`` ([x, y, w, h] or null per frame), checked at load time."""
    if bboxes is None:
        return None
    if not isinstance(bboxes, list) or len(bboxes) != video.length:
        raise _format_error(path, where, "bboxes", f"a list of {video.length} entries (the video's length)", bboxes)
    for t, box in enumerate(bboxes):
        valid = box is None or (
            isinstance(box, list)
            and len(box) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
            and box[2] >= 0
            and box[3] >= 0
        )
        if not valid:
            raise _format_error(path, where, f"bboxes[{t}]", "null or [x, y, w, h] numbers with w, h >= 0", box)
    return bboxes


def _parse_videos(raw: dict, path: Path, image_root: Path) -> list[Video]:
    videos = []
    for entry in _require(raw, "videos", list, path, "top level"):
        where = f"video {entry.get('id', '?')}" if isinstance(entry, dict) else "videos entry"
        vid = _require(entry, "id", int, path, where)
        file_names = _require(entry, "file_names", list, path, where)
        length = entry.get("length", len(file_names))
        if length != len(file_names):
            raise _format_error(path, where, "length", f"len(file_names) = {len(file_names)}", length)
        videos.append(
            Video(
                id=vid,
                width=_require(entry, "width", int, path, where),
                height=_require(entry, "height", int, path, where),
                length=length,
                file_names=file_names,
                image_root=image_root,
                json_path=path,
            )
        )
    ids = [v.id for v in videos]
    if len(set(ids)) != len(ids):
        raise _format_error(path, "videos", "id", "unique video ids", sorted(i for i in ids if ids.count(i) > 1)[:5])
    return sorted(videos, key=lambda v: v.id)


def _parse_categories(raw: dict, path: Path) -> list[Category]:
    cats = []
    for entry in _require(raw, "categories", list, path, "top level"):
        where = f"category {entry.get('id', '?')}" if isinstance(entry, dict) else "categories entry"
        cats.append(
            Category(id=_require(entry, "id", int, path, where), name=_require(entry, "name", str, path, where))
        )
    ids = [c.id for c in cats]
    if len(set(ids)) != len(ids):
        raise _format_error(path, "categories", "id", "unique category ids", ids)
    return sorted(cats, key=lambda c: c.id)


def annotation_identities(annotations: list, path: Path) -> tuple[list[int], dict[int, int]]:
    """The annotations' ids (checked unique) and annotation id → identity 0..M-1 (in id order)."""
    ann_ids = []
    for ann in annotations:
        where = f"annotation {ann.get('id', '?')}" if isinstance(ann, dict) else "annotations entry"
        ann_ids.append(_require(ann, "id", int, path, where))
    if len(set(ann_ids)) != len(ann_ids):
        raise _format_error(path, "annotations", "id", "unique annotation ids", "duplicates")
    return ann_ids, {a: i for i, a in enumerate(sorted(ann_ids))}


def _attach_annotations(annotations: list, videos: dict[int, Video], cat_to_label: dict[int, int], path: Path) -> int:
    """Validate annotations, attach them to their videos and return the number of identities M."""
    ann_ids, identity = annotation_identities(annotations, path)
    for ann, ann_id in zip(annotations, ann_ids):
        vid = _require(ann, "video_id", int, path, f"annotation {ann_id}")
        where = f"annotation {ann_id} (video {vid})"
        if vid not in videos:
            raise _format_error(path, where, "video_id", "the id of a video in 'videos'", vid)
        cat = _require(ann, "category_id", int, path, where)
        if cat not in cat_to_label:
            raise _format_error(path, where, "category_id", f"one of the category ids {sorted(cat_to_label)}", cat)
        video = videos[vid]
        segs = _require(ann, "segmentations", list, path, where)
        if len(segs) != video.length:
            expected = f"{video.length} entries (the video's length)"
            raise _format_error(path, where, "segmentations", expected, f"{len(segs)} entries")
        for t, seg in enumerate(segs):
            _check_segmentation(seg, video, path, where, t)
        bboxes = _check_bboxes(ann.get("bboxes"), video, path, where)
        video.instances.append(
            Instance(
                ann_id=ann_id,
                identity=identity[ann_id],
                label=cat_to_label[cat],
                category_id=cat,
                iscrowd=bool(ann.get("iscrowd", 0)),
                segmentations=segs,
                height=video.height,
                width=video.width,
                bboxes=bboxes,
            )
        )
    return len(ann_ids)


def vis_from_dict(
    raw: dict, json_path: str | Path, image_root: str | Path, require_annotations: bool = False
) -> VISDataset:
    """Build a :class:`VISDataset` from an already loaded json dict (``json_path`` names it in errors)."""
    json_path, image_root = Path(json_path), Path(image_root)
    has_annotations = "annotations" in raw
    if require_annotations and not has_annotations:
        raise _format_error(json_path, "top level", "annotations", "annotations (a training split)", "missing")
    videos = _parse_videos(raw, json_path, image_root)
    categories = _parse_categories(raw, json_path)
    cat_to_label = {c.id: i for i, c in enumerate(categories)}
    annotations = _require(raw, "annotations", list, json_path, "top level") if has_annotations else []
    num_identities = _attach_annotations(annotations, {v.id: v for v in videos}, cat_to_label, json_path)
    return VISDataset(
        json_path=json_path,
        image_root=image_root,
        videos=videos,
        categories=categories,
        has_annotations=has_annotations,
        num_identities=num_identities,
        raw=raw,
    )


def load_vis(json_path: str | Path, image_root: str | Path, require_annotations: bool = False) -> VISDataset:
    """Load a YouTube-VIS 2019/2021 or OVIS json whose ``file_names`` are relative to ``image_root``."""
    return vis_from_dict(read_annotation_json(json_path), json_path, image_root, require_annotations)


def subset_raw(raw: dict, video_ids: set[int]) -> dict:
    """The json dict restricted to ``video_ids`` (their videos and annotations, all categories)."""
    out = {k: v for k, v in raw.items() if k not in ("videos", "annotations")}
    out["videos"] = [v for v in raw["videos"] if v["id"] in video_ids]
    if "annotations" in raw:
        out["annotations"] = [a for a in raw["annotations"] if a["video_id"] in video_ids]
    return out
