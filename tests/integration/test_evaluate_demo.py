"""`crossvis.cli.evaluate` and `crossvis.cli.demo` on a briefly trained checkpoint."""

from __future__ import annotations

import json
import zipfile

import imageio.v2 as imageio
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from crossvis.checkpoint.loading import load_checked_module
from crossvis.data.ytvis import load_vis
from crossvis.evaluation.coco_eval import STATS
from crossvis.evaluation.metric import METRIC_KEYS

from helpers import last_json_line, run_module


@pytest.mark.parametrize("per_frame", [False, True])
def test_evaluate_writes_results_and_prints_metrics(trained_run, synthetic_root, tmp_path, per_frame):
    analyze = per_frame  # one run with both options
    proc = run_module(
        "crossvis.cli.evaluate",
        f"checkpoint={trained_run / 'checkpoints' / 'last.ckpt'}",
        "data=synthetic",
        f"data.root={synthetic_root}",
        f"data.train.json={tmp_path / 'absent' / 'train.json'}",  # only the evaluated split is read
        f"hydra.run.dir={tmp_path}",
        f"per_frame={per_frame}",
        f"analyze={analyze}",
    )
    metrics = last_json_line(proc.stdout)
    assert (tmp_path / "analysis" / "analysis.json").exists() == analyze
    if analyze:
        analysis = json.loads((tmp_path / "analysis" / "analysis.json").read_text())
        assert analysis["metrics"] == pytest.approx({key: metrics[key] for key in METRIC_KEYS})
        assert "Errors (TIVE definitions)" in proc.stdout and (tmp_path / "analysis" / "errors.png").exists()
        assert (trained_run / "analysis" / "analysis.json").exists()  # the fixture trains with analyze=true
    frame_keys = {f"frame_{name}_{kind}" for name in STATS for kind in ("mask", "box")}
    assert set(metrics) == set(METRIC_KEYS) | (frame_keys if per_frame else set())
    assert ("Per-frame mask AP" in proc.stdout) == per_frame
    if per_frame:
        assert 0.0 < metrics["frame_AP_mask"] <= 1.0  # the trained model detects something
        metrics = {key: metrics[key] for key in METRIC_KEYS}
    results = json.loads((tmp_path / "results.json").read_text())
    valid = load_vis(synthetic_root / "valid_gt.json", synthetic_root / "valid" / "JPEGImages")
    lengths = {v.id: v.length for v in valid.videos}
    assert results, "a trained model should track something"
    for entry in results:
        assert len(entry["segmentations"]) == lengths[entry["video_id"]]
    with zipfile.ZipFile(tmp_path / "submission.zip") as archive:
        assert json.loads(archive.read("results.json")) == results
    # The metric of the run equals the standalone metric on the written files.
    standalone = run_module(
        "crossvis.evaluation.metric", str(synthetic_root / "valid_gt.json"), str(tmp_path / "results.json")
    )
    assert last_json_line(standalone.stdout) == metrics


def _write_mp4(path, frames, fps=5):
    with imageio.get_writer(path, format="FFMPEG", fps=fps, macro_block_size=1) as writer:
        for frame in frames:
            writer.append_data(frame)


def test_demo_turns_an_mp4_into_an_overlay_video(trained_run, synthetic_root, tmp_path):
    valid = load_vis(synthetic_root / "valid.json", synthetic_root / "valid" / "JPEGImages")
    video = valid.videos[0]
    frames = [imageio.imread(video.frame_path(i)) for i in range(video.length)]
    _write_mp4(tmp_path / "input.mp4", frames)
    output = tmp_path / "out" / "overlay.mp4"
    run_module(
        "crossvis.cli.demo",
        f"input={tmp_path / 'input.mp4'}",
        f"checkpoint={trained_run / 'checkpoints' / 'last.ckpt'}",
        f"output={output}",
        f"gif={tmp_path / 'out' / 'overlay.gif'}",
    )
    overlay = imageio.mimread(output, format="FFMPEG")
    assert len(overlay) == video.length and overlay[0].shape == frames[0].shape
    assert (tmp_path / "out" / "overlay.gif").is_file()
    results = json.loads(output.with_suffix(".json").read_text())
    for entry in results:
        assert len(entry["segmentations"]) == video.length
        for rle in filter(None, entry["segmentations"]):
            assert (
                mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).shape == frames[0].shape[:2]
            )


