"""Streaming inputs through PyAV: a file, an HTTP URL, standard input, a capture device; realtime dropping."""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import threading
import time
from pathlib import Path

import av
import imageio.v2 as imageio
import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

import crossvis.data.video_source as video_io
from crossvis.data.video_source import FrameSource, StreamSource, open_source
from crossvis.errors import InputFormatError, InputNotFoundError

H, W, FRAMES, FPS = 48, 64, 12, 10


def write_stream_file(path: Path, frames: int = FRAMES, fps: int = FPS) -> Path:
    """An MPEG-TS file (a streaming container: no index at the end, readable from a pipe or over HTTP)."""
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 255, (frames, H, W, 3), dtype=np.uint8)
    raw[:, :, :8] = np.arange(frames, dtype=np.uint8)[:, None, None, None] * 20  # frames differ visibly
    options = f"-loglevel error -y -f rawvideo -pix_fmt rgb24 -s {W}x{H} -r {fps} -i - -c:v mpeg2video -q:v 2 -f mpegts"
    command = [imageio_ffmpeg.get_ffmpeg_exe(), *options.split(), str(path)]
    subprocess.run(command, input=raw.tobytes(), check=True)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_stream_file(tmp_path_factory.mktemp("stream") / "clip.ts")


def read_all(source) -> tuple[list[np.ndarray], list]:
    frames, stamps = [], []
    for frame in source:
        frames.append(frame)
        stamps.append(source.last_timestamp)
    return frames, stamps


def test_a_file_is_decoded_frame_by_frame_with_timestamps(clip):
    source = StreamSource(str(clip), 25.0)
    assert source.estimated_frames is None and source.fps == FPS
    frames, stamps = read_all(source)
    assert len(frames) == source.frames_read == FRAMES and frames[0].shape == (H, W, 3)
    assert np.allclose(np.diff(stamps), 1 / FPS)
    assert [int(f[:, :8].mean() / 20 + 0.5) for f in frames] == list(range(FRAMES))  # in order, none missing
    with pytest.raises(RuntimeError, match="read once"):
        next(iter(source))


def test_an_http_url_gives_the_frames_of_the_file(clip):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(clip.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        source = open_source(f"http://127.0.0.1:{server.server_address[1]}/{clip.name}", 10.0)
        assert isinstance(source, StreamSource)
        frames, _ = read_all(source)
    finally:
        server.shutdown()
        server.server_close()
    local, _ = read_all(StreamSource(str(clip), 10.0))
    assert len(frames) == FRAMES and all(np.array_equal(a, b) for a, b in zip(frames, local))


def test_standard_input_from_an_ffmpeg_pipe(clip):
    """``-`` reads file descriptor 0: here the read end of a pipe an ffmpeg process writes the stream into."""
    ffmpeg = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i", str(clip), "-c", "copy", "-f", "mpegts", "-"]
    saved_stdin = os.dup(0)
    with subprocess.Popen(ffmpeg, stdout=subprocess.PIPE) as producer:
        os.dup2(producer.stdout.fileno(), 0)
        try:
            source = open_source("-", 10.0)
            frames, stamps = read_all(source)
        finally:
            os.dup2(saved_stdin, 0)
            os.close(saved_stdin)
    local, _ = read_all(StreamSource(str(clip), 10.0))
    assert len(frames) == FRAMES and all(np.array_equal(a, b) for a, b in zip(frames, local))
    assert np.allclose(np.diff(stamps), 1 / FPS)


def test_a_capture_device_opens_with_the_platform_format(clip, monkeypatch):
    """No webcam here (no /dev/video*): the device path is exercised through a substituted opener."""
    calls, real_open = [], av.open

    def fake_device(path, format=None, timeout=None):
        calls.append((path, format))
        return real_open(str(clip))  # the "camera" delivers the clip's frames

    monkeypatch.setattr(video_io.sys, "platform", "linux")
    monkeypatch.setattr(video_io.av, "open", fake_device)
    frames, _ = read_all(open_source("/dev/video0", 30.0))
    assert calls == [("/dev/video0", "v4l2")] and len(frames) == FRAMES


def test_sources_that_cannot_be_opened_fail_clearly(tmp_path):
    with pytest.raises(InputFormatError, match=r"input: cannot open http://127.0.0.1:9/absent.ts \(.*\); expected"):
        StreamSource("http://127.0.0.1:9/absent.ts", 10.0, timeout=2.0)
    with pytest.raises(InputNotFoundError, match="input: .*missing.ts does not exist"):
        StreamSource(str(tmp_path / "missing.ts"), 10.0)
    (tmp_path / "noise.ts").write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(InputFormatError, match="input: cannot open .*noise.ts"):
        StreamSource(str(tmp_path / "noise.ts"), 10.0)


def test_files_and_folders_keep_the_frame_source_unless_realtime(clip, tmp_path):
    mp4 = tmp_path / "clip.mp4"
    imageio.mimwrite(mp4, [np.zeros((H, W, 3), np.uint8)] * 3, fps=5, macro_block_size=8)
    (tmp_path / "frames").mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "frames" / "00000.png")
    assert isinstance(open_source(mp4, 10.0), FrameSource)
    assert isinstance(open_source(tmp_path / "frames", 10.0), FrameSource)
    assert isinstance(open_source(mp4, 10.0, realtime=True), StreamSource)
    assert isinstance(open_source(clip, 10.0), StreamSource)  # imageio refuses the .ts suffix: PyAV reads it
    (tmp_path / "noise.mp4").write_bytes(b"not a video")
    with pytest.raises(InputFormatError, match="cannot decode .*noise.mp4 as a video"):  # neither can: imageio's error
        open_source(tmp_path / "noise.mp4", 10.0)
    with pytest.raises(InputFormatError, match="is a folder; input_format= and realtime=true apply to streams"):
        open_source(tmp_path, 10.0, realtime=True)


def test_realtime_drops_frames_when_inference_falls_behind(tmp_path):
    clip = write_stream_file(tmp_path / "fast.ts", frames=20, fps=50)  # 0.4 s of video
    source = open_source(clip, 10.0, realtime=True)
    processed = 0
    for _ in source:
        time.sleep(0.1)  # inference at 10 frames/s, the stream at 50
        processed += 1
    assert processed == source.frames_read and source.frames_dropped > 0
    assert source.frames_read + source.frames_dropped == 20
