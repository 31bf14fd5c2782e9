"""Synthetic video instance segmentation data in the real YouTube-VIS layout.

``python -m crossvis.data.synthetic --out DIR --videos N --frames K --seed S`` writes
``DIR/train/JPEGImages/<video>/<frame>.jpg``, ``DIR/train.json``, ``DIR/valid/JPEGImages/...``,
``DIR/valid.json`` (no annotations, like the official split) and ``DIR/valid_gt.json`` (the same
videos with annotations, for local AP). ``--style`` picks the design (:data:`STYLES`):

- ``classic`` (default, what the CPU recipe was developed on): each category has its own shape,
  texture and two fixed colours, on a muted background.
- ``clutter`` (a design no recipe is tuned on): other shapes (hexagon, star, crescent, diamond) and
  textures (grid, diagonal stripes, spots, waves), so a category is told apart by shape *and*
  texture; random saturated colours per instance (colour says nothing); colourful noise
  backgrounds with unannotated distractor blobs wearing the same textures; the two instances of
  one category always cross each other (occluding) mid-video.

Both designs exercise what VIS finds hard while staying learnable by a small CPU model:
four categories of textured shapes, two instances of one category in every video (so identity
cannot be read off the class), motion with rotation and scale change, occlusion (the upper
object's pixels are removed from the lower object's mask), objects entering and leaving the
frame (``null`` segmentations while absent) and a textured, slowly panning background.
Ids of videos, categories and annotations are non-contiguous to exercise the reader's mapping.

Masks are stored as compressed RLE, uncompressed (list-count) RLE and, for the top-most object
of some videos, polygons; every shape is rasterised from its polygon with pycocotools, so every
encoding decodes to exactly the drawn mask.
"""

from __future__ import annotations

import argparse
import colorsys
import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_utils

from crossvis.files import atomic_directory
from crossvis.rle import decode_segmentation, encode_masks

# (id, name, two RGB colours of the texture); ids are deliberately not contiguous.
CATEGORIES = (
    (2, "striped_ellipse", (230, 200, 40), (200, 40, 30)),
    (5, "checkered_rectangle", (40, 90, 220), (235, 235, 235)),
    (8, "dotted_triangle", (40, 170, 60), (20, 20, 20)),
    (11, "ringed_cross", (200, 60, 200), (60, 210, 210)),
)
# The clutter design: (id, name); colours are drawn per instance.
CLUTTER_CATEGORIES = (
    (3, "grid_hexagon"),
    (6, "striped_star"),
    (9, "spotted_crescent"),
    (12, "wavy_diamond"),
)
JPEG_QUALITY = 95


def video_id(index: int) -> int:
    return 3 * index + 7


def annotation_id(index: int) -> int:
    return 5 * index + 13


def shape_polygon(kind: int, cx: float, cy: float, size: float, angle: float) -> np.ndarray:
    """Outline (P, 2) of category ``kind`` centred at (cx, cy), half-extent ``size``, rotated."""
    if kind == 0:  # ellipse
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        pts = np.stack([size * np.cos(t), 0.62 * size * np.sin(t)], axis=1)
    elif kind == 1:  # rectangle
        pts = np.array([[-1, -0.7], [1, -0.7], [1, 0.7], [-1, 0.7]]) * size
    elif kind == 2:  # triangle
        t = np.pi / 2 + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
        pts = 1.15 * size * np.stack([np.cos(t), np.sin(t)], axis=1)
    else:  # plus-shaped cross
        a, b = 1.0, 0.36
        pts = size * np.array(
            [[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a], [-b, b], [-a, b], [-a, -b], [-b, -b]]
        )
    c, s = np.cos(angle), np.sin(angle)
    return np.round(pts @ np.array([[c, s], [-s, c]]) + [cx, cy], 2)


