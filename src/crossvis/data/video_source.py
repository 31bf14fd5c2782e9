"""Frames of a video file, a folder of images or a stream, decoded as they come (the demo's and benchmark's input).

Files and folders: :class:`FrameSource` (imageio's ffmpeg reader). Standard input (``-``), URLs
(rtsp, http) and capture devices: :class:`StreamSource` (PyAV), one frame at a time with its timestamp.

Frames are consumed as the decoder yields them: a container's frame count is often wrong, so it
only sizes the progress bar. If a frame cannot be decoded in the middle of the video, iteration
stops there and ``read_error`` names the frame.
"""

from __future__ import annotations

import contextlib
import math
import queue
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Callable

import av
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

    @property
    def last_timestamp(self) -> float | None:
        """Time (s) of the frame last yielded, from the frame rate (the reader gives no per-frame timestamps)."""
        return (self.frames_read - 1) / self.fps if self.frames_read else None

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


# Inputs that PyAV streams rather than imageio reading a file: standard input, URLs, capture devices.
STDIN = "-"
DEVICE_FORMATS = {"linux": "v4l2", "darwin": "avfoundation", "win32": "dshow"}
STREAM_EXPECTED = (
    "expected a video file, a webcam device (/dev/video0, or input_format=avfoundation / dshow with its name), "
    "an rtsp:// or http(s):// URL, or - for a stream on standard input"
)
_END = object()  # the realtime queue's end-of-stream marker


def is_stream(spec: str | Path) -> bool:
    """Whether ``input`` names a stream (``-``, a URL or a capture device) rather than a file or folder."""
    spec = str(spec)
    return spec == STDIN or "://" in spec or spec.startswith("/dev/video")


def open_source(
    spec: str | Path, fps: float, input_format: str | None = None, realtime: bool = False
) -> FrameSource | StreamSource:
    """:class:`StreamSource` for ``-``, URLs and devices (or when ``input_format``/``realtime`` is set), else
    :class:`FrameSource`; a file imageio's reader refuses (it goes by the suffix: e.g. MPEG-TS ``.ts``)
    is opened with PyAV, and when neither can, the error is imageio's."""
    if is_stream(spec) or input_format or realtime:
        if Path(str(spec)).is_dir():
            raise InputFormatError(f"input: {spec} is a folder; input_format= and realtime=true apply to streams")
        return StreamSource(str(spec), fps, input_format, realtime)
    try:
        return FrameSource(spec, fps)
    except InputFormatError as error:
        if Path(spec).is_dir():
            raise
        try:
            return StreamSource(str(spec), fps)
        except InputFormatError:
            raise error from None


class StreamSource:
    """Frames of a PyAV input decoded one at a time, with their timestamps: a file, a capture device, a URL or stdin.

    Opened, and its first frame decoded, on construction, so a source that cannot be opened fails
    before any work, naming it. A stream is read once. Nothing is sized from the container:
    ``estimated_frames`` is None and ``frames_read`` counts the frames handed out.
    ``last_timestamp`` is the presentation time (s) of the frame last yielded (None if the stream
    has none). ``realtime``: a reader thread decodes at the stream's pace (timestamps) and keeps
    only the newest frame, so frames are dropped (``frames_dropped``) when inference falls behind;
    memory holds at most one waiting frame either way.
    """

    def __init__(
        self,
        spec: str,
        fps: float,
        input_format: str | None = None,
        realtime: bool = False,
        timeout: float = 10.0,
    ) -> None:
        self.path, self.realtime = spec, realtime
        self.read_error: str | None = None
        self.frames_read = self.frames_dropped = 0
        self.last_timestamp: float | None = None
        self.estimated_frames = None
        self._used = False
        if not is_stream(spec) and not Path(spec).exists():
            raise InputNotFoundError(f"input: {spec} does not exist ({STREAM_EXPECTED})")
        if input_format is None and spec.startswith("/dev/video"):
            input_format = DEVICE_FORMATS.get(sys.platform)
        try:  # open and decode the first frame: a source that cannot be read fails here, not mid-run
            self._container = av.open("pipe:0" if spec == STDIN else spec, format=input_format, timeout=timeout)
            stream = self._container.streams.video[0]
            stream.thread_type = "AUTO"
            self._frames = self._container.decode(stream)
            self._first = next(self._frames)
        except (av.FFmpegError, OSError, IndexError, StopIteration, ValueError) as error:
            detail = str(error).strip() or ("no video stream" if isinstance(error, IndexError) else "no frame")
            raise InputFormatError(f"input: cannot open {spec} ({detail}); {STREAM_EXPECTED}") from error
        self.fps = float(stream.average_rate or stream.guessed_rate or fps)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._used:
            raise RuntimeError(f"input: {self.path} is a stream and is read once")
        self._used = True
        frames = self._paced() if self.realtime else self._decoded()
        try:
            for frame, timestamp in frames:
                self.frames_read += 1
                self.last_timestamp = timestamp
                yield frame
        finally:
            frames.close()  # stops the reader thread before the container goes
            self._container.close()

    def _decoded(self) -> Iterator[tuple[np.ndarray, float | None]]:
        """(RGB frame, timestamp) as decoded; a decoding error mid-stream is recorded and ends it."""
        yield self._first.to_ndarray(format="rgb24"), self._first.time
        while True:
            try:
                frame = next(self._frames)
            except StopIteration:
                return
            except (av.FFmpegError, OSError) as error:
                self.read_error = f"input: {self.path}: frame {self.frames_read} could not be decoded ({error})"
                return
            yield frame.to_ndarray(format="rgb24"), frame.time

    def _paced(self) -> Iterator[tuple[np.ndarray, float | None]]:
        """The newest decoded frame whenever the consumer asks; the frames it skipped count as dropped."""
        latest: queue.Queue = queue.Queue(maxsize=1)
        stop = threading.Event()

        def read() -> None:
            start, first_time = time.monotonic(), None
            for frame, timestamp in self._decoded():
                if stop.is_set():
                    return
                if timestamp is not None:  # a file or pipe decodes faster than its frame rate: keep its pace
                    first_time = timestamp if first_time is None else first_time
                    time.sleep(max(0.0, start + timestamp - first_time - time.monotonic()))
                self._put_newest(latest, (frame, timestamp))
            self._put_newest(latest, _END)

        reader = threading.Thread(target=read, daemon=True, name=f"decode {self.path}")
        reader.start()
        try:
            while (item := latest.get()) is not _END:
                yield item
        finally:
            stop.set()
            reader.join(timeout=5)

    def _put_newest(self, latest: queue.Queue, item: Any) -> None:
        """Replace a frame still waiting in ``latest`` by ``item`` (the replaced frame is dropped)."""
        while True:
            try:
                latest.put_nowait(item)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    latest.get_nowait()
                    self.frames_dropped += 1
