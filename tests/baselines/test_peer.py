"""The peer yardstick (src/crossvis/baselines/peer.py): an end-to-end smoke run and its budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from crossvis.conf import CONF_DIR
from crossvis.evaluation.metric import evaluate

from helpers import last_json_line


def _run_peer(synthetic_root: Path, run_dir: Path, *overrides: str) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "crossvis.baselines.peer",
            f"data.root={synthetic_root}",
            "threads=1",
            "data.num_workers=0",
            "data.transform.short=128",
            "data.transform.max_size=224",
            f"hydra.run.dir={run_dir}",
            *overrides,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Per-frame mask AP" in proc.stdout
    return last_json_line(proc.stdout)


@pytest.mark.slow
def test_peer_runs_end_to_end_and_evaluates_its_saved_model(synthetic_root: Path, tmp_path: Path) -> None:
    metrics = _run_peer(synthetic_root, tmp_path / "train", "steps=2", "frames_per_step=4")
    assert metrics["steps"] == 2 and metrics["frames_per_step"] == 4
    results = json.loads((tmp_path / "train" / "results.json").read_text())
    ground_truth = json.loads((synthetic_root / "valid_gt.json").read_text())
    assert evaluate(ground_truth, results)["AP"] == pytest.approx(metrics["AP"])
    assert 0.0 <= metrics["frame_AP_mask"] <= 1.0
    # checkpoint=: no training, the same inference on the saved weights
    again = _run_peer(synthetic_root, tmp_path / "eval", f"checkpoint={tmp_path / 'train' / 'model.pt'}")
    assert "steps" not in again and again["checkpoint"] == str(tmp_path / "train" / "model.pt")
    assert {k: v for k, v in again.items() if k != "checkpoint"} == pytest.approx(
        {k: v for k, v in metrics.items() if k not in ("steps", "frames_per_step")}
    )
    assert not (tmp_path / "eval" / "model.pt").exists()
    assert results and json.loads((tmp_path / "eval" / "results.json").read_text()) == results  # same tracks and scores


def test_peer_defaults_match_the_cpu_recipe_budget() -> None:
    """Equal budget: the peer's steps, frames per step and frame size are those of conf/quickstart.yaml."""
    from hydra import compose, initialize_config_dir

    conf = str(CONF_DIR)
    with initialize_config_dir(conf, version_base="1.3"):
        recipe = compose("quickstart")
        peer = compose("peer")
    pairs_per_step = recipe.data.batch_size * recipe.trainer.devices  # pairs per process x processes
    assert recipe.optim.base_batch_size == pairs_per_step  # so the recipe's optim.length is its own step count
    assert peer.steps == recipe.optim.length
    assert peer.frames_per_step == 2 * pairs_per_step
    assert (peer.data.transform.short, peer.data.transform.max_size) == (
        recipe.data.transform.short,
        recipe.data.transform.max_size,
    )
