"""Sweeps that survive: a failing member leaves the others' results, the collector says why it failed,
the submitit launcher (the code path of SLURM) really runs a sweep, make collects the folder it swept."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from helpers import TINY_MODEL, run_module

ROOT = Path(__file__).resolve().parents[2]


def _sweep(root: Path, sweep_dir: Path, *extra: str) -> list[str]:
    """Table 6's sweep cut to T in {0 (a bad value), 20} with crossover, one step each, on the tiny set."""
    return [
        "-m",
        "experiment=table6",
        "data=synthetic",
        f"data.root={root}",
        "logger=none",
        *TINY_MODEL,
        "data.transform.short=64",
        "data.transform.max_size=96",
        "data.batch_size=2",
        "data.num_workers=0",
        "trainer.enable_progress_bar=false",
        "trainer.max_steps=1",
        "model.crossover.enabled=true",
        "data.sampler.T=0,20",
        f"hydra.sweep.dir={sweep_dir}",
        *extra,
    ]


def _check_sweep_survived(sweep_dir: Path) -> None:
    failed, finished = sweep_dir / "0", sweep_dir / "1"
    assert (finished / "metrics.json").is_file() and (finished / "submission.zip").is_file()
    assert not (failed / "metrics.json").exists()
    collected = run_module("crossvis.cli.tables", str(sweep_dir))
    assert f"1 finished runs, 1 failed in {sweep_dir}" in collected.stdout
    assert f"failed: {failed}: ConfigError: data.sampler.T: expected a positive integer or 'inf', got 0" in (
        collected.stdout
    )
    row = next(line for line in collected.stdout.splitlines() if line.startswith("| crossover"))
    assert row.split("|")[7].strip() != "missing (34.8)"  # T=20: the finished run's AP


@pytest.mark.slow
def test_a_failing_sweep_member_leaves_the_other_runs_and_says_why(tiny_root, tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_module("crossvis.cli.train", *_sweep(tiny_root, sweep_dir), check=False)
    assert proc.returncode != 0  # the sweep reports its failed member at the end...
    assert "error: data.sampler.T: expected a positive integer or 'inf', got 0" in proc.stderr
    _check_sweep_survived(sweep_dir)  # ...after running the other one


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_two_run_sweep(tiny_root, tmp_path):
    # hydra/launcher=submitit_local: each run is a submitit job in its own process, as on SLURM.
    sweep_dir = tmp_path / "sweep"
    args = _sweep(tiny_root, sweep_dir, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=20")
    proc = run_module("crossvis.cli.train", *args, check=False)
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert list((sweep_dir / ".submitit").glob("*/*_result.pkl"))  # submitit really ran the jobs
    _check_sweep_survived(sweep_dir)


def test_make_table_collects_the_sweep_folder_given_in_args():
    args = "data=synthetic hydra.sweep.dir=/tmp/my_sweep trainer.max_steps=1"
    dry = subprocess.run(["make", "-n", "table8", f"ARGS={args}"], cwd=ROOT, capture_output=True, text=True)
    train, collect = [line for line in dry.stdout.splitlines() if "crossvis." in line][-2:]
    assert train.count("hydra.sweep.dir=") == 1 and "hydra.sweep.dir=/tmp/my_sweep " in train
    assert "resume=auto" in train  # the same command goes on after an interruption
    assert "-m crossvis.cli.tables /tmp/my_sweep --csv /tmp/my_sweep/table8.csv" in collect
