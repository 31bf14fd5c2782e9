"""Reader for COCO instances jsons (train2017 / val2017): still images for the CondInst stage.

Format: ``images[{id, width, height, file_name}]``, ``categories[{id, name}]``,
``annotations[{id, image_id, category_id, iscrowd, segmentation}]`` where ``segmentation`` is a
list of polygons (non-crowd) or an RLE dict (crowd regions: uncompressed, ``counts`` a list).
Masks are decoded with pycocotools (:func:`crossvis.rle.decode_segmentation`, shared with the video reader).

As in detectron2: crowd annotations are never training targets (they only mark regions the
COCO evaluation ignores), training uses the images with at least one non-crowd annotation, and
polygons with fewer than 3 points are dropped (an annotation left without any is dropped and
counted in ``dropped_annotations``; detectron2 logs the same count as a warning).

Labels: by default the contiguous index of the category in the id-sorted list. Joint training
passes ``label_of`` (COCO category id → the video dataset's label): annotations of unmapped
categories are dropped, so they are neither targets nor background-only images.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from crossvis.data.transforms import FrameSample, load_frame_rgb
from crossvis.data.ytvis import (
    Category,
    CategoryTable,
    VISFileNotFoundError,
    VISFormatError,
    _format_error,
    _parse_categories,
    _require,
    annotation_identities,
    read_annotation_json,
)
from crossvis.rle import decode_segmentation, segmentation_problem


def is_coco_json(raw: dict) -> bool:
    """COCO instances jsons list ``images``; YouTube-VIS / OVIS jsons list ``videos``."""
    return "images" in raw and "videos" not in raw


@dataclass
class CocoInstance:
    ann_id: int
    identity: int  # annotation index 0..A-1 (unique per instance; pseudo-pairs reuse it in both views)
    label: int
    category_id: int
    iscrowd: bool
    segmentation: list | dict


@dataclass
class CocoImage:
    id: int
    width: int
    height: int
    file_name: str
    image_root: Path
    json_path: Path
    instances: list[CocoInstance] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.image_root / self.file_name

    def require_file(self) -> Path:
        """Path of the image; raises naming json, image and field when the file is missing."""
        if not self.path.is_file():
            raise VISFileNotFoundError(
                f"{self.json_path}: image {self.id}: field 'file_name' = {self.file_name!r}: "
                f"expected an image file at {self.path} (image root {self.image_root})"
            )
        return self.path

    @property
    def targets(self) -> list[CocoInstance]:
        """Instances that are training targets (non-crowd)."""
        return [inst for inst in self.instances if not inst.iscrowd]

    def sample(self) -> FrameSample:
        """The RGB image with its non-crowd instances (crowd regions are not targets)."""
        path = self.require_file()
        image = load_frame_rgb(path)
        if image.shape[:2] != (self.height, self.width):
            raise VISFormatError(
                f"{self.json_path}: image {self.id}: field 'height'/'width': expected the image size "
                f"{self.height}x{self.width}, but {path} is {image.shape[0]}x{image.shape[1]}"
            )
        targets = self.targets
        masks = [decode_segmentation(inst.segmentation, self.height, self.width) for inst in targets]
        return FrameSample(
            image=image,
            masks=np.stack(masks) if masks else np.zeros((0, self.height, self.width), bool),
            labels=np.array([inst.label for inst in targets], dtype=np.int64),
            identities=np.array([inst.identity for inst in targets], dtype=np.int64),
        )


@dataclass
class COCODataset(CategoryTable):
    json_path: Path
    image_root: Path
    images: list[CocoImage]
    categories: list[Category]
    has_annotations: bool
    num_annotations: int
    dropped_annotations: int
    raw: dict

    def __post_init__(self) -> None:
        self.image_by_id: dict[int, CocoImage] = {im.id: im for im in self.images}

    def training_images(self) -> list[CocoImage]:
        """Images with at least one non-crowd instance (detectron2's FILTER_EMPTY_ANNOTATIONS)."""
        return [im for im in self.images if im.targets]


def _parse_images(raw: dict, path: Path, image_root: Path) -> list[CocoImage]:
    images = []
    for entry in _require(raw, "images", list, path, "top level"):
        where = f"image {entry.get('id', '?')}" if isinstance(entry, dict) else "images entry"
        images.append(
            CocoImage(
                id=_require(entry, "id", int, path, where),
                width=_require(entry, "width", int, path, where),
                height=_require(entry, "height", int, path, where),
                file_name=_require(entry, "file_name", str, path, where),
                image_root=image_root,
                json_path=path,
            )
        )
    ids = [im.id for im in images]
    if len(set(ids)) != len(ids):
        raise _format_error(path, "images", "id", "unique image ids", sorted(i for i in ids if ids.count(i) > 1)[:5])
    return sorted(images, key=lambda im: im.id)


def _valid_segmentation(seg: object, image: CocoImage, path: Path, where: str) -> list | dict | None:
    """The segmentation with degenerate polygons removed (None when nothing is left); raises on bad structure."""
    if isinstance(seg, list):
        if not all(isinstance(p, list) and all(isinstance(v, (int, float)) for v in p) for p in seg):
            raise _format_error(path, where, "segmentation", "polygons: lists of x, y coordinates", seg)
        polygons = [p for p in seg if len(p) >= 6 and len(p) % 2 == 0]
        return polygons or None
    problem = (
        segmentation_problem(seg, (image.height, image.width)) if seg is not None else ("", "polygons or an RLE", seg)
    )
    if problem is not None:
        suffix, expected, got = problem
        raise _format_error(path, where, f"segmentation{suffix}", expected, got)
    return seg


def coco_from_dict(
    raw: dict,
    json_path: str | Path,
    image_root: str | Path,
    require_annotations: bool = False,
    label_of: dict[int, int] | None = None,
) -> COCODataset:
    """Build a :class:`COCODataset` from a loaded json (``json_path`` names it in errors).

    ``label_of`` maps category ids to training labels; ``None`` = contiguous labels over this
    json's categories. Annotations whose category is not in ``label_of`` are left out.
    """
    json_path, image_root = Path(json_path), Path(image_root)
    has_annotations = "annotations" in raw
    if require_annotations and not has_annotations:
        raise _format_error(json_path, "top level", "annotations", "annotations (a training split)", "missing")
    images = _parse_images(raw, json_path, image_root)
    categories = _parse_categories(raw, json_path)
    known = {c.id for c in categories}
    if label_of is None:
        label_of = {c.id: i for i, c in enumerate(categories)}
    by_id = {im.id: im for im in images}
    annotations = _require(raw, "annotations", list, json_path, "top level") if has_annotations else []
    ann_ids, identity = annotation_identities(annotations, json_path)
    dropped = 0
    for ann, ann_id in zip(annotations, ann_ids):
        image_id = _require(ann, "image_id", int, json_path, f"annotation {ann_id}")
        where = f"annotation {ann_id} (image {image_id})"
        if image_id not in by_id:
            raise _format_error(json_path, where, "image_id", "the id of an image in 'images'", image_id)
        cat = _require(ann, "category_id", int, json_path, where)
        if cat not in known:
            raise _format_error(json_path, where, "category_id", f"one of the category ids {sorted(known)}", cat)
        image = by_id[image_id]
        seg = _require(ann, "segmentation", (list, dict), json_path, where)
        seg = _valid_segmentation(seg, image, json_path, where)
        if seg is None:
            dropped += 1
            continue
        if cat not in label_of:
            continue  # category not mapped onto the target dataset (joint training)
        image.instances.append(
            CocoInstance(
                ann_id=ann_id,
                identity=identity[ann_id],
                label=label_of[cat],
                category_id=cat,
                iscrowd=bool(ann.get("iscrowd", 0)),
                segmentation=seg,
            )
        )
    if dropped:
        warnings.warn(f"{json_path}: {dropped} annotations without a valid polygon (< 3 points) left out", stacklevel=2)
    return COCODataset(
        json_path=json_path,
        image_root=image_root,
        images=images,
        categories=categories,
        has_annotations=has_annotations,
        num_annotations=len(ann_ids),
        dropped_annotations=dropped,
        raw=raw,
    )


def load_coco(
    json_path: str | Path,
    image_root: str | Path,
    require_annotations: bool = False,
    label_of: dict[int, int] | None = None,
) -> COCODataset:
    """Load a COCO instances json whose ``file_name``s are relative to ``image_root``."""
    return coco_from_dict(read_annotation_json(json_path), json_path, image_root, require_annotations, label_of)


def check_coco(coco: COCODataset) -> dict:
    """Check image files (existence and size) and decode every mask; return the summary."""
    for image in coco.images:
        path = image.require_file()
        try:
            with Image.open(path) as im:  # reads the header only
                width, height = im.size
        except OSError as e:
            raise VISFormatError(f"{coco.json_path}: image {image.id}: {path}: not a readable image ({e})") from e
        if (height, width) != (image.height, image.width):
            raise VISFormatError(
                f"{coco.json_path}: image {image.id}: field 'height'/'width': expected the image size "
                f"{image.height}x{image.width}, but {path} is {height}x{width}"
            )
        for inst in image.instances:
            try:
                decode_segmentation(inst.segmentation, image.height, image.width)
            except ValueError as e:
                raise VISFormatError(
                    f"{coco.json_path}: annotation {inst.ann_id} (image {image.id}): field 'segmentation': {e}"
                ) from e
    instances = [inst for im in coco.images for inst in im.instances]
    per_label = {label: 0 for label in range(coco.num_classes)}
    for inst in instances:
        if not inst.iscrowd:
            per_label[inst.label] += 1
    return {
        "images": len(coco.images),
        "training_images": len(coco.training_images()),
        "instances": sum(per_label.values()),
        "crowd": sum(inst.iscrowd for inst in instances),
        "dropped": coco.dropped_annotations,
        "categories": {c.name: per_label[label] for label, c in enumerate(coco.categories)},
    }


def report_coco(raw: dict, json_path: Path, image_root: Path) -> dict:
    """``crossvis.data.check`` for a COCO json: print the summary (last line JSON) and return it."""
    coco = coco_from_dict(raw, json_path, image_root)
    summary = check_coco(coco)
    print(f"{coco.json_path} (COCO images under {coco.image_root}): OK")
    print(f"  images {summary['images']}, with non-crowd instances {summary['training_images']}")
    if not coco.has_annotations:
        print("  no 'annotations' key (a test split): images checked only")
    print(f"  instances {summary['instances']}, crowd regions {summary['crowd']} (not training targets)")
    if summary["dropped"]:
        print(f"  {summary['dropped']} annotations without a valid polygon (< 3 points) left out")
    print(f"  categories ({len(summary['categories'])}):")
    for name, n in summary["categories"].items():
        print(f"    {name}: {n}")
    print(json.dumps(summary))
    return summary