def test_demo_reads_a_folder_of_frames(trained_run, synthetic_root, tmp_path):
    frames_dir = synthetic_root / "valid" / "JPEGImages"
    first_video = sorted(p for p in frames_dir.iterdir())[0]
    output = tmp_path / "overlay.mp4"
    run_module(
        "crossvis.cli.demo",
        f"input={first_video}",
        f"checkpoint={trained_run / 'checkpoints' / 'last.ckpt'}",
        f"output={output}",
    )
    assert len(imageio.mimread(output, format="FFMPEG")) == len(list(first_video.iterdir()))


def test_demo_with_missing_or_unreadable_input_fails_and_writes_nothing(trained_run, tmp_path):
    checkpoint = trained_run / "checkpoints" / "last.ckpt"
    (tmp_path / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(2048))
    for name, expected in (("missing.mp4", "does not exist"), ("broken.mp4", "cannot decode")):
        output = tmp_path / f"{name}.overlay.mp4"
        proc = run_module(
            "crossvis.cli.demo", f"input={tmp_path / name}", f"checkpoint={checkpoint}", f"output={output}", check=False
        )
        assert proc.returncode != 0
        assert expected in proc.stderr and name in proc.stderr
        assert not output.exists() and not output.with_suffix(".json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.mp4"]


def _user_error(proc) -> str:
    """The single message of a failed entry point (exit 1, no traceback)."""
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


def test_evaluate_with_a_checkpoint_of_other_categories_fails_before_inference(trained_run, synthetic_root, tmp_path):
    raw = json.loads((synthetic_root / "valid.json").read_text())  # no ground truth: a submission split
    trained = [(c["id"], c["name"]) for c in sorted(raw["categories"], key=lambda c: c["id"])]
    for category, new_id in zip(sorted(raw["categories"], key=lambda c: c["id"]), (1, 2, 3, 4)):
        category["id"] = new_id
    other = tmp_path / "other.json"
    other.write_text(json.dumps(raw))
    run_dir = tmp_path / "run"
    proc = run_module(
        "crossvis.cli.evaluate",
        f"checkpoint={trained_run / 'checkpoints' / 'last.ckpt'}",
        "data=synthetic",
        f"data.root={synthetic_root}",
        f"data.val.json={other}",
        f"hydra.run.dir={run_dir}",
        check=False,
    )
    message = _user_error(proc)
    assert str(other) in message and f"checkpoint (id, name) {trained}" in message
    assert f"data {[(i, name) for i, (_, name) in zip((1, 2, 3, 4), trained)]}" in message
    assert not (run_dir / "results.json").exists() and not (run_dir / "submission.zip").exists()
    assert "videos:" not in proc.stderr  # failed before the inference loop started


@pytest.mark.parametrize("content", [b"", b"hello\n", bytes(range(256)) * 40])
def test_a_file_that_is_not_a_checkpoint_gives_one_clear_error(tmp_path, content):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(content)
    with pytest.raises(ValueError, match=f"{bad}: cannot read as a checkpoint") as caught:
        load_checked_module(bad)
    assert "weights_only" not in str(caught.value)


def test_entry_points_report_user_errors_in_one_line(trained_run, synthetic_root, tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    message = _user_error(
        run_module(
            "crossvis.cli.evaluate",
            f"checkpoint={bad}",
            f"data.root={synthetic_root}",
            f"hydra.run.dir={tmp_path / 'eval'}",
            check=False,
        )
    )
    assert message.startswith(f"error: {bad}: cannot read as a checkpoint") and "weights_only" not in message
    message = _user_error(
        run_module(
            "crossvis.cli.evaluate",
            f"checkpoint={trained_run / 'checkpoints' / 'last.ckpt'}",
            f"data.root={synthetic_root}",
            f"data.val.json={synthetic_root}",
            f"hydra.run.dir={tmp_path / 'eval'}",
            check=False,
        )
    )
    assert message == f"error: {synthetic_root}: is a directory (expected a YouTube-VIS/OVIS annotation json file)"
    (tmp_path / "a_file").write_text("")
    frames = synthetic_root / "valid" / "JPEGImages"
    first_video = sorted(frames.iterdir())[0]
    output = tmp_path / "a_file" / "out.mp4"
    message = _user_error(
        run_module(
            "crossvis.cli.demo",
            f"input={first_video}",
            f"checkpoint={trained_run / 'checkpoints' / 'last.ckpt'}",
            f"output={output}",
            check=False,
        )
    )
    assert message == f"error: output: cannot create the output folder {output.parent}: {tmp_path / 'a_file'} is a file"
    assert not list((tmp_path / "eval").glob("*.json")) and not (tmp_path / "eval" / "submission.zip").exists()
