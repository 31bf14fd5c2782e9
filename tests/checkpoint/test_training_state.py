"""Checkpoints: last.ckpt on a step interval and at the end, atomic writes, kill-and-resume."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning_fabric.plugins.io import torch_io

from crossvis.checkpoint.training_state import AtomicCheckpointIO

from helpers import KILL_AT_STEP, run_module, train_args


def _checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _logged(run_dir: Path) -> list[tuple[int, int, float, float]]:
    """(epoch, step, lr, loss) of every training row of the CSV log."""
    with open(run_dir / "csv" / "metrics.csv") as f:
        return [
            (int(r["epoch"]), int(r["step"]), float(r["train/lr"]), float(r["train/loss"]))
            for r in csv.DictReader(f)
            if r.get("train/loss")
        ]


def test_finished_run_with_validation_keeps_its_final_step_in_last_ckpt(trained_run):
    # 80 steps with validation at every epoch end (24 steps): best.ckpt follows val/AP, last.ckpt the end.
    assert _checkpoint(trained_run / "checkpoints" / "last.ckpt")["global_step"] == 80
    assert (trained_run / "checkpoints" / "best.ckpt").is_file()


def test_checkpoint_written_through_a_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 4}, path)

    def killed_mid_write(checkpoint, filepath):
        Path(filepath).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch_io, "_atomic_save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 8}, path)
    assert _checkpoint(path) == {"global_step": 4}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


@pytest.mark.slow
def test_killed_run_resumes_within_one_interval_and_ends_like_an_uninterrupted_run(synthetic_root, tmp_path):
    # The synthetic set has 48 annotated frames: 24 steps per epoch at 2 pairs per step.
    # threads=1: the same summation order in every run, so the three runs can be compared exactly.
    common = [
        "trainer.max_steps=30",
        "checkpoint.every_n_steps=8",
        "trainer.limit_val_batches=0",
        "optim.warmup_iters=40",
        "threads=1",
    ]
    straight, killed, resumed = tmp_path / "straight", tmp_path / "killed", tmp_path / "resumed"
    run_module("crossvis.cli.train", *train_args(synthetic_root, straight, *common))
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AT_STEP, *train_args(synthetic_root, killed, *common)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "KILL_AT_STEP": "27"},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    last = killed / "checkpoints" / "last.ckpt"
    assert _checkpoint(last)["global_step"] == 24  # killed at 27: at most one interval (8) lost
    run_module("crossvis.cli.train", *train_args(synthetic_root, resumed, *common, f"resume={last}"))

    final, reference = (
        _checkpoint(resumed / "checkpoints" / "last.ckpt"),
        _checkpoint(straight / "checkpoints" / "last.ckpt"),
    )
    assert final["global_step"] == reference["global_step"] == 30
    assert final["epoch"] == reference["epoch"]
    assert final["lr_schedulers"][0]["last_epoch"] == reference["lr_schedulers"][0]["last_epoch"] == 30
    assert final["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(
        reference["optimizer_states"][0]["param_groups"][0]["lr"], rel=1e-9
    )
    # Steps 24-29: same logged epoch (the sampler's), step and LR as the uninterrupted run, and the
    # same pairs and random draws (torch's RNG state is in the checkpoint), hence the same losses.
    after = _logged(resumed)
    before = [row for row in _logged(straight) if row[1] >= 24]
    assert [row[:2] for row in after] == [row[:2] for row in before] == [(1, s) for s in range(24, 30)]
    assert [row[2] for row in after] == pytest.approx([row[2] for row in before], rel=1e-6)
    assert [row[3] for row in after] == pytest.approx([row[3] for row in before], rel=1e-5)


@pytest.mark.slow
def test_resumed_run_continues_the_same_wandb_run(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    first, second = tmp_path / "first", tmp_path / "second"
    args = ["trainer.limit_val_batches=0", "checkpoint.every_n_steps=1"]
    wandb = [a for a in train_args(synthetic_root, first, "trainer.max_steps=2", *args) if a != "logger=csv"]
    run_module("crossvis.cli.train", *wandb)
    last = first / "checkpoints" / "last.ckpt"
    run_id = _checkpoint(last)["wandb_run_id"]
    run_module(
        "crossvis.cli.train",
        *[
            a
            for a in train_args(synthetic_root, second, "trainer.max_steps=3", *args, f"resume={last}")
            if a != "logger=csv"
        ],
    )
    [run_dir] = (second / "wandb").glob("offline-run-*")
    assert run_dir.name.endswith(f"-{run_id}")
    assert _checkpoint(second / "checkpoints" / "last.ckpt")["wandb_run_id"] == run_id
