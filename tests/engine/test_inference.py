"""The inference runner: the `inference` config group reaches VideoInference and the tracker; frames are
resized as configured, tracked and written as one result per track."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from crossvis.conf import CONF_DIR
from crossvis.engine.inference import VideoInference, with_overrides
from crossvis.engine.run_config import default_inference
from crossvis.errors import ConfigError
from crossvis.modeling.crossvis import CrossVIS
from crossvis.tracking import MaskIoUTracker

from helpers import TINY_MODEL, post_processing, spec_of


def _compose(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(name, overrides=list(overrides))


class RecordingModel(torch.nn.Module):
    """Records the input size of each call; returns one fixed 4x4 detection with a fixed embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.embedding = torch.nn.Identity()
        self.sizes: list[tuple[int, int]] = []

    def forward_infer(self, image: torch.Tensor, orig_size: tuple[int, int], post=None) -> dict[str, torch.Tensor]:
        self.sizes.append(tuple(image.shape[-2:]))
        masks = torch.zeros(1, *orig_size, dtype=torch.bool)
        masks[0, 2:6, 3:7] = True
        return {
            "boxes": torch.tensor([[3.0, 2.0, 7.0, 6.0]]),
            "labels": torch.tensor([1]),
            "scores": torch.tensor([0.8]),
            "masks": masks,
            "embeddings": torch.tensor([[0.0, 1.0]]),
        }


def stored(short: int, max_size: int, tracker: dict) -> dict:
    """A checkpoint's inference settings: the group's defaults with this resize and tracker."""
    return {**default_inference(short, max_size), "tracker": tracker}


def test_training_config_gives_the_test_time_resize_and_tracker() -> None:
    cfg = _compose("train", "data=synthetic")
    inference = VideoInference.from_config(cfg.inference, RecordingModel(), [5, 9])
    # conf/data/synthetic.yaml: transform.short 192, max_size 320; conf/inference/default.yaml tracker
    assert (inference.short, inference.max_size) == (192, 320)
    assert inference.tracker_cfg == {
        "match_threshold": 0.4,
        "scoring": "public",
        "category_vote": "first",
        "masktrack_weights": [1.0, 2.0, 10.0],
        "association": "greedy",
        "momentum": 0.0,
        "track_score": "mean",
        "reid_threshold": None,
    }


def test_association_options_override_a_checkpoint_stored_without_them() -> None:
    checkpoint = stored(8, 8, {"match_threshold": 0.4, "scoring": "public"})
    options = ("inference.tracker.association=hungarian", "inference.tracker.momentum=0.5")
    cfg = _compose(
        "evaluate",
        "checkpoint=x",
        *options,
        "inference.tracker.track_score=coverage",
        "inference.tracker.reid_threshold=0.7",
    )
    inference = VideoInference.from_config(checkpoint, RecordingModel(), [1], overrides=cfg.inference)
    assert inference.tracker_cfg == {
        **checkpoint["tracker"],
        "association": "hungarian",
        "momentum": 0.5,
        "track_score": "coverage",
        "reid_threshold": 0.7,
    }
    with pytest.raises(ConfigError, match="inference.tracker.association: expected 'greedy' or 'hungarian'"):
        bad = _compose("evaluate", "checkpoint=x", "inference.tracker.association=minvis")
        VideoInference.from_config(checkpoint, RecordingModel(), [1], overrides=bad.inference)


def test_table8_baseline_rows_track_with_masktrack_scoring() -> None:
    cfg = _compose("train", "experiment=table8", "model.embedding.type=pairwise")
    assert VideoInference.from_config(cfg.inference, RecordingModel(), [1]).tracker_cfg["scoring"] == "masktrack"


def test_evaluate_overrides_replace_only_the_keys_given() -> None:
    checkpoint = stored(
        192,
        320,
        {"match_threshold": 0.4, "scoring": "public", "category_vote": "first", "masktrack_weights": [1, 2, 10]},
    )
    for entry_point in ("evaluate", "demo", "benchmark"):
        extra = ("checkpoint=x",) if entry_point == "evaluate" else ()
        extra += ("input=x", "checkpoint=x", "output=x") if entry_point == "demo" else ()
        cfg = _compose(entry_point, *extra, "inference.tracker.scoring=masktrack", "inference.short=100")
        inference = VideoInference.from_config(checkpoint, RecordingModel(), [1], overrides=cfg.inference)
        assert (inference.short, inference.max_size) == (100, 320), entry_point
        assert inference.tracker_cfg == {**checkpoint["tracker"], "scoring": "masktrack"}, entry_point
    untouched = with_overrides(checkpoint, _compose("evaluate", "checkpoint=x").inference)
    assert untouched == checkpoint


