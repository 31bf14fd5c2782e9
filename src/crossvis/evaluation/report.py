"""Run the error analysis and write its outputs: ``analysis.json``, the PNG plots, the printed tables.

Shared by ``crossvis.cli.analyze``, ``crossvis.cli.evaluate analyze=true`` and validation during training
(``analyze=true``), so the three write the same files.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crossvis.errors import InputFormatError
from crossvis.evaluation.analysis import ERROR_TYPES, Indexed, analyze, format_report
from crossvis.evaluation.plots import write_plots
from crossvis.files import read_json, write_json_atomic


def run_analysis(
    ground_truth: Mapping[str, Any], results: list[dict], out_dir: Path, quiet: bool = False, **options: Any
) -> tuple[dict, list[Path]]:
    """Analyse (``analysis.analyze`` options), write ``analysis.json`` and the plots into ``out_dir``,
    print the tables unless ``quiet``; returns the analysis and the plot paths."""
    try:
        indexed = Indexed(ground_truth, results)
    except ValueError as e:  # the metric's input checks name the field and what was expected
        raise InputFormatError(str(e)) from e
    analysis = analyze(indexed, **options)
    out_dir = Path(out_dir)
    write_json_atomic(out_dir / "analysis.json", analysis)
    plots = write_plots(analysis, out_dir)
    if not quiet:
        print(format_report(analysis))
        print(f"\nWrote {out_dir / 'analysis.json'} and {', '.join(p.name for p in plots)}")
    return analysis, plots


def read_long_videos(path: str | Path, ground_truth: Mapping[str, Any]) -> list[int]:
    """The ids of the long videos of YouTube-VIS 2022: the videos of its long-video ground-truth json
    (the evaluation's ``gt_long.json``); each must be a video of ``ground_truth``."""
    data = read_json(path, "long-video ground truth (YouTube-VIS 2022 gt_long.json)", dict)
    videos = data.get("videos")
    if not isinstance(videos, list) or not all(isinstance(v, dict) and "id" in v for v in videos):
        raise InputFormatError(f"{path}: field 'videos': expected a list of videos with an 'id'")
    known = {v.get("id") for v in ground_truth.get("videos", [])}
    unknown = sorted(v["id"] for v in videos if v["id"] not in known)
    if unknown:
        raise InputFormatError(f"{path}: videos {unknown[:5]} are not videos of the ground truth being analysed")
    return [v["id"] for v in videos]


ERROR_COLUMNS = ["AP", *(f"dAP_{t}" for t in ERROR_TYPES), "dAP_all"]


def error_row(analysis: Mapping[str, Any]) -> list[float]:
    """AP and ΔAP per error type in percent, in ``ERROR_COLUMNS`` order (one row of a sweep's table)."""
    e = analysis["errors"]
    return [100 * e["AP"], *(100 * e["dAP"][t] for t in ERROR_TYPES), 100 * e["dAP_all"]]
