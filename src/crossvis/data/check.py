"""Verify a dataset before training: ``python -m crossvis.data.check ANNOTATION_JSON IMAGE_ROOT``.

Accepts YouTube-VIS / OVIS jsons (``videos``) and COCO instances jsons (``images``, see
``crossvis.data.coco.report_coco``).

Loads the json as training does, checks that every referenced frame exists, decodes every frame
(in parallel, strictly: truncated or corrupt images fail) at its video's height/width, checks that
every mask decodes at that size, prints a summary and, as the last line, one JSON object
``{videos, frames, instances, identities, categories: {name: instance count}}``.
``--no-decode`` skips decoding the frames (a quick pass: existence only).
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

from tqdm import tqdm

from crossvis.cli import user_errors
from crossvis.data.coco import is_coco_json, report_coco
from crossvis.data.ytvis import VISDataset, VISFormatError, read_annotation_json, vis_from_dict
from crossvis.rle import decode_segmentation


def decode_frames(vis: VISDataset, workers: int | None = None) -> None:
    """Decode every frame in parallel threads (the decoder releases the GIL), with a progress bar.

    Raises for the first bad frame in video/frame order: missing, undecodable, truncated, or not
    at its video's height/width.
    """
    frames = [(video, i) for video in vis.videos for i in range(video.length)]
    pool = ThreadPoolExecutor(max_workers=workers or len(os.sched_getaffinity(0)))
    try:
        decoded = pool.map(lambda item: item[0].load_frame(item[1]).shape, frames)
        for _ in tqdm(decoded, total=len(frames), desc="decoding frames", unit="frame"):
            pass
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on an error, do not decode the rest


def check_dataset(vis: VISDataset, decode: bool = True) -> dict:
    """Check frames and masks; return the summary (raises VISFormatError / VISFileNotFoundError / InputFormatError)."""
    frames = annotated = 0
    for video in vis.videos:
        for i in range(video.length):
            video.require_frame(i)  # raises naming json, video and field
    if decode:
        decode_frames(vis)
    for video in vis.videos:
        frames += video.length
        annotated += len(video.annotated_frames())
        for inst in video.instances:
            for t, seg in enumerate(inst.segmentations):
                if seg is None:
                    continue
                try:  # the mask comes out at (height, width) or decoding raises
                    decode_segmentation(seg, video.height, video.width)
                except ValueError as e:
                    raise VISFormatError(
                        f"{vis.json_path}: annotation {inst.ann_id} (video {video.id}): field 'segmentations'[{t}]: {e}"
                    ) from e
    counts = Counter(inst.label for v in vis.videos for inst in v.instances)
    return {
        "videos": len(vis.videos),
        "frames": frames,
        "annotated_frames": annotated,
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
        print("  frames not decoded (--no-decode)")
    print(f"  instances {summary['instances']}, identities M = {summary['identities']}")
    print(f"  categories ({len(summary['categories'])}):")
    for name, n in summary["categories"].items():
        print(f"    {name}: {n}")
    print(json.dumps({k: summary[k] for k in ("videos", "frames", "instances", "identities", "categories")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
