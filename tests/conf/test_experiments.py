"""Every cell of every ``experiment=tableN`` sweep composes to the paper's setting.

The sweeper's parameter grid is expanded as Hydra's basic sweeper does (Cartesian product of the
comma-separated values) and each cell is composed from conf/ like ``python -m crossvis.cli.train -m``.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from crossvis.conf import CONF_DIR
from crossvis.evaluation.tables import TABLES, Run

from helpers import run_module, train_args

# The paper's settings (Sec. 4 and the table captions); every key is checked on every cell.
FULL_CROSSVIS = {
    "model.backbone.name": "resnet50",
    "model.backbone.stride_in_1x1": True,  # detectron2's MSRA ResNet (model/backbone=resnet50_d2)
    "model.init_from": "coco.pth",  # CondInst MS R-50 1x trained on COCO, required (coco_init)
    "model.crossover.enabled": True,
    "model.embedding.type": "global",
    "model.embedding.loss": "focal",
    "inference.tracker.scoring": "public",
    "data.sampler.T": 20,
    "data.transform.multiscale": False,
    "data.validate_on": "holdout",
    "data.holdout_every": 10,
    "seed": 0,
}
DATASET = {
    "table1": "ytvis19",
    "table2": "ovis",
    "table3": "ytvis21",
    "table6": "ytvis19",
    "table7": "ytvis19",
    "table8": "ytvis19",
}
GRID_SIZE = {"table1": 6, "table2": 1, "table3": 2, "table6": 14, "table7": 20, "table8": 4}


def expected_setting(table: str, cell: dict[str, str]) -> dict:
    """What the paper ran for this cell: the full model with the cell's changes."""
    setting = dict(FULL_CROSSVIS)
    if table == "table1":
        name = cell["model/backbone"].removesuffix("_d2")
        setting["model.backbone.name"] = name
        setting["model.backbone.stride_in_1x1"] = name != "dla34"
        setting["model.init_from"] = f"{name}.pth"
        setting["data.transform.multiscale"] = cell["data.transform.multiscale"] == "true"
    elif table == "table3":
        setting["data.transform.multiscale"] = cell["data.transform.multiscale"] == "true"
    elif table == "table6":
        setting["model.crossover.enabled"] = cell["model.crossover.enabled"] == "true"
        setting["data.sampler.T"] = math.inf if cell["data.sampler.T"] == "inf" else int(cell["data.sampler.T"])
    elif table == "table7":
        setting["model.embedding.type"] = cell["model.embedding.type"]
        setting["model.embedding.loss"] = cell["model.embedding.loss"]
        setting["seed"] = int(cell["seed"])
    elif table == "table8":
        pairwise = cell["model.embedding.type"] == "pairwise"
        setting["model.crossover.enabled"] = cell["model.crossover.enabled"] == "true"
        # Baseline = CondInst-VIS: pair-wise CE (Eq. 9-10) with MaskTrack R-CNN's inference;
        # GBE = global focal embedding with the public tracker.
        setting["model.embedding.type"] = cell["model.embedding.type"]
        setting["model.embedding.loss"] = "ce" if pairwise else "focal"
        setting["inference.tracker.scoring"] = "masktrack" if pairwise else "public"
    return setting


def sweep_cells(table: str) -> list[dict[str, str]]:
    experiment = OmegaConf.load(CONF_DIR / "experiment" / f"{table}.yaml")
    params = experiment.hydra.sweeper.params
    keys = list(params)
    values = [str(params[k]).split(",") for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def compose_cell(table: str, cell: dict[str, str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        init = [f"coco_init.{b}={b}.pth" for b in ("resnet50", "resnet101", "dla34")] if table == "table1" else []
        overrides = [f"experiment={table}", *(init or ["coco_init=coco.pth"]), *(f"{k}={v}" for k, v in cell.items())]
        return compose("train", overrides=overrides)


@pytest.mark.parametrize("table", sorted(GRID_SIZE))
def test_every_cell_composes_to_the_papers_setting(table: str) -> None:
    cells = sweep_cells(table)
    assert len(cells) == GRID_SIZE[table]
    table_cells = {(row, column.label): 0 for row, _ in TABLES[table].rows for column in TABLES[table].columns}
    for cell in cells:
        cfg = compose_cell(table, cell)
        assert cfg.table == table and cfg.data.name == DATASET[table]
        for key, value in expected_setting(table, cell).items():
            got = OmegaConf.select(cfg, key)
            got = float(got) if key == "data.sampler.T" and got == "inf" else got
            assert got == value, (table, cell, key)
        # the collector files the run under one row: one T column (Table 6) or every metric column
        run = Run(Path("."), cfg, {})
        matched = [
            (row, c.label)
            for row, match in TABLES[table].rows
            for c in TABLES[table].columns
            if run.matches({**match, **c.match})
        ]
        assert len({row for row, _ in matched}) == 1
        assert len(matched) == (1 if table == "table6" else len(TABLES[table].columns))
        for key in matched:
            table_cells[key] += 1
    repeats = 5 if table == "table7" else 1
    assert set(table_cells.values()) == {repeats}, table_cells  # every paper cell filled, seeds repeat


@pytest.mark.parametrize("table, missing", [("table6", "coco_init"), ("table1", "coco_init.resnet50")])
def test_a_table_without_its_coco_init_stops_before_training(synthetic_root, tmp_path, table, missing) -> None:
    """The paper starts every table from CondInst trained on COCO: without it the run says how to get it or opt out."""
    run_dir = tmp_path / table
    args = [*train_args(synthetic_root, run_dir, "trainer.max_steps=1"), f"experiment={table}"]
    proc = run_module("crossvis.cli.train", *args, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {missing}: experiment={table} starts from CondInst MS R-50 1x trained on COCO")
    assert "model.init_from=null" in last and "Released weights" in last
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "csv").exists()
