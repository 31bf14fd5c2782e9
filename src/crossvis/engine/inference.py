"""Online video inference: frames → per-frame detections → tracker → official video results."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from crossvis.data.transforms import load_frame_rgb, preprocess_for_inference
from crossvis.engine.runtime import FrameModel, FrameSettings, Runtime
from crossvis.errors import ConfigError, config_node
from crossvis.modeling.crossvis import CrossVIS
from crossvis.modeling.specs import spec_from_dict
from crossvis.timing import stage
from crossvis.tracking import OnlineTracker, Tracker

# Called after each frame with (frame index, RGB frame, detections, track id per detection;
# -1 where the tracker dropped the detection).
FrameCallback = Callable[[int, np.ndarray, dict, np.ndarray], None]


def with_overrides(stored: DictConfig | dict, overrides: DictConfig | dict | None) -> DictConfig:
    """``stored`` (e.g. a checkpoint's ``inference`` config) with the non-null values of ``overrides``
    (conf/inference/checkpoint.yaml: null = keep the stored value)."""
    merged = OmegaConf.create(_plain(stored))
    if overrides is not None:
        merged = OmegaConf.merge(merged, _without_nulls(_plain(overrides)))
    return merged


def frame_settings(cfg_inference: DictConfig | dict) -> FrameSettings:
    """How each frame is run: ``inference.detection``, ``inference.precision``, ``inference.channels_last``."""
    with config_node("inference"):
        return spec_from_dict(FrameSettings, _plain(cfg_inference), ignore=("short", "max_size", "tracker"))


def _plain(cfg: DictConfig | dict) -> dict:
    """A resolved plain dict (a node of a run config resolves against its root: ``${data.transform.short}``)."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def _without_nulls(tree: dict) -> dict:
    """``tree`` without its null leaves and without the nodes left empty."""
    pruned = {k: _without_nulls(v) if isinstance(v, dict) else v for k, v in tree.items() if v is not None}
    return {k: v for k, v in pruned.items() if v != {}}


def build_tracker(cfg_tracker: DictConfig | dict) -> OnlineTracker:
    """The tracker of ``inference.tracker``; a bad setting is a config error naming its key."""
    settings = _plain(cfg_tracker)
    try:
        return OnlineTracker(**settings)
    except TypeError as error:  # a key OnlineTracker does not take
        raise ConfigError(
            f"inference.tracker: unknown setting ({error}); expected some of "
            "match_threshold, scoring, category_vote, masktrack_weights, association, momentum, track_score, reid_threshold"
        ) from None
    except ValueError as error:  # OnlineTracker names its argument: "scoring: expected ..."
        raise ConfigError(f"inference.tracker.{error}") from None


class VideoInference:
    """Processes one video at a time, frame by frame, as the paper's online setting requires."""

    def __init__(
        self,
        model: torch.nn.Module,
        frame_model: FrameModel,
        short: int,
        max_size: int,
        tracker_cfg: DictConfig | dict,
        category_ids: Sequence[int],
        new_tracker: Callable[[], Tracker] | None = None,
    ) -> None:
        """``frame_model`` (image, frame size) -> detections runs ``model`` (which is put in eval mode and
        gives the device); ``new_tracker`` gives each video a fresh tracker: default the CrossVIS tracker
        of ``tracker_cfg``."""
        self.model = model
        # The seam between runtimes: PyTorch eager or ONNX Runtime (crossvis.engine.runtime).
        self.frame_model = frame_model
        self.short = int(short)
        self.max_size = int(max_size)
        self.tracker_cfg = dict(tracker_cfg)
        if new_tracker is None:
            build_tracker(self.tracker_cfg)  # a bad tracker setting fails here, before any frame is read
            new_tracker = functools.partial(build_tracker, self.tracker_cfg)
        self.new_tracker = new_tracker
        self.category_ids = list(category_ids)

    @classmethod
    def from_config(
        cls,
        cfg_inference: DictConfig | dict,
        model: CrossVIS,
        category_ids: Sequence[int],
        overrides: DictConfig | dict | None = None,
        runtime: Runtime | None = None,
    ) -> VideoInference:
        """Online inference as ``inference.*`` (conf/inference/default.yaml) says, with the non-null
        ``overrides`` (evaluate / demo: conf/inference/checkpoint.yaml) applied, the network on
        ``runtime`` (default: PyTorch eager)."""
        if model.embedding is None:
            raise ConfigError(
                "video inference tracks with embeddings: model.embedding.enabled=false suits data=coco only"
            )
        cfg = with_overrides(cfg_inference, overrides)
        frame_model = (runtime or Runtime()).frame_model(model, frame_settings(cfg))
        return cls(model, frame_model, cfg.short, cfg.max_size, cfg.tracker, category_ids)

    @torch.inference_mode()
    def run_frames(
        self,
        video_id: int,
        frames: Iterable[np.ndarray],
        on_frame: FrameCallback | None = None,
    ) -> list[dict]:
        """Track instances over ``frames`` (RGB uint8) as they come; one result entry per track.

        The length need not be known in advance: segmentations cover the frames consumed. Its stages
        are marked for the benchmark's timer (:mod:`crossvis.timing`; free when none is active).
        """
        was_training = self.model.training
        self.model.eval()
        tracker = self.new_tracker()
        device = next(self.model.parameters()).device
        for index, frame in enumerate(frames):
            with stage("preprocess"):
                image = preprocess_for_inference(frame, self.short, self.max_size).to(device)
            with stage("heads"):  # the frame model, less the stages it marks itself (backbone+fpn, mask paste)
                detections = self.frame_model(image, frame.shape[:2])
                detections = {key: value.cpu() for key, value in detections.items()}
            with stage("tracker"):
                track_ids = tracker.update(index, detections)
            if on_frame is not None:
                on_frame(index, frame, detections, track_ids)
        self.model.train(was_training)
        with stage("tracker"):  # RLE is its own stage
            return tracker.video_results(video_id, dict(enumerate(self.category_ids)))

    def run_paths(
        self, video_id: int, frame_paths: Sequence[str | Path], on_frame: FrameCallback | None = None
    ) -> list[dict]:
        """Same as :meth:`run_frames` for frames stored as image files (read lazily)."""
        frames = (load_frame_rgb(path) for path in frame_paths)
        return self.run_frames(video_id, frames, on_frame)
