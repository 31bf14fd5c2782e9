"""Error analysis of a results file: breakdowns, TIVE error decomposition, tracking diagnostics, oracles.

    python -m crossvis.cli.analyze GT_JSON RESULTS_JSON [--out DIR]

Prints the tables, writes ``analysis.json`` and the PNG plots into DIR (default: the results
file's folder) and ends with the analysis as one JSON line. See docs/analysis.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from crossvis.cli import require_writable_dir, user_errors
from crossvis.evaluation.report import read_long_videos, run_analysis
from crossvis.files import read_json


def _thresholds(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 2 or values[0] > values[1]:
        raise argparse.ArgumentTypeError(
            f"expected two increasing numbers A,B (short <= A < medium <= B < long), got {text!r}"
        )
    return values


@user_errors
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crossvis.cli.analyze", description=__doc__.split("\n")[0])
    parser.add_argument("ground_truth", type=Path, help="YouTube-VIS ground-truth json (with annotations)")
    parser.add_argument("results", type=Path, help="results json (crossvis.cli.evaluate's results.json)")
    parser.add_argument("--out", type=Path, help="output folder (default: the results file's folder)")
    parser.add_argument("--video-length-bins", type=_thresholds, help="A,B in frames (default: terciles)")
    parser.add_argument("--duration-bins", type=_thresholds, help="A,B in frames with a mask (default: terciles)")
    parser.add_argument(
        "--track-score", type=float, default=0.0, help="tracking diagnostics and HOTA: results scored >= this"
    )
    parser.add_argument(
        "--long-videos", type=Path, help="YouTube-VIS 2022: the long-video ground truth json (gt_long.json)"
    )
    parser.add_argument("--no-hota", action="store_true", help="skip TrackEval's HOTA")
    args = parser.parse_args(argv)
    out_dir = require_writable_dir(args.out or args.results.parent, "--out")
    ground_truth = read_json(args.ground_truth, "ground truth", dict)
    results = read_json(args.results, "results", list)
    long_ids = read_long_videos(args.long_videos, ground_truth) if args.long_videos else None
    analysis, _ = run_analysis(
        ground_truth,
        results,
        out_dir,
        video_length_thresholds=args.video_length_bins,
        duration_thresholds=args.duration_bins,
        track_score_threshold=args.track_score,
        hota=not args.no_hota,
        long_video_ids=long_ids,
    )
    print(json.dumps(analysis))
    return 0


if __name__ == "__main__":
    sys.exit(main())
