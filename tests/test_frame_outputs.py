"""Per-frame JSON lines and mask PNGs, the live display's checks, and the demo on a stdin stream with ONNX Runtime."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

import crossvis.visualize as visualize
from crossvis.errors import ConfigError, UserError
from crossvis.frame_outputs import FrameOutputs, require_new_dir
from crossvis.visualize import LiveDisplay

from helpers import run_module


def detections(frame: int) -> tuple[dict, np.ndarray]:
    """Two detections of a 20x30 frame; the tracker kept the first (track 3) and dropped the second."""
    masks = torch.zeros(2, 20, 30, dtype=torch.bool)
    masks[0, 2:8, frame : frame + 5] = True
    masks[1, 10:12, 0:4] = True
    dets = {
        "boxes": torch.tensor([[frame, 2.0, frame + 5, 8], [0, 10, 4, 12]]),
        "labels": torch.tensor([1, 0]),
        "scores": torch.tensor([0.75, 0.5]),
        "masks": masks,
    }
    return dets, np.array([3, -1])


def test_json_lines_and_pngs_hold_each_frames_tracked_instances(tmp_path):
    stamps = iter([0.0, 0.04])
    with FrameOutputs(tmp_path / "f.jsonl", tmp_path / "masks", [5, 9], ["cat", "dog"], lambda: next(stamps)) as out:
        for index in range(2):
            out(index, np.zeros((20, 30, 3), np.uint8), *detections(index))
    lines = [json.loads(line) for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert [(line["frame"], line["timestamp"], len(line["instances"])) for line in lines] == [(0, 0.0, 1), (1, 0.04, 1)]
    instance = lines[1]["instances"][0]
    assert {k: instance[k] for k in ("track_id", "category_id", "category", "score", "box")} == {
        "track_id": 3,
        "category_id": 9,
        "category": "dog",
        "score": 0.75,
        "box": [1.0, 2.0, 6.0, 8.0],
    }
    expected = detections(1)[0]["masks"][0].numpy()
    assert np.array_equal(mask_utils.decode(instance["segmentation"]).astype(bool), expected)
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == [
        "frame000000_track0003.png",
        "frame000001_track0003.png",
    ]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "masks" / "frame000001_track0003.png")) == 255, expected)


def test_a_failed_run_leaves_no_per_frame_output(tmp_path):
    with pytest.raises(RuntimeError), FrameOutputs(tmp_path / "f.jsonl", tmp_path / "masks", [5, 9], ["a", "b"]) as out:
        out(0, np.zeros((20, 30, 3), np.uint8), *detections(0))
        raise RuntimeError("decoder died")
    assert list(tmp_path.iterdir()) == []


def test_a_mask_folder_must_be_new_or_empty(tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="masks_dir: .*used is not empty"):
        require_new_dir(tmp_path / "used", "masks_dir")
    require_new_dir(tmp_path / "new", "masks_dir")


def test_display_needs_a_display_and_a_gui_opencv(monkeypatch):
    monkeypatch.setattr(visualize.sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(ConfigError, match="display=true: no display here"):
        LiveDisplay()
    monkeypatch.setenv("DISPLAY", ":0")

    def no_gui(*args):
        raise cv2.error("The function is not implemented")

    monkeypatch.setattr(visualize.cv2, "namedWindow", no_gui)
    with pytest.raises(ConfigError, match="OpenCV cannot open a window.*opencv-python-headless"):
        LiveDisplay()
    shown = []
    monkeypatch.setattr(visualize.cv2, "namedWindow", lambda *args: None)
    monkeypatch.setattr(visualize.cv2, "imshow", lambda title, image: shown.append(image[0, 0].tolist()))
    monkeypatch.setattr(visualize.cv2, "waitKey", lambda delay: -1)
    monkeypatch.setattr(visualize.cv2, "destroyWindow", lambda title: None)
    with LiveDisplay() as display:
        display.show(np.full((4, 4, 3), [255, 0, 0], np.uint8))
    assert shown == [[0, 0, 255]]  # RGB overlay, BGR window


@pytest.mark.slow
def test_demo_on_a_stdin_stream_with_onnxruntime_writes_every_output(trained_run, synthetic_root, tmp_path):
    """export → ffmpeg pipe → demo input=- runtime=onnxruntime: overlay, results, JSON lines and PNGs agree."""
    checkpoint = trained_run / "checkpoints" / "last.ckpt"
    run_module("crossvis.cli.export", f"checkpoint={checkpoint}", f"output={tmp_path / 'model.onnx'}")
    frames = sorted((synthetic_root / "valid" / "JPEGImages").iterdir())[0]
    ffmpeg = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-framerate", "5", "-pattern_type", "glob"]
    ffmpeg += ["-i", str(frames / "*.jpg"), "-c:v", "mjpeg", "-q:v", "2", "-f", "nut", "-"]
    demo = [
        sys.executable,
        "-m",
        "crossvis.cli.demo",
        "input=-",
        f"checkpoint={checkpoint}",
        f"output={tmp_path / 'o.mp4'}",
    ]
    demo += ["runtime=onnxruntime", f"model_path={tmp_path / 'model.onnx'}", f"jsonl={tmp_path / 'o.jsonl'}"]
    demo += [f"masks_dir={tmp_path / 'masks'}", "threads=1"]
    with subprocess.Popen(ffmpeg, stdout=subprocess.PIPE) as producer:
        proc = subprocess.run(demo, stdin=producer.stdout, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    count = len(list(frames.iterdir()))
    lines = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    results = json.loads((tmp_path / "o.json").read_text())
    assert [line["frame"] for line in lines] == list(range(count)) and lines[1]["timestamp"] == pytest.approx(0.2)
    instances = [(line["frame"], inst) for line in lines for inst in line["instances"]]
    assert instances, "the trained model tracks something"
    for frame, inst in instances:  # the JSON lines are the results json, frame by frame
        assert results[inst["track_id"]]["segmentations"][frame] == inst["segmentation"]
        png = np.asarray(Image.open(tmp_path / "masks" / f"frame{frame:06d}_track{inst['track_id']:04d}.png"))
        assert np.array_equal(png == 255, mask_utils.decode(inst["segmentation"]).astype(bool))
    assert len(list((tmp_path / "masks").iterdir())) == len(instances)