def clutter_polygon(kind: int, cx: float, cy: float, size: float, angle: float) -> np.ndarray:
    """Outline (P, 2) of clutter category ``kind``: hexagon, five-point star, crescent or diamond."""
    if kind == 0:  # hexagon
        t = np.arange(6) * np.pi / 3
        pts = size * np.stack([np.cos(t), np.sin(t)], axis=1)
    elif kind == 1:  # five-point star
        t = -np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.15, 0.5) * size
        pts = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    elif kind == 2:  # crescent: outer arc of radius 1, inner arc of a circle shifted right
        t = np.linspace(0.35 * np.pi, 1.65 * np.pi, 20)
        outer = np.stack([np.cos(t), np.sin(t)], axis=1)
        inner = np.stack([0.45 + 0.75 * np.cos(t[::-1]), 0.9 * np.sin(t[::-1])], axis=1)
        pts = size * np.concatenate([outer, inner])
    else:  # diamond
        pts = size * np.array([[0.0, -1.2], [0.75, 0.0], [0.0, 1.2], [-0.75, 0.0]])
    c, s = np.cos(angle), np.sin(angle)
    return np.round(pts @ np.array([[c, s], [-s, c]]) + [cx, cy], 2)


def clutter_pattern(kind: int, u: np.ndarray, v: np.ndarray, size: float) -> np.ndarray:
    """Bool pattern of clutter category ``kind``: grid lines, diagonal stripes, spots or waves."""
    if kind == 0:
        p = 0.3 * size
        return (np.mod(u, p) < 0.3 * p) | (np.mod(v, p) < 0.3 * p)
    if kind == 1:
        return np.floor((u + v) / (0.2 * size)) % 2 == 0
    if kind == 2:
        p = 0.45 * size
        return (np.mod(u, p) - p / 2) ** 2 + (np.mod(v + 0.5 * np.floor(u / p) * p, p) - p / 2) ** 2 < (0.22 * p) ** 2
    return np.sin(v / (0.09 * size) + 2.5 * np.sin(u / (0.25 * size))) > 0


def texture_pattern(kind: int, u: np.ndarray, v: np.ndarray, size: float) -> np.ndarray:
    """Bool pattern in object coordinates (u, v): stripes, checkers, dots or rings."""
    if kind == 0:
        return np.floor(u / (0.28 * size)) % 2 == 0
    if kind == 1:
        p = 0.32 * size
        return (np.floor(u / p) + np.floor(v / p)) % 2 == 0
    if kind == 2:
        p = 0.34 * size
        return (np.mod(u, p) - p / 2) ** 2 + (np.mod(v, p) - p / 2) ** 2 < (0.3 * p) ** 2
    return np.floor(np.hypot(u, v) / (0.2 * size)) % 2 == 0


def rasterize(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    return decode_segmentation([polygon.ravel().tolist()], height, width)


def uncompressed_rle(mask: np.ndarray) -> dict:
    """Official YouTube-VIS train encoding: column-major run lengths, starting with a 0-run."""
    flat = mask.ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], changes, [flat.size]]))
    if flat[0]:
        counts = np.concatenate([[0], counts])
    return {"size": list(mask.shape), "counts": counts.tolist()}


def compressed_rle(mask: np.ndarray) -> dict:
    return encode_masks(mask.astype(bool)[None], [0])[0]


def _trajectory(
    rng: np.random.Generator,
    frames: int,
    height: int,
    width: int,
    size: float,
    through: np.ndarray | None = None,
    cross: bool = False,
) -> np.ndarray:
    """Per-frame centres (K, 2): inside the frame, entering, leaving, or crossing ``through``.

    ``cross`` makes the path cross ``through`` whatever mode was drawn (else only "inside" paths do).
    """
    margin = np.array([size * 1.1, size * 1.1])
    hi = np.array([width, height]) - margin

    def inside() -> np.ndarray:
        return rng.uniform(margin, np.maximum(hi, margin + 1))

    p0, p1 = inside(), inside()
    mode = rng.choice(["inside", "enter", "leave"], p=[0.6, 0.2, 0.2])
    if through is not None and (mode == "inside" or cross):  # pass across another object's path: occlusion
        d = rng.normal(size=2)
        d *= 0.3 * min(width, height) / np.linalg.norm(d)
        p0, p1 = np.clip(through - d, margin, hi), np.clip(through + d, margin, hi)
    elif mode != "inside":
        outside = p1.copy()
        axis = int(rng.integers(2))
        outside[axis] = -1.8 * size if rng.random() < 0.5 else (width, height)[axis] + 1.8 * size
        p0, p1 = (outside, p1) if mode == "enter" else (p0, outside)
    s = np.linspace(0.0, 1.0, frames)[:, None]
    wobble = rng.normal(0, 0.015 * min(width, height), size=2) * np.sin(np.pi * s * rng.uniform(1, 3))
    return p0 + (p1 - p0) * s + wobble


