"""Verify a dataset before training: ``python -m crossvis.data.check ANNOTATION_JSON IMAGE_ROOT``.

Accepts YouTube-VIS / OVIS jsons (``videos``) and COCO instances jsons (``images``, see
``crossvis.data.coco.report_coco``).

Loads the json as training does, checks that every referenced frame exists and every mask
decodes at its video's size, prints a summary and, as the last line, one JSON object
``{videos, frames, instances, identities, categories: {name: instance count}}``.
Exits with status 1 and a message naming file, video and field on the first problem.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from crossvis.data.coco import is_coco_json, report_coco
from crossvis.data.ytvis import (
    VISDataset,
    VISFileNotFoundError,
    VISFormatError,
    _read_json,
    decode_segmentation,
    vis_from_dict,
)


def check_dataset(vis: VISDataset) -> dict:
    """Check frames and masks; return the summary (raises VISFormatError / VISFileNotFoundError)."""
    frames = annotated = 0
    for video in vis.videos:
        for i in range(video.length):
            video.require_frame(i)  # raises naming json, video and field
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("annotation_json", type=Path)
    parser.add_argument("image_root", type=Path)
    args = parser.parse_args(argv)
    try:
        raw = _read_json(args.annotation_json)
        if is_coco_json(raw):  # COCO instances json (still images)
            report_coco(raw, args.annotation_json, args.image_root)
            return 0
        vis = vis_from_dict(raw, args.annotation_json, args.image_root)
        summary = check_dataset(vis)
    except (VISFormatError, VISFileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{vis.json_path} (images under {vis.image_root}): OK")
    print(f"  videos {summary['videos']}, frames {summary['frames']}, annotated frames {summary['annotated_frames']}")
    if not vis.has_annotations:
        print("  no 'annotations' key (a valid/test split): frames checked only")
    print(f"  instances {summary['instances']}, identities M = {summary['identities']}")
    print(f"  categories ({len(summary['categories'])}):")
    for name, n in summary["categories"].items():
        print(f"    {name}: {n}")
    print(json.dumps({k: summary[k] for k in ("videos", "frames", "instances", "identities", "categories")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
