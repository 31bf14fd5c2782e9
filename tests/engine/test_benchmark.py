"""`python -m crossvis.cli.benchmark`: its printed Table-5 layout and JSON contract, on a tiny model and input."""

from __future__ import annotations

from pathlib import Path

import cv2
import imageio.v2 as imageio
import numpy as np
import pytest

from helpers import TINY_MODEL, last_json_line, run_module

TINY_BENCH = [
    *TINY_MODEL,
    "input.short=48",
    "input.max_size=80",
    "warmup=1",
    "threads=1",
]
STAGES = {"decode", "preprocess", "backbone+fpn", "heads", "mask paste", "tracker", "rle", "other"}


def bench(*overrides: str, check: bool = True):
    return run_module("crossvis.cli.benchmark", *TINY_BENCH, *overrides, check=check)


def test_json_contract_and_table5_layout_on_generated_frames():
    proc = bench("input.size=[60,100]", "input.frames=3", "compare=[condinst]")
    report = last_json_line(proc.stdout)
    assert report["device"] == "cpu" and report["dtype"] == "float32" and report["precision"] == "32"
    assert report["frames"] == 3 and report["rounds"] == 1 and report["threads"] == 1
    assert report["input"] == {"kind": "generated", "size": [60, 100], "resized": [48, 80]}
    assert report["detections_per_frame"] == 100.0  # score_threshold 0 forces max_detections
    assert report["model_only_fps"] > 0 and report["end_to_end_fps"] > 0
    assert report["model_only_fps"] == pytest.approx(1000 / report["model_only_ms"])
    assert report["end_to_end_over_model_only"] == pytest.approx(report["end_to_end_ms"] / report["model_only_ms"])
    stages = report["stages_ms"]
    assert set(stages) == STAGES and all(stages[name] > 0 for name in STAGES - {"other"})
    assert sum(stages.values()) == pytest.approx(report["end_to_end_ms"])  # exclusive stages cover the loop
    assert report["memory"] == "peak_rss" and report["peak_memory_mb"] > 0
    assert set(report["compare"]) == {"condinst"} and report["compare"]["condinst"] > 0
    table = proc.stdout
    for row, paper in [
        ("Mask R-CNN resnet50-FPN", "41.6"),
        ("CondInst regnetx_002", "42.8"),
        ("MaskTrack R-CNN resnet50", "32.8"),
        ("CrossVIS regnetx_002", "39.8"),
    ]:
        line = next(line for line in table.splitlines() if line.startswith(row))
        assert paper in line.split()
    assert "—" in next(line for line in table.splitlines() if line.startswith("Mask R-CNN"))  # not measured


def test_precision_and_layout_options_reach_the_benchmark():
    report = last_json_line(
        bench(
            "input.size=[48,80]",
            "input.frames=2",
            "inference.precision=bf16",
            "inference.channels_last=true",
        ).stdout
    )
    assert report["dtype"] == "bfloat16" and report["precision"] == "bf16" and report["channels_last"] is True
    assert report["end_to_end_fps"] > 0


def test_frame_folder_and_video_inputs(tmp_path: Path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (40, 64, 3), dtype=np.uint8) for _ in range(3)]
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:05d}.png"), frame[..., ::-1])
    report = last_json_line(bench(f"input.path={folder}", "input.frames=null").stdout)
    assert report["input"]["kind"] == "folder" and report["input"]["size"] == [40, 64] and report["frames"] == 3

    video = tmp_path / "clip.mp4"
    imageio.mimwrite(video, frames * 2, fps=5, macro_block_size=8)
    report = last_json_line(bench(f"input.path={video}", "input.frames=4").stdout)
    assert report["input"]["kind"] == "video" and report["input"]["size"] == [40, 64] and report["frames"] == 4


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["input.path=/nonexistent/clip.mp4"], "input: /nonexistent/clip.mp4 does not exist"),
        (["input.frames=null"], "input.frames: a number is needed"),
        (["compare=[masktrack]"], "compare: unknown rows ['masktrack']"),
        (["runtimes=[tensorrt]"], "runtimes: unknown ['tensorrt']"),
        (["runtime=onnxruntime"], "model_path: runtime=onnxruntime needs the ONNX file"),
    ],
)
def test_bad_settings_fail_clearly(overrides, message):
    proc = bench(*overrides, check=False)
    # the user-error contract: exit code 1 and one line naming the setting, no traceback
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith(f"error: {message}")
    assert "Traceback" not in proc.stderr


