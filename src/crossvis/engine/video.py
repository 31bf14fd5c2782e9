"""One video source through the online runner: the overlay video, the results json, live sinks."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from crossvis.data.video_source import FrameSource, StreamSource
from crossvis.engine.inference import FrameCallback, VideoInference
from crossvis.engine.lightning_module import CrossVISModule
from crossvis.engine.runtime import Runtime
from crossvis.errors import InputFormatError
from crossvis.evaluation.results import write_results_json
from crossvis.visualize import OverlayVideoWriter, draw_tracks


def run_on_video(
    module: CrossVISModule,
    source: FrameSource | StreamSource,
    output: str | Path,
    results_path: str | Path,
    gif: str | Path | None = None,
    min_score: float = 0.0,
    inference_overrides: DictConfig | dict | None = None,
    runtime: Runtime | None = None,
    sinks: Sequence[FrameCallback] = (),
    show: Callable[[np.ndarray], None] | None = None,
) -> list[dict]:
    """Online inference over ``source`` (the module's ``inference`` config with ``inference_overrides``,
    the network on ``runtime``); writes the overlay video and the results json.

    ``sinks`` also receive every frame's detections and track ids (e.g. per-frame outputs);
    ``show`` receives every overlay frame (a live display)."""
    inference = VideoInference.from_config(
        module.cfg.inference, module.model, module.category_ids, inference_overrides, runtime
    )
    with (
        OverlayVideoWriter(output, source.fps, gif) as writer,
        tqdm(total=source.estimated_frames, desc="frames") as bar,
    ):

        def on_frame(index: int, frame: np.ndarray, detections: dict, track_ids: np.ndarray) -> None:
            overlay = draw_tracks(frame, detections, track_ids, module.category_names, min_score)
            writer.append(overlay)
            for sink in sinks:
                sink(index, frame, detections, track_ids)
            if show is not None:
                show(overlay)
            bar.update()

        results = inference.run_frames(1, source, on_frame=on_frame)
        if source.frames_read == 0:  # inside the block: the overlay is discarded
            raise InputFormatError(source.read_error or f"input: {source.path} yielded no frames")
    write_results_json(results_path, results)
    if source.read_error:
        print(f"warning: {source.read_error}; the outputs cover frames 0-{source.frames_read - 1}", file=sys.stderr)
    return results
