"""Overlay tracked instances on frames and write them as an mp4 (and optionally a GIF)."""

from __future__ import annotations

import colorsys
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import imageio.v2 as imageio
import numpy as np
from PIL import Image

from crossvis.errors import ConfigError
from crossvis.files import atomic_path


def track_color(track_id: int) -> tuple[int, int, int]:
    """A stable, well-separated RGB colour per track id (golden-ratio hue steps)."""
    hue = (track_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_tracks(
    frame: np.ndarray,
    detections: dict,
    track_ids: Sequence[int],
    class_names: Sequence[str],
    min_score: float = 0.0,
    alpha: float = 0.5,
) -> np.ndarray:
    """Return ``frame`` (RGB uint8) with each tracked detection's mask, box, track id, class and score.

    Detections scoring below ``min_score`` stay in the results but are not drawn, to keep the
    picture readable.
    """
    canvas = frame.astype(np.float32)
    labels = []
    for index, track_id in enumerate(track_ids):
        if track_id < 0 or float(detections["scores"][index]) < min_score:  # dropped by the tracker / faint
            continue
        color = np.array(track_color(track_id), dtype=np.float32)
        mask = np.asarray(detections["masks"][index], dtype=bool)
        canvas[mask] = canvas[mask] * (1 - alpha) + color * alpha
        x0, y0, x1, y1 = (int(round(float(v))) for v in detections["boxes"][index])
        name = class_names[int(detections["labels"][index])]
        labels.append(
            (
                (x0, y0, x1, y1),
                tuple(int(c) for c in color),
                f"#{track_id} {name} {float(detections['scores'][index]):.2f}",
            )
        )
    out = canvas.clip(0, 255).astype(np.uint8)
    for (x0, y0, x1, y1), color, text in labels:
        cv2.rectangle(out, (x0, y0), (x1, y1), color, 1)
        cv2.putText(out, text, (x0, max(y0 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, color, 1, cv2.LINE_AA)
    return out


class OverlayVideoWriter:
    """Streams frames into an mp4; also writes a GIF (for READMEs) when ``gif_path`` is given.

    Both files appear only when the block succeeds. The GIF keeps its frames in memory until the
    end, so it is meant for short clips.
    """

    def __init__(self, mp4_path: str | Path, fps: float, gif_path: str | Path | None = None) -> None:
        self._fps = fps
        self._gif_path = gif_path
        self._gif_frames: list[Image.Image] = []
        self._mp4 = atomic_path(mp4_path)
        self._writer = imageio.get_writer(
            self._mp4.__enter__(), format="FFMPEG", mode="I", fps=fps, macro_block_size=1, quality=7
        )

    def append(self, frame: np.ndarray) -> None:
        self._writer.append_data(frame)
        if self._gif_path is not None:
            self._gif_frames.append(Image.fromarray(frame))

    def __enter__(self) -> OverlayVideoWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self._writer.close()
        if exc_info[0] is None and self._gif_frames:
            with atomic_path(self._gif_path) as tmp:
                first, *rest = self._gif_frames
                first.save(tmp, save_all=True, append_images=rest, duration=int(1000 / self._fps), loop=0)
        self._mp4.__exit__(*exc_info)


class LiveDisplay:
    """``display=true``: the overlay in a window as the frames are processed (OpenCV HighGUI).

    Checked on construction, before any work: no display (Linux without ``DISPLAY`` /
    ``WAYLAND_DISPLAY``) or an OpenCV without GUI support (``opencv-python-headless``) is a config error.
    """

    def __init__(self, title: str = "crossvis") -> None:
        self.title = title
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise ConfigError(
                "display=true: no display here (DISPLAY and WAYLAND_DISPLAY are unset); drop display=true"
            )
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as error:
            raise ConfigError(
                f"display=true: OpenCV cannot open a window ({str(error).strip().splitlines()[-1]}); "
                "install opencv-python instead of opencv-python-headless, or drop display=true"
            ) from error

    def show(self, overlay: np.ndarray) -> None:
        cv2.imshow(self.title, cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
        cv2.waitKey(1)

    def __enter__(self) -> LiveDisplay:
        return self

    def __exit__(self, *exc_info) -> None:
        cv2.destroyWindow(self.title)
