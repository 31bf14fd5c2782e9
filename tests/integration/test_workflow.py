"""Experiment workflow: paper-table sweeps, their collector, W&B offline logging, DDP on CPU."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from crossvis.conf import CONF_DIR

from helpers import TINY, last_json_line, run_module, train_args

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ["data=synthetic", "logger=none", *TINY, "trainer.max_steps=1"]
# The paper tables' CPU smoke run: model=cpu's backbone instead of the tables' detectron2 ResNet-50,
# and no COCO initialisation (opted out explicitly).
TABLE_SMOKE = [*SMOKE, "model/backbone=regnetx_002", "model.init_from=null"]


@pytest.mark.slow
def test_make_table6_smoke_run_fills_all_fourteen_cells(synthetic_root, tmp_path):
    sweep_dir = tmp_path / "table6"
    args = " ".join([*TABLE_SMOKE, f"data.root={synthetic_root}"])
    proc = subprocess.run(
        ["make", "-s", "table6", f"SWEEP_DIR={sweep_dir}", f"ARGS={args}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # make collects the sweep it ran: local AP on the held-out training videos in every cell
    assert "14 finished runs" in proc.stdout and (sweep_dir / "table6.csv").is_file()
    rows = [line for line in proc.stdout.splitlines() if line.startswith(("| baseline", "| crossover"))]
    cells = [cell.strip() for row in rows for cell in row.split("|")[2:-2]]
    assert len(cells) == 14 and not any(cell.startswith("missing") for cell in cells)
    assert "Local numbers: synthetic held-out training videos" in proc.stdout
    # experiment=tableN runs analyze=true: make prints the error decomposition of every cell too
    error_rows = [line for line in proc.stdout.splitlines() if line.startswith("| model.crossover.enabled=")]
    assert "**Error decomposition**" in proc.stdout and len(error_rows) == 14
    assert all(
        (run / "holdout_split.json").is_file() and (run / "submission.zip").is_file()
        for run in sweep_dir.glob("[0-9]*")
    )


@pytest.mark.slow
def test_table7_seeds_are_summarised_by_median_and_std(synthetic_root, tmp_path):
    sweep_dir = tmp_path / "table7"
    run_module(
        "crossvis.cli.train",
        "-m",
        "experiment=table7",
        *TABLE_SMOKE,
        f"data.root={synthetic_root}",
        f"hydra.sweep.dir={sweep_dir}",
        "model.embedding.type=global",
        "model.embedding.loss=focal",
        "seed=0,1",
    )
    collected = run_module("crossvis.cli.tables", str(sweep_dir))
    assert "2 finished runs" in collected.stdout
    row = next(line for line in collected.stdout.splitlines() if line.startswith("| Global Focal"))
    assert "±" in row.split("|")[2]
    assert "| Pair-wise CE | missing (33.1) |" in collected.stdout


def test_wandb_offline_run_holds_the_logged_metrics(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_module(
        "crossvis.cli.train",
        *[a for a in train_args(synthetic_root, tmp_path, "trainer.max_steps=2") if a != "logger=csv"],
    )
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "the default logger is W&B, offline without WANDB_MODE"
    # The offline run log (what `wandb sync` uploads) holds every metric key and the resolved config.
    log = next(runs[0].glob("*.wandb")).read_bytes()
    for key in ("train/loss", "train/loss_cross", "train/loss_id", "train/lr", "val/AP50", "val/AR10"):
        assert key.encode() in log, key
    assert b'"crossover"' in log and b'"sampler"' in log
    assert b"trainer.max_steps=2" in log  # the run's overrides as tags and in its config
    assert list((runs[0] / "files" / "media" / "images").rglob("*.png")), "validation previews"


@pytest.mark.slow
def test_ddp_on_cpu_validates_like_a_single_process(synthetic_root, tmp_path):
    run_dir = tmp_path / "ddp"
    proc = run_module(
        "crossvis.cli.train",
        *train_args(
            synthetic_root,
            run_dir,
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.max_steps=3",
        ),
    )
    assert "distributed_backend=gloo" in proc.stdout + proc.stderr
    assert "Starting with 2 processes" in proc.stdout + proc.stderr
    ddp_metrics = json.loads((run_dir / "metrics.json").read_text())
    evaluated = run_module(
        "crossvis.cli.evaluate",
        f"checkpoint={run_dir / 'checkpoints' / 'last.ckpt'}",
        "data=synthetic",
        f"data.root={synthetic_root}",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    single = last_json_line(evaluated.stdout)
    assert ddp_metrics == {key: single[key] for key in ddp_metrics}


def test_slurm_launcher_config_composes():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "experiment=table7"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert cfg.hydra.sweeper.params["seed"] == "0,1,2,3,4"
