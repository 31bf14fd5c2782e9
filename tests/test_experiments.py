"""Every cell of every ``experiment=tableN`` sweep composes to the paper's setting.

The sweeper's parameter grid is expanded as Hydra's basic sweeper does (Cartesian product of the
comma-separated values) and each cell is composed from conf/ like ``python -m crossvis.train -m``.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from crossvis.tables import TABLES, Run

CONF = Path(__file__).resolve().parents[1] / "conf"

# The paper's settings (Sec. 4 and the table captions); every key is checked on every cell.
FULL_CROSSVIS = {
    "model.backbone.name": "resnet50",
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
        setting["model.backbone.name"] = cell["model/backbone"]
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
    experiment = OmegaConf.load(CONF / "experiment" / f"{table}.yaml")
    params = experiment.hydra.sweeper.params
    keys = list(params)
    values = [str(params[k]).split(",") for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def compose_cell(table: str, cell: dict[str, str]):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose("train", overrides=[f"experiment={table}", *(f"{k}={v}" for k, v in cell.items())])


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