def test_bad_tracker_override_names_the_config_key() -> None:
    with pytest.raises(ConfigError, match="inference.tracker.category_vote: expected 'first' or 'majority'"):
        VideoInference.from_config(
            stored(8, 8, {}),
            RecordingModel(),
            [1],
            overrides={"tracker": {"category_vote": "last"}},
        )
    with pytest.raises(ConfigError, match="inference.tracker: unknown setting"):
        VideoInference.from_config(stored(8, 8, {"iou": 0.5}), RecordingModel(), [1])


def test_run_frames_resizes_tracks_and_restores_the_mode() -> None:
    model = RecordingModel().train()
    inference = VideoInference(model, model.forward_infer, short=24, max_size=40, tracker_cfg={}, category_ids=[5, 9])
    frames = [np.full((48, 64, 3), i, dtype=np.uint8) for i in range(3)]
    seen: list[tuple[int, list[int]]] = []
    results = inference.run_frames(4, frames, on_frame=lambda i, frame, det, ids: seen.append((i, ids.tolist())))
    assert model.sizes == [(24, 32)] * 3  # 48x64 -> short side 24 (64 * 24 / 48 = 32 <= 40)
    assert seen == [(0, [0]), (1, [0]), (2, [0])]  # the same box and embedding: one track
    [track] = results
    assert track["video_id"] == 4 and track["category_id"] == 9  # label 1 -> category_ids[1]
    assert len(track["segmentations"]) == 3 and all(s["size"] == [48, 64] for s in track["segmentations"])
    assert model.training  # run_frames evaluates, then puts the model back as it was


def test_the_runner_takes_another_frame_model_and_tracker_and_gives_each_video_a_fresh_tracker() -> None:
    """The peer's path: its own frame model (masks at the frame's size) and the mask-IoU tracker."""

    def square_at(x0: int):
        def frame_model(image: torch.Tensor, frame_size: tuple[int, int]) -> dict[str, torch.Tensor]:
            masks = torch.zeros((1, *frame_size), dtype=torch.bool)
            masks[0, :8, x0 : x0 + 8] = True
            return {"masks": masks, "scores": torch.tensor([0.7]), "labels": torch.tensor([1])}

        return frame_model

    made: list[MaskIoUTracker] = []

    def new_tracker() -> MaskIoUTracker:
        made.append(MaskIoUTracker(match_iou=0.5))
        return made[-1]

    frames = [np.zeros((16, 32, 3), dtype=np.uint8)] * 3
    runner = VideoInference(RecordingModel(), square_at(0), 16, 32, {}, [5, 9], new_tracker=new_tracker)
    [track] = runner.run_frames(1, frames)  # the same square in every frame: one track
    assert track["category_id"] == 9 and [s is not None for s in track["segmentations"]] == [True] * 3
    runner.frame_model = square_at(12)  # IoU 0 with the last video's square: a fresh tracker starts over anyway
    [track] = runner.run_frames(2, frames[:2])
    assert len(made) == 2 and made[1].num_tracks == 1 and len(track["segmentations"]) == 2


def test_detection_settings_are_overridable_at_evaluate_time_and_reach_the_model() -> None:
    """inference.detection.* of the run config, overridable per evaluation, reach ``forward_infer`` as one
    immutable value (the model holds no settings of its own)."""
    stored = _compose("train", "data=synthetic", *TINY_MODEL)
    torch.manual_seed(0)
    model = CrossVIS(spec_of(stored.model), num_classes=2, num_identities=4).eval()
    image = torch.rand(3, 64, 96, generator=torch.Generator().manual_seed(0)) * 255
    seen: list = []
    network = model.forward_infer
    model.forward_infer = lambda image, size, post: seen.append(post) or network(image, size, post)

    VideoInference.from_config(stored.inference, model, [1, 2]).frame_model(image, (64, 96))
    assert seen[-1] == post_processing() and (seen[-1].score_threshold, seen[-1].max_detections) == (0.05, 100)
    every = network(image, (64, 96), post_processing(score_threshold=0.0))["scores"]  # random weights: all above 0
    assert len(every) > 7

    evaluate = _compose(
        "evaluate", "checkpoint=x", "inference.detection.max_detections=7", "inference.detection.score_threshold=0"
    )
    runner = VideoInference.from_config(stored.inference, model, [1, 2], overrides=evaluate.inference)
    kept = runner.frame_model(image, (64, 96))["scores"]
    assert seen[-1] == post_processing(score_threshold=0.0, max_detections=7)
    # the 7 best after NMS, then the boxes left empty by clipping are dropped (CondInst's order)
    assert 0 < len(kept) <= 7 and torch.equal(kept, every[: len(kept)])
    with pytest.raises(dataclasses.FrozenInstanceError):
        seen[-1].max_detections = 3

    with pytest.raises(ConfigError, match="inference.detection.iou: unknown setting"):
        VideoInference.from_config(stored.inference, model, [1], overrides={"detection": {"iou": 0.5}})
