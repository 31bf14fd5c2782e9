"""Video reading in the demo: frames consumed as decoded, never sized from the container's count.

A scripted model stands in for CrossVIS (one square detection per frame, moving right), so the
tests check the reading, tracking and writing path, not what a network learned.
"""

from __future__ import annotations

import json
import struct
import tracemalloc
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import crossvis.data.video_source as video_io
from crossvis.data.video_source import FrameSource
from crossvis.engine.inference import VideoInference
from crossvis.engine.run_config import default_inference
from crossvis.engine.video import run_on_video
from crossvis.errors import ConfigError, InputFormatError

H, W = 48, 64


class ScriptedModel(torch.nn.Module):
    """One detection per frame: a 12x12 square at x = frame index mod 40 (enough for one track)."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.embedding = torch.nn.Identity()  # tracks by embeddings, like CrossVIS
        self.calls = 0

    def forward_infer(self, image: torch.Tensor, orig_size: tuple[int, int], post=None) -> dict[str, torch.Tensor]:
        x = self.calls % 40
        self.calls += 1
        masks = torch.zeros(1, *orig_size, dtype=torch.bool)
        masks[0, 10:22, x : x + 12] = True
        return {
            "boxes": torch.tensor([[x, 10, x + 12, 22]], dtype=torch.float32),
            "labels": torch.tensor([0]),
            "scores": torch.tensor([0.9]),
            "masks": masks,
            "embeddings": torch.tensor([[1.0, 0.0]]),
        }


class ScriptedModule:
    """What ``run_on_video`` needs from a CrossVISModule."""

    category_names = ["square"]
    category_ids = [7]

    def __init__(self) -> None:
        self.model = ScriptedModel()
        self.cfg = OmegaConf.create({"inference": default_inference(H, W)})

    def video_inference(self) -> VideoInference:
        return VideoInference.from_config(self.cfg.inference, self.model, self.category_ids)


def _frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (H, W, 3), dtype=np.uint8) for _ in range(n)]


def _write_avi_with_header_count(path: Path, frames: list[np.ndarray], header_count: int) -> None:
    """An MJPEG AVI whose header claims ``header_count`` frames (avih.dwTotalFrames and strh.dwLength)."""
    with imageio.get_writer(path, format="FFMPEG", codec="mjpeg", fps=5, macro_block_size=1) as writer:
        for frame in frames:
            writer.append_data(frame)
    data = bytearray(path.read_bytes())
    avih, strh = data.index(b"avih"), data.index(b"strh")
    assert struct.unpack_from("<I", data, avih + 8 + 16)[0] == len(frames)  # AVI main header, dwTotalFrames
    struct.pack_into("<I", data, avih + 8 + 16, header_count)
    struct.pack_into("<I", data, strh + 8 + 32, header_count)  # stream header, dwLength
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("header_count", [4, 20])
def test_video_whose_header_count_is_wrong_gives_every_decoded_frame(tmp_path: Path, header_count: int) -> None:
    video = tmp_path / "wrong_count.avi"
    _write_avi_with_header_count(video, _frames(9), header_count)
    source = FrameSource(video, folder_fps=5)
    assert source.estimated_frames == header_count  # what the container claims, used for the progress bar only
    results = run_on_video(ScriptedModule(), source, tmp_path / "out.mp4", tmp_path / "out.json")
    assert source.frames_read == 9 and source.read_error is None
    assert len(imageio.mimread(tmp_path / "out.mp4", format="FFMPEG")) == 9
    [track] = json.loads((tmp_path / "out.json").read_text())
    assert track == results[0] and track["category_id"] == 7
    assert len(track["segmentations"]) == 9 and all(track["segmentations"])


class _BrokenReader:
    """An imageio reader that decodes ``good`` frames, then fails (as a damaged stream does)."""

    def __init__(self, good: int) -> None:
        self.frames = _frames(good)

    def __enter__(self) -> _BrokenReader:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def get_meta_data(self) -> dict:
        return {"fps": 5.0, "duration": 2.0}  # claims 10 frames

    def get_data(self, index: int) -> np.ndarray:
        return self.frames[index]

    def __iter__(self):
        yield from self.frames
        raise RuntimeError("Frame is 100 bytes, but expected 9216.")


def test_decoding_error_mid_video_names_the_frame_and_keeps_what_was_processed(tmp_path, monkeypatch, capsys):
    video = tmp_path / "damaged.mp4"
    video.write_bytes(b"stand-in: the reader is scripted")
    monkeypatch.setattr(video_io.imageio, "get_reader", lambda *args, **kwargs: _BrokenReader(good=6))
    source = FrameSource(video, folder_fps=5)
    results = run_on_video(ScriptedModule(), source, tmp_path / "out.mp4", tmp_path / "out.json")
    warning = capsys.readouterr().err
    assert f"input: {video}: frame 6 could not be decoded (Frame is 100 bytes, but expected 9216.)" in warning
    assert "the outputs cover frames 0-5" in warning
    assert len(results[0]["segmentations"]) == 6
    assert json.loads((tmp_path / "out.json").read_text()) == results
    assert len(imageio.mimread(tmp_path / "out.mp4", format="FFMPEG")) == 6


def test_video_whose_first_frame_cannot_be_decoded_fails_before_any_work(tmp_path, monkeypatch):
    video = tmp_path / "damaged.mp4"
    video.write_bytes(b"stand-in")
    monkeypatch.setattr(video_io.imageio, "get_reader", lambda *args, **kwargs: _BrokenReader(good=0))
    with pytest.raises(InputFormatError, match=f"input: cannot decode {video} as a video"):
        FrameSource(video, folder_fps=5)


def test_long_video_memory_grows_only_with_the_rles(tmp_path: Path) -> None:
    """300 frames: frames and masks are dropped as they go; what stays is one compressed RLE per frame."""
    video = tmp_path / "long.mp4"
    with imageio.get_writer(video, format="FFMPEG", fps=25, macro_block_size=1) as writer:
        for frame in _frames(300):
            writer.append_data(frame)
    inference = ScriptedModule().video_inference()
    traced: dict[int, int] = {}  # frame index -> bytes allocated by Python and numpy

    def on_frame(index, frame, detections, track_ids) -> None:
        if index in (49, 299):
            traced[index] = tracemalloc.get_traced_memory()[0]

    tracemalloc.start()
    try:
        results = inference.run_frames(0, FrameSource(video, folder_fps=25), on_frame=on_frame)
    finally:
        tracemalloc.stop()
    [track] = results
    segs = track["segmentations"]
    assert len(segs) == 300 and all(segs)
    # Per frame the tracker keeps one RLE string in a small dict (about 0.5 KB of Python objects);
    # a kept frame would add 9 KB, a kept mask 3 KB.
    rle_bytes = sum(len(s["counts"]) for s in segs[50:300])
    growth = traced[299] - traced[49]
    assert growth <= rle_bytes + 250 * 600, (growth, rle_bytes)


def test_bad_tracker_setting_fails_before_any_frame() -> None:
    with pytest.raises(ConfigError, match="tracker.scoring: expected 'public' or 'masktrack', got 'hungarian'"):
        model = ScriptedModel()
        VideoInference(model, model.forward_infer, H, W, tracker_cfg={"scoring": "hungarian"}, category_ids=[7])
