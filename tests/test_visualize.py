"""The overlay writer: tracked detections drawn in their track's colour; files appear only on success."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
from PIL import Image

from crossvis.visualize import OverlayVideoWriter, draw_tracks, track_color


def _detections(n: int) -> dict:
    masks = np.zeros((n, 60, 80), bool)
    masks[:, 32:54, 12:48] = True
    return {
        "masks": masks,
        "boxes": np.tile([10.0, 30.0, 50.0, 55.0], (n, 1)),
        "labels": np.zeros(n, int),
        "scores": np.array([0.9, 0.2][:n]),
    }


def test_track_colour_is_stable_per_id() -> None:
    assert track_color(0) == (255, 38, 38)  # hue 0, saturation 0.85, value 1
    assert track_color(3) == track_color(3) != track_color(4)


def test_draw_tracks_blends_the_mask_in_the_track_colour() -> None:
    frame = np.zeros((60, 80, 3), np.uint8)
    out = draw_tracks(frame, _detections(1), [0], ["thing"], alpha=0.5)
    assert out[45, 30].tolist() == [127, 19, 19]  # 0.5 * (255, 38, 38), inside the mask, off the box lines
    assert out[5, 70].tolist() == [0, 0, 0]  # outside
    assert out[30, 30].tolist() == [255, 38, 38]  # the box's top edge
    assert frame.max() == 0  # the input frame is left as it was


def test_dropped_and_faint_detections_are_not_drawn() -> None:
    frame = np.zeros((60, 80, 3), np.uint8)
    assert draw_tracks(frame, _detections(1), [-1], ["thing"]).max() == 0  # dropped by the tracker
    assert draw_tracks(frame, _detections(2), [-1, 1], ["thing"], min_score=0.3).max() == 0  # score 0.2 < 0.3


def test_overlay_writer_writes_mp4_and_gif(tmp_path: Path) -> None:
    frames = [np.full((16, 24, 3), 40 * i, np.uint8) for i in range(4)]
    with OverlayVideoWriter(tmp_path / "o.mp4", 5, tmp_path / "o.gif") as writer:
        for frame in frames:
            writer.append(frame)
    assert len(imageio.mimread(tmp_path / "o.mp4", format="FFMPEG")) == 4
    with Image.open(tmp_path / "o.gif") as gif:
        assert gif.n_frames == 4 and gif.size == (24, 16)


def test_overlay_writer_leaves_nothing_when_the_run_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), OverlayVideoWriter(tmp_path / "o.mp4", 5, tmp_path / "o.gif") as writer:
        writer.append(np.zeros((16, 24, 3), np.uint8))
        raise RuntimeError("decoder failed")
    assert list(tmp_path.iterdir()) == []
