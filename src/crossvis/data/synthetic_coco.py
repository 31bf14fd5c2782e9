"""Synthetic still images in the official COCO layout, for the CondInst stage and joint training.

``python -m crossvis.data.synthetic_coco --out DIR --images N --val-images M --seed S`` writes
``DIR/annotations/instances_{train,val}2017.json`` and ``DIR/{train,val}2017/<id>.jpg`` — the
layout ``data=coco data.root=DIR`` reads.

Each image is one frame of the video renderer (``synthetic.render_video``: textured shapes,
occlusion, objects cut by the border), so the same categories can be mapped onto the synthetic
videos' for joint training. What is COCO-specific is exercised too: images of two sizes
(landscape and portrait), polygons for unoccluded objects inside the image and compressed RLE
otherwise, and on every third image one instance stored as a crowd region (``iscrowd: 1``,
uncompressed RLE, as COCO stores crowds). The category list has one more entry than the
renderer draws (like COCO's 80 classes vs a video dataset's), so a COCO-stage checkpoint never
shares the class-logit shape of the synthetic video data.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import cv2
import numpy as np

from crossvis.data.synthetic import (
    CATEGORIES,
    JPEG_QUALITY,
    _polygon_exact,
    _xywh,
    compressed_rle,
    render_video,
    uncompressed_rle,
)
from crossvis.files import atomic_directory

# COCO-side category ids of the renderer's shapes (by CATEGORIES index) and the extra, never drawn one.
COCO_CATEGORY_IDS = (1, 3, 17, 44)
EXTRA_CATEGORY = (90, "unused_shape")
CROWD_EVERY = 3  # every third image has one crowd region


def _image_annotations(rng: np.random.Generator, index: int, image_id: int, first_ann: int, size: tuple[int, int]):
    """Render one image; return (RGB image, annotation dicts)."""
    height, width = size
    frames, instances = render_video(rng, 1, height, width)
    annotations = []
    for k, inst in enumerate(instances):
        mask = inst["masks"][0]
        crowd = index % CROWD_EVERY == 0 and k == 0
        if crowd:
            seg = uncompressed_rle(mask)
        elif _polygon_exact(inst, height, width):
            seg = [inst["polygons"][0].ravel().tolist()]
        else:
            seg = compressed_rle(mask)
        annotations.append(
            {
                "id": first_ann + len(annotations),
                "image_id": image_id,
                "category_id": COCO_CATEGORY_IDS[inst["kind"]],
                "iscrowd": int(crowd),
                "segmentation": seg,
                "area": int(mask.sum()),
                "bbox": _xywh(mask),
            }
        )
    return frames[0], annotations


def _write_split(root: Path, split: str, indices: range, seed: int, sizes: list[tuple[int, int]]) -> dict:
    """Write the images of one split under ``root/<split>``; return its json dict."""
    (root / split).mkdir(parents=True)
    images, annotations = [], []
    for index in indices:
        image_id = 1000 + 7 * index  # non-contiguous, like COCO's
        height, width = sizes[index % len(sizes)]
        image, anns = _image_annotations(
            np.random.default_rng([seed, index]), index, image_id, 100 * index + 1, (height, width)
        )
        file_name = f"{image_id:012d}.jpg"
        cv2.imwrite(str(root / split / file_name), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        annotations += anns
    categories = [
        {"id": cid, "name": name, "supercategory": "shape"} for cid, (_, name, *_) in zip(COCO_CATEGORY_IDS, CATEGORIES)
    ]
    categories.append({"id": EXTRA_CATEGORY[0], "name": EXTRA_CATEGORY[1], "supercategory": "shape"})
    return {
        "info": {"description": "crossvis synthetic COCO", "seed": seed},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def write_synthetic_coco(
    out: str | os.PathLike,
    images: int = 48,
    val_images: int = 8,
    seed: int = 0,
    height: int = 192,
    width: int = 320,
    overwrite: bool = False,
) -> Path:
    """Write the image set to ``out`` atomically; images alternate (height, width) and (width, height)."""
    sizes = [(height, width), (width, height)]
    with atomic_directory(out, overwrite) as tmp:
        (tmp / "annotations").mkdir()
        for split, indices in (("train2017", range(images)), ("val2017", range(images, images + val_images))):
            raw = _write_split(tmp, split, indices, seed, sizes)
            (tmp / "annotations" / f"instances_{split}.json").write_text(json.dumps(raw))
    return Path(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--images", type=int, default=48, help="training images")
    parser.add_argument("--val-images", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output directory")
    a = parser.parse_args(argv)
    out = write_synthetic_coco(a.out, a.images, a.val_images, a.seed, a.height, a.width, a.overwrite)
    sizes = f"{a.height}x{a.width} and {a.width}x{a.height}"
    print(f"wrote {a.images} train + {a.val_images} val COCO-format images ({sizes}) to {out}")


if __name__ == "__main__":
    main()
