"""Frames of a video file or a folder of images, decoded as they come (the demo's and benchmark's input).

Frames are consumed as the decoder yields them: a container's frame count is often wrong, so it
only sizes the progress bar. If a frame cannot be decoded in the middle of the video, iteration
stops there and ``read_error`` names the frame.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Callable

import imageio.v2 as imageio
import numpy as np

from crossvis.data.transforms import load_frame_rgb
from crossvis.errors import InputFormatError, InputNotFoundError

FRAME_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


class FrameSource:
    """Frames of a video (anything ffmpeg reads) or of a folder of images, decoded as they come.

    ``estimated_frames`` is the container's duration × fps (None when unknown): a guess for the
    progress bar, never trusted. After iterating, ``frames_read`` is the number of frames decoded
    and ``read_error`` names the frame that could not be decoded when the video stopped early
    (None when it ended normally).
    """

    def __init__(self, path: str | Path, folder_fps: float) -> None:
        self.path = Path(path)
        self.read_error: str | None = None
        self.frames_read = 0
        if not self.path.exists():
            raise InputNotFoundError(f"input: {self.path} does not exist (expected a video file or a folder of frames)")
        if self.path.is_dir():
            self.frame_paths = sorted(p for p in self.path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
            if not self.frame_paths:
                raise InputFormatError(
                    f"input: folder {self.path} holds no frames ({', '.join(sorted(FRAME_SUFFIXES))})"
                )
            self.estimated_frames, self.fps = len(self.frame_paths), folder_fps
            load_frame_rgb(self.frame_paths[0])  # readable before any work starts
            return
        self.frame_paths = None
        try:  # open and decode the first frame: a file ffmpeg cannot decode fails here, not mid-run
            with imageio.get_reader(self.path, format="FFMPEG") as reader:
                meta = reader.get_meta_data()
                reader.get_data(0)
        except Exception as error:  # imageio/ffmpeg raise several types (OSError, RuntimeError, IndexError, ...)
            detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise InputFormatError(
                f"input: cannot decode {self.path} as a video (expected a video file ffmpeg reads, "
                f"e.g. mp4/avi, with at least one frame): {detail}"
            ) from error
        self.fps = float(meta.get("fps") or folder_fps)
        estimate = float(meta.get("duration") or 0) * self.fps
        self.estimated_frames = round(estimate) if math.isfinite(estimate) and estimate > 0 else None

    def __iter__(self) -> Iterator[np.ndarray]:
        self.read_error, self.frames_read = None, 0
        if self.frame_paths is not None:
            frames = (load_frame_rgb(p) for p in self.frame_paths)
            yield from self._until_error(frames, lambda i: f"frame {i} ({self.frame_paths[i]})")
            return
        with imageio.get_reader(self.path, format="FFMPEG") as reader:
            frames = (np.ascontiguousarray(frame[..., :3]) for frame in reader)
            yield from self._until_error(frames, lambda i: f"frame {i}")

    def _until_error(self, frames: Iterable[np.ndarray], name: Callable[[int], str]) -> Iterator[np.ndarray]:
        """Yield decoded frames; on a decoding error record it (naming the frame) and stop."""
        iterator = iter(frames)
        while True:
            try:
                frame = next(iterator)
            except StopIteration:
                return
            except Exception as error:  # any decoder error: keep the frames before it
                self.read_error = f"input: {self.path}: {name(self.frames_read)} could not be decoded ({error})"
                return
            self.frames_read += 1
            yield frame