def _background(rng: np.random.Generator, height: int, width: int, pad: int, colourful: bool) -> np.ndarray:
    """Textured background larger than the frame (cropped with a slow pan): muted, or colourful noise."""
    H, W = height + 2 * pad, width + 2 * pad
    if colourful:
        base, chroma = rng.uniform(50, 200, size=3), 6
    else:
        base, chroma = rng.uniform(80, 160) + rng.uniform(-20, 20, size=3), 1

    def noise(cell: int, luma: float, chroma: float, interpolation: int) -> np.ndarray:
        shape = (H // cell + 2, W // cell + 2)
        grid = rng.normal(0, luma, shape + (1,)) + rng.normal(0, chroma, shape + (3,))
        return cv2.resize(grid, (W, H), interpolation=interpolation)

    low = noise(24, 28, 8 * chroma, cv2.INTER_CUBIC)  # blotches
    mid = noise(5, 12, 4 * chroma, cv2.INTER_LINEAR)  # fine grain
    return (base + low + mid).astype(np.float32)


def _classic_colours(rng: np.random.Generator, kind: int) -> list[np.ndarray]:
    """The category's two colours, jittered."""
    return [np.clip(np.array(c) + rng.uniform(-25, 25, 3), 0, 255) for c in CATEGORIES[kind][2:]]


def _random_colours(rng: np.random.Generator, kind: int) -> list[np.ndarray]:
    """Two saturated colours of distant hues, one light and one dark, whatever the category."""
    hue = rng.uniform(0, 1)
    hues = (hue, (hue + rng.uniform(0.25, 0.75)) % 1.0)
    values = (rng.uniform(0.75, 1.0), rng.uniform(0.25, 0.5))
    return [255 * np.array(colorsys.hsv_to_rgb(h, rng.uniform(0.6, 1.0), v)) for h, v in zip(hues, values)]


@dataclass(frozen=True)
class Style:
    """One synthetic design: categories, their outline and texture, colours, background, clutter."""

    categories: tuple[tuple, ...]  # (id, name, ...) per category
    polygon: Callable[[int, float, float, float, float], np.ndarray]
    pattern: Callable[[int, np.ndarray, np.ndarray, float], np.ndarray]
    colours: Callable[[np.random.Generator, int], list[np.ndarray]]
    colourful_background: bool
    twins_cross: bool  # the two same-category instances always cross each other
    distractors: int  # up to this many unannotated textured blobs on the background


STYLES = {
    "classic": Style(CATEGORIES, shape_polygon, texture_pattern, _classic_colours, False, False, 0),
    "clutter": Style(CLUTTER_CATEGORIES, clutter_polygon, clutter_pattern, _random_colours, True, True, 4),
}


def _paint(
    canvas: np.ndarray, mask: np.ndarray, centre: np.ndarray, angle: float, pattern: np.ndarray, colours: list
) -> None:
    """Fill ``mask`` of ``canvas`` with the two-colour ``pattern(u, v)`` in the object's rotated frame."""
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if not len(ys):
        return
    y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
    gy, gx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = gx - centre[0], gy - centre[1]
    c, s = np.cos(angle), np.sin(angle)
    texture = np.where(pattern(dx * c + dy * s, -dx * s + dy * c)[..., None], *colours).astype(np.float32)
    region = canvas[y0:y1, x0:x1]
    region[mask[y0:y1, x0:x1]] = texture[mask[y0:y1, x0:x1]]


def _add_distractors(rng: np.random.Generator, canvas: np.ndarray, style: Style, count: int) -> None:
    """Unannotated irregular blobs wearing the categories' textures: texture alone cannot name a class."""
    height, width = canvas.shape[:2]
    for _ in range(count):
        size = rng.uniform(0.08, 0.16) * min(height, width)
        centre = rng.uniform([0, 0], [width, height])
        t = np.linspace(0, 2 * np.pi, 12, endpoint=False)
        r = size * rng.uniform(0.6, 1.3, size=12)
        polygon = np.round(np.stack([r * np.cos(t), r * np.sin(t)], axis=1) + centre, 2)
        kind, angle = int(rng.integers(len(style.categories))), rng.uniform(0, np.pi)
        pattern = functools.partial(style.pattern, kind, size=size)
        _paint(canvas, rasterize(polygon, height, width), centre, angle, pattern, style.colours(rng, kind))


def render_video(
    rng: np.random.Generator, frames: int, height: int, width: int, style: str = "classic"
) -> tuple[list[np.ndarray], list[dict]]:
    """Frames (RGB uint8) and instances ``{kind, masks: (K,H,W) visible, polygons, topmost}``."""
    design = STYLES[style]
    n_obj = int(rng.integers(3, 5))
    twin = int(rng.integers(len(design.categories)))  # two instances of one category
    others = [k for k in range(len(design.categories)) if k != twin]
    kinds = [twin, twin] + [int(k) for k in rng.choice(others, size=n_obj - 2, replace=False)]
    objects, mids = [], []
    for index, kind in enumerate(kinds):
        size0 = rng.uniform(0.13, 0.2) * min(height, width)
        sizes = size0 * np.exp(np.linspace(0.0, np.log(rng.uniform(0.7, 1.4)), frames))  # scale change
        cross = design.twins_cross and index == 1
        if cross:
            through = mids[0]
        else:
            through = mids[int(rng.integers(len(mids)))] if mids and rng.random() < 0.5 else None
        centres = _trajectory(rng, frames, height, width, size0, through, cross)
        mids.append(centres[frames // 2])
        angles = rng.uniform(0, np.pi) + rng.uniform(-0.08, 0.08) * np.arange(frames)
        colours = design.colours(rng, kind)
        polygons = [design.polygon(kind, *centres[t], sizes[t], angles[t]) for t in range(frames)]
        objects.append(dict(kind=kind, sizes=sizes, centres=centres, angles=angles, colours=colours, polygons=polygons))
    order = rng.permutation(n_obj)  # draw order, bottom to top
    objects = [objects[i] for i in order]

    pad = 8
    background = _background(rng, height, width, pad, design.colourful_background)
    if design.distractors:
        _add_distractors(rng, background, design, int(rng.integers(1, design.distractors + 1)))
    pan = np.round(np.linspace(0, 1, frames)[:, None] * rng.uniform(-pad, pad, size=2)).astype(int) + pad
    images = []
    visible = np.zeros((n_obj, frames, height, width), dtype=bool)
    for t in range(frames):
        frame = background[pan[t, 1] : pan[t, 1] + height, pan[t, 0] : pan[t, 0] + width].copy()
        covered = np.zeros((height, width), dtype=bool)
        full = [rasterize(o["polygons"][t], height, width) for o in objects]
        for i in reversed(range(n_obj)):  # top to bottom: occluded pixels leave the lower masks
            visible[i, t] = full[i] & ~covered
            covered |= full[i]
        for o, m in zip(objects, full):
            pattern = functools.partial(design.pattern, o["kind"], size=o["sizes"][t])
            _paint(frame, m, o["centres"][t], o["angles"][t], pattern, o["colours"])
        frame += rng.normal(0, 5, size=frame.shape).astype(np.float32)  # sensor noise
        images.append(np.clip(frame, 0, 255).astype(np.uint8))
    instances = [
        {"kind": o["kind"], "masks": visible[i], "polygons": o["polygons"], "topmost": i == n_obj - 1}
        for i, o in enumerate(objects)
        if visible[i].any()
    ]
    return images, instances


def _xywh(mask: np.ndarray) -> list[float]:
    return mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))).tolist()


