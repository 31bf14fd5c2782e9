"""Online video inference: frames → per-frame detections → tracker → official video results."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from crossvis.data.transforms import load_frame_rgb, preprocess_for_inference
from crossvis.errors import InputFormatError
from crossvis.evaluation.results import write_results_json
from crossvis.modeling.crossvis import CrossVIS
from crossvis.tracking import OnlineTracker
from crossvis.video_io import FrameSource
from crossvis.visualize import OverlayVideoWriter, draw_tracks

if TYPE_CHECKING:  # the Lightning module builds a VideoInference: imported for annotations only
    from crossvis.lightning_module import CrossVISModule

# Called after each frame with (frame index, RGB frame, detections, track id per detection;
# -1 where the tracker dropped the detection).
FrameCallback = Callable[[int, np.ndarray, dict, np.ndarray], None]


class VideoInference:
    """Processes one video at a time, frame by frame, as the paper's online setting requires."""

    def __init__(
        self,
        model: CrossVIS,
        short: int,
        max_size: int,
        tracker_cfg: DictConfig | dict,
        category_ids: Sequence[int],
    ) -> None:
        self.model = model
        self.short = short
        self.max_size = max_size
        self.tracker_cfg = dict(tracker_cfg)
        OnlineTracker(**self.tracker_cfg)  # a bad tracker setting fails here, before any frame is read
        self.category_ids = list(category_ids)

    @torch.inference_mode()
    def run_frames(
        self,
        video_id: int,
        frames: Iterable[np.ndarray],
        on_frame: FrameCallback | None = None,
    ) -> list[dict]:
        """Track instances over ``frames`` (RGB uint8) as they come; one result entry per track.

        The length need not be known in advance: segmentations cover the frames consumed.
        """
        was_training = self.model.training
        self.model.eval()
        tracker = OnlineTracker(**self.tracker_cfg)
        device = next(self.model.parameters()).device
        for index, frame in enumerate(frames):
            image = preprocess_for_inference(frame, self.short, self.max_size).to(device)
            detections = self.model.forward_infer(image, frame.shape[:2])
            detections = {key: value.cpu() for key, value in detections.items()}
            track_ids = tracker.update(index, detections)
            if on_frame is not None:
                on_frame(index, frame, detections, track_ids)
        self.model.train(was_training)
        return tracker.video_results(video_id, dict(enumerate(self.category_ids)))

    def run_paths(
        self, video_id: int, frame_paths: Sequence[str | Path], on_frame: FrameCallback | None = None
    ) -> list[dict]:
        """Same as :meth:`run_frames` for frames stored as image files (read lazily)."""
        frames = (load_frame_rgb(path) for path in frame_paths)
        return self.run_frames(video_id, frames, on_frame)


def run_on_video(
    module: CrossVISModule,
    source: FrameSource,
    output: str | Path,
    results_path: str | Path,
    gif: str | Path | None = None,
    min_score: float = 0.0,
) -> list[dict]:
    """Online inference over ``source``; writes the overlay video and the results json."""
    inference = module.video_inference()
    with OverlayVideoWriter(output, source.fps, gif) as writer, tqdm(total=source.estimated_frames, desc="frames") as bar:

        def on_frame(index: int, frame: np.ndarray, detections: dict, track_ids: np.ndarray) -> None:
            writer.append(draw_tracks(frame, detections, track_ids, module.category_names, min_score))
            bar.update()

        results = inference.run_frames(1, source, on_frame=on_frame)
        if source.frames_read == 0:  # inside the block: the overlay is discarded
            raise InputFormatError(source.read_error or f"input: {source.path} yielded no frames")
    write_results_json(results_path, results)
    if source.read_error:
        print(f"warning: {source.read_error}; the outputs cover frames 0-{source.frames_read - 1}", file=sys.stderr)
    return results
