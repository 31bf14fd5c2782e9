"""Exact resume: a run stopped at any step and resumed from last.ckpt ends with the weights of the
uninterrupted run (max abs difference 0 on the CPU), mid-epoch too, with and without loader workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from crossvis.checkpoint.training_state import resolve_resume
from crossvis.conf import CONF_DIR
from crossvis.engine.training import train

from helpers import KILL_AT_STEP, TINY_MODEL, run_module

# 2 videos x 4 frames at 64x96, 2 pairs a step: 4 steps an epoch, 10 steps cross two epoch ends.
STEPS = 10


def _overrides(root: Path, run_dir: Path, workers: int, *extra: str) -> list[str]:
    return [
        "data=synthetic",
        f"data.root={root}",
        f"hydra.run.dir={run_dir}",
        "logger=none",
        *TINY_MODEL,
        "data.transform.short=64",
        "data.transform.max_size=96",
        "data.batch_size=2",
        f"data.num_workers={workers}",
        "trainer.enable_progress_bar=false",
        "trainer.limit_val_batches=0",
        f"trainer.max_steps={STEPS}",
        "checkpoint.every_n_steps=1",
        "optim.warmup_iters=3",
        "threads=1",
        *extra,
    ]


class Stopped(Exception):
    """Raised by :class:`StopAt`: the run dies after optimiser step ``k``, before its checkpoint."""


class StopAt(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise Stopped


def _train_in_process(
    overrides: list[str], stop_at: int | None = None, signal_at: tuple[int, int] | None = None
) -> None:
    """``crossvis.cli.train`` in this process (no interpreter start-up), optionally dying after step
    ``stop_at`` or sent signal ``signal_at[1]`` as step ``signal_at[0]`` starts."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = cfg.hydra.run.dir
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    torch.set_num_threads(1)
    extra = [StopAt(stop_at)] if stop_at is not None else []
    extra += [SignalAt(*signal_at)] if signal_at is not None else []
    base = pl.Trainer
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pl, "Trainer", lambda *a, callbacks=(), **kw: base(*a, callbacks=[*callbacks, *extra], **kw))
        try:
            train(cfg)
        except Stopped:
            pass
        finally:
            HydraConfig.instance().cfg = None


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == STEPS
    return checkpoint["state_dict"]


def _max_abs_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(
        (x.double() - y.double()).abs().max().item() if x.numel() else 0.0 for x, y in zip(a.values(), b.values())
    )


@pytest.fixture(scope="module")
def straight(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """Final weights of the uninterrupted run, by ``num_workers`` (trained once per module)."""
    cache: dict[int, dict[str, torch.Tensor]] = {}

    def weights(workers: int) -> dict[str, torch.Tensor]:
        if workers not in cache:
            run_dir = tmp_path_factory.mktemp(f"straight{workers}")
            _train_in_process(_overrides(tiny_root, run_dir, workers))
            cache[workers] = _weights(run_dir)
        return cache[workers]

    return weights


@pytest.mark.parametrize("workers,stop_at", [(0, 3), (2, 6)])
def test_run_stopped_mid_epoch_resumes_to_the_uninterrupted_weights(tiny_root, tmp_path, straight, workers, stop_at):
    stopped, resumed = tmp_path / "stopped", tmp_path / "resumed"
    _train_in_process(_overrides(tiny_root, stopped, workers), stop_at=stop_at)
    last = stopped / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == stop_at - 1  # mid-epoch: 4 steps an epoch
    _train_in_process(_overrides(tiny_root, resumed, workers, f"resume={last}"))
    assert _max_abs_difference(_weights(resumed), straight(workers)) == 0.0


class SignalAt(pl.Callback):
    """Sends ``signum`` to this process as optimiser step ``step`` starts (the signal lands mid-step)."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_start(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum,slurm", [(signal.SIGUSR1, False), (signal.SIGTERM, True)])
def test_signal_writes_last_ckpt_after_the_step_and_resume_auto_continues_exactly(
    tiny_root, tmp_path, straight, monkeypatch, signum, slurm
):
    run_dir, requeued = tmp_path / "run", tmp_path / "requeued"
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    if slurm:  # a SLURM job: the stopped run puts itself back in the queue (scontrol is faked here)
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" > {requeued}\n')
        (bin_dir / "scontrol").chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
        monkeypatch.setenv("SLURM_JOB_ID", "4242")
    interval = "checkpoint.every_n_steps=100"  # the signal's save is the only one
    with pytest.raises(SystemExit) as exited:
        _train_in_process(_overrides(tiny_root, run_dir, 0, interval), signal_at=(5, signum))
    assert exited.value.code == 128 + signum
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    assert requeued.is_file() == slurm and (not slurm or requeued.read_text().split() == ["requeue", "4242"])
    _train_in_process(_overrides(tiny_root, run_dir, 0, interval, "resume=auto"))
    assert _max_abs_difference(_weights(run_dir), straight(0)) == 0.0


def test_resume_auto_takes_the_newest_readable_checkpoint(tmp_path) -> None:
    def save(name: str, step: int) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": {}, "hyper_parameters": {}, "global_step": step}, path)
        return path

    assert resolve_resume("auto", tmp_path) is None  # nothing yet: start afresh
    save("checkpoints/best.ckpt", 40)
    last = save("checkpoints/last.ckpt", 60)
    assert resolve_resume("auto", tmp_path) == str(last)
    hpc = save("hpc_ckpt_1.ckpt", 70)  # Lightning's SLURM checkpoint, newer
    assert resolve_resume("auto", tmp_path) == str(hpc)
    hpc.write_bytes(b"cut short by a full disk")
    assert resolve_resume("auto", tmp_path) == str(last)
    assert resolve_resume("some/path.ckpt", tmp_path) == "some/path.ckpt"


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_sigkilled_runs_resume_to_the_uninterrupted_weights(tiny_root, tmp_path, workers):
    # SIGKILL right after steps 3, 5 and 8 (last.ckpt then holds steps 2, 4 = an epoch end, and 7).
    straight = tmp_path / "straight"
    run_module("crossvis.cli.train", *_overrides(tiny_root, straight, workers))
    reference = _weights(straight)
    for kill_at in (3, 5, 8):
        killed, resumed = tmp_path / f"killed{kill_at}", tmp_path / f"resumed{kill_at}"
        proc = subprocess.run(
            [sys.executable, "-c", KILL_AT_STEP, *_overrides(tiny_root, killed, workers)],
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "KILL_AT_STEP": str(kill_at)},
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
        last = killed / "checkpoints" / "last.ckpt"
        run_module("crossvis.cli.train", *_overrides(tiny_root, resumed, workers, f"resume={last}"))
        assert _max_abs_difference(_weights(resumed), reference) == 0.0, f"killed at step {kill_at}"
