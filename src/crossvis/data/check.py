"""Verify a dataset before training: ``python -m crossvis.data.check ANNOTATION_JSON IMAGE_ROOT``.

Accepts YouTube-VIS / OVIS jsons (``videos``) and COCO instances jsons (``images``, see
``crossvis.data.coco.report_coco``).

Loads the json as training does, checks that every referenced frame exists, decodes every frame
(strictly: truncated or corrupt images fail) at its video's height/width and every mask at that
size (in parallel, with a progress bar and the time left), prints a summary and, as the last line,
one JSON object ``{videos, frames, instances, identities, categories: {name: instance count}}``.
``--no-decode`` skips decoding (a quick pass: frames must exist, masks must fit their frame).
Exits with status 1 and a message naming file, video and field on the first problem.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pycocotools import mask as mask_utils
from tqdm import tqdm

from crossvis.cli import user_errors
from crossvis.data.coco import is_coco_json, report_coco
from crossvis.data.ytvis import Video, VISDataset, VISFormatError, read_annotation_json, vis_from_dict
from crossvis.rle import to_rle


def _check_masks(vis: VISDataset, video: Video, decode: bool) -> None:
    """Every mask of ``video``: an RLE of its height/width (uncompressed counts covering the frame,
    polygons inside it), fully decoded when ``decode``; raises naming annotation, video and frame."""
    for inst in video.instances:
        for t, seg in enumerate(inst.segmentations):
            if seg is None:
                continue
            try:
                rle = to_rle(seg, video.height, video.width)
                if decode:
                    mask_utils.decode(rle)
            except ValueError as e:
                raise VISFormatError(
                    f"{vis.json_path}: annotation {inst.ann_id} (video {video.id}): field 'segmentations'[{t}]: {e}"
                ) from e


def _decode_video(vis: VISDataset, video: Video) -> int:
    """Decode every frame and mask of ``video`` (raises on the first bad one); returns its frame count."""
    for i in range(video.length):
        video.load_frame(i)
    _check_masks(vis, video, decode=True)
    return video.length


def decode_all(vis: VISDataset, workers: int | None = None) -> None:
    """Decode every frame and mask, a video per task in parallel threads (the JPEG decoder releases the
    GIL), with a progress bar in frames and the time left. Raises for the first bad video in order."""
    pool = ThreadPoolExecutor(max_workers=workers or len(os.sched_getaffinity(0)))
    frames = sum(v.length for v in vis.videos)
    try:
        with tqdm(total=frames, desc="decoding frames and masks", unit="frame") as bar:
            for count in pool.map(lambda video: _decode_video(vis, video), vis.videos):
                bar.update(count)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on an error, do not decode the rest


def check_dataset(vis: VISDataset, decode: bool = True) -> dict:
    """Check frames and masks; return the summary (raises VISFormatError / VISFileNotFoundError / InputFormatError).

    Without ``decode``, frames are checked for existence and masks structurally (size, counts
    covering the frame), which takes seconds at YouTube-VIS size; with it, every frame and mask is decoded.
    """
    for video in vis.videos:
        for i in range(video.length):
            video.require_frame(i)  # raises naming json, video and field
    if decode:
        decode_all(vis)
    else:
        for video in vis.videos:
            _check_masks(vis, video, decode=False)
    counts = Counter(inst.label for v in vis.videos for inst in v.instances)
    return {
        "videos": len(vis.videos),
        "frames": sum(v.length for v in vis.videos),
        "annotated_frames": sum(len(v.annotated_frames()) for v in vis.videos),
        "instances": sum(counts.values()),
        "identities": vis.num_identities,
        "categories": {c.name: counts.get(label, 0) for label, c in enumerate(vis.categories)},
    }


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("annotation_json", type=Path)
    parser.add_argument("image_root", type=Path)
    parser.add_argument(
        "--no-decode", action="store_true", help="do not decode the frames (quick pass: existence only)"
    )
    args = parser.parse_args(argv)
    raw = read_annotation_json(args.annotation_json)
    if is_coco_json(raw):  # COCO instances json (still images)
        report_coco(raw, args.annotation_json, args.image_root)
        return 0
    vis = vis_from_dict(raw, args.annotation_json, args.image_root)
    summary = check_dataset(vis, decode=not args.no_decode)
    print(f"{vis.json_path} (images under {vis.image_root}): OK")
    print(f"  videos {summary['videos']}, frames {summary['frames']}, annotated frames {summary['annotated_frames']}")
    if not vis.has_annotations:
        print("  no 'annotations' key (a valid/test split): frames checked only")
    if args.no_decode:
        print("  frames and masks not decoded (--no-decode): frames exist, masks fit their frames")
    print(f"  instances {summary['instances']}, identities M = {summary['identities']}")
    print(f"  categories ({len(summary['categories'])}):")
    for name, n in summary["categories"].items():
        print(f"    {name}: {n}")
    print(json.dumps({k: summary[k] for k in ("videos", "frames", "instances", "identities", "categories")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