def test_runtime_rows_measure_onnxruntime_beside_eager_with_equal_outputs():
    proc = bench("input.size=[48,80]", "input.frames=2", "runtimes=[onnxruntime]")
    rows = last_json_line(proc.stdout)["runtimes"]
    assert list(rows) == ["eager", "onnxruntime"] and rows["eager"]["over_eager"] == 1.0
    assert rows["onnxruntime"]["fps"] > 0 and rows["onnxruntime"]["over_eager"] == pytest.approx(
        rows["onnxruntime"]["fps"] / rows["eager"]["fps"]
    )
    # 100 forced detections per frame, the same on both runtimes
    assert rows["onnxruntime"]["max_score_diff"] <= 1e-4 and rows["onnxruntime"]["max_box_diff"] <= 0.5
    assert rows["onnxruntime"]["min_mask_iou"] >= 0.99
    assert next(line for line in proc.stdout.splitlines() if line.startswith("onnxruntime"))


@pytest.mark.slow
def test_maskrcnn_row_and_ratios():
    report = last_json_line(bench("input.size=[48,80]", "input.frames=1", "warmup=0", "compare=[maskrcnn]").stdout)
    assert report["compare"]["maskrcnn"] > 0
    assert report["ratio_to_maskrcnn"]["maskrcnn"] == 1.0
    assert report["ratio_to_maskrcnn"]["crossvis"] == pytest.approx(
        report["model_only_fps"] / report["compare"]["maskrcnn"]
    )


@pytest.mark.slow
def test_peak_memory_stays_flat_over_a_long_video():
    """Masks are RLE-encoded as frames arrive: 10× more frames must not grow the peak RSS by more than 10%."""
    peaks = [
        last_json_line(
            bench("input.size=[32,48]", "input.short=32", "input.max_size=48", f"input.frames={n}", "warmup=0").stdout
        )["peak_memory_mb"]
        for n in (30, 300)
    ]
    assert peaks[1] <= 1.1 * peaks[0]


def test_the_end_to_end_figure_runs_the_online_runner_with_the_model_only_call_set_apart(monkeypatch):
    """The benchmark measures the runner evaluate, demo and the peer use: one run_frames per round over
    every frame; the model-only calls beside the frames are counted apart from the end-to-end stages."""
    from hydra import compose, initialize_config_dir

    from crossvis.conf import CONF_DIR
    from crossvis.engine.benchmark import Benchmark
    from crossvis.engine.inference import VideoInference

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("benchmark", overrides=[*TINY_BENCH, "input.size=[60,100]", "input.frames=4"])
    bench = Benchmark(cfg)
    runs, calls = [], []
    run_frames = VideoInference.run_frames
    monkeypatch.setattr(VideoInference, "run_frames", lambda self, *args: runs.append(1) or run_frames(self, *args))
    forward = bench.forward
    bench.forward = lambda image, size: calls.append(1) or forward(image, size)
    report = bench.run(rounds=2, warmup=1)
    assert len(runs) == 1 + 2  # the warm-up, then one per round
    assert len(calls) == 1 + 2 * 2 * 4  # per frame of a round: the online step and the model-only call
    assert 0 < report["model_only_ms"] < report["end_to_end_ms"]
    assert sum(report["stages_ms"].values()) == pytest.approx(report["end_to_end_ms"], rel=0.05)