def _segmentation(mask: np.ndarray, polygon: np.ndarray, encoding: str) -> dict | list | None:
    if not mask.any():
        return None
    if encoding == "polygon":
        return [polygon.ravel().tolist()]
    return uncompressed_rle(mask) if encoding == "uncompressed" else compressed_rle(mask)


def _polygon_exact(inst: dict, height: int, width: int) -> bool:
    """A polygon reproduces the mask when nothing covers the object and it stays in the frame."""
    pts = np.concatenate(inst["polygons"])
    in_frame = (pts >= 0).all() and (pts[:, 0] <= width - 1).all() and (pts[:, 1] <= height - 1).all()
    return bool(inst["topmost"] and in_frame)


def _write_split(
    images_dir: Path,
    video_indices: range,
    first_ann: int,
    shape: tuple[int, int, int],
    seed: int,
    mixed: bool,
    style: str,
) -> tuple[list[dict], list[dict]]:
    """Render and write one split's frames; return its (videos, annotations) json entries.

    Video ``index`` is rendered from the generator seeded with (seed, index), so a video does not
    depend on how many others are written. ``mixed`` mixes the mask encodings (training json);
    otherwise compressed RLE only.
    """
    height, width, frames = shape
    videos, annotations = [], []
    ann_index = first_ann
    for k, index in enumerate(video_indices):
        vid = video_id(index)
        rng = np.random.default_rng([seed, index])
        images, instances = render_video(rng, frames, height, width, style)
        name = f"video_{vid:04d}"
        file_names = [f"{name}/{5 * t:05d}.jpg" for t in range(frames)]
        (images_dir / name).mkdir(parents=True)
        for fname, image in zip(file_names, images):
            cv2.imwrite(str(images_dir / fname), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        videos.append(
            {"id": vid, "width": width, "height": height, "length": frames, "file_names": file_names, "license": 1}
        )
        for inst in instances:
            if not mixed:
                encoding = "compressed"
            elif k % 3 == 0 and _polygon_exact(inst, height, width):
                encoding = "polygon"
            else:
                encoding = ("compressed", "uncompressed")[ann_index % 2]
            masks = inst["masks"]
            segs = [_segmentation(m, p, encoding) for m, p in zip(masks, inst["polygons"])]
            areas = masks.reshape(frames, -1).sum(axis=1)
            bboxes = [_xywh(m) if a else None for m, a in zip(masks, areas)]
            annotations.append(
                {
                    "id": annotation_id(ann_index),
                    "video_id": vid,
                    "category_id": STYLES[style].categories[inst["kind"]][0],
                    "iscrowd": 0,
                    "segmentations": segs,
                    "areas": [int(a) if a else None for a in areas],
                    "bboxes": bboxes,
                    "height": height,
                    "width": width,
                }
            )
            ann_index += 1
    return videos, annotations


def write_synthetic(
    out: str | os.PathLike,
    videos: int = 12,
    frames: int = 12,
    seed: int = 0,
    height: int = 192,
    width: int = 320,
    val_videos: int = 4,
    overwrite: bool = False,
    style: str = "classic",
) -> Path:
    """Write the dataset to ``out`` atomically (built in a temporary sibling directory, then renamed)."""
    if style not in STYLES:
        raise ValueError(f"style={style!r}: expected one of {sorted(STYLES)}")
    out = Path(out)
    with atomic_directory(out, overwrite) as tmp:
        categories = [{"id": cid, "name": name, "supercategory": "shape"} for cid, name, *_ in STYLES[style].categories]
        info = {"description": "crossvis synthetic VIS", "seed": seed}
        shape = (height, width, frames)
        train_vids, train_anns = _write_split(tmp / "train" / "JPEGImages", range(videos), 0, shape, seed, True, style)
        val_vids, val_anns = _write_split(
            tmp / "valid" / "JPEGImages", range(videos, videos + val_videos), len(train_anns), shape, seed, False, style
        )
        head = {"info": info, "licenses": []}
        for name, obj in (
            ("train.json", {**head, "videos": train_vids, "categories": categories, "annotations": train_anns}),
            ("valid.json", {**head, "videos": val_vids, "categories": categories}),
            ("valid_gt.json", {**head, "videos": val_vids, "categories": categories, "annotations": val_anns}),
        ):
            (tmp / name).write_text(json.dumps(obj))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--videos", type=int, default=12, help="training videos")
    parser.add_argument("--frames", type=int, default=12, help="frames per video")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--val-videos", type=int, default=4)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output directory")
    parser.add_argument("--style", choices=sorted(STYLES), default="classic", help="synthetic design")
    a = parser.parse_args(argv)
    out = write_synthetic(a.out, a.videos, a.frames, a.seed, a.height, a.width, a.val_videos, a.overwrite, a.style)
    print(
        f"wrote {a.videos} train + {a.val_videos} valid {a.style} videos, {a.frames} frames of "
        f"{a.height}x{a.width}, to {out}"
    )


if __name__ == "__main__":
    main()
