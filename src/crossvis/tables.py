"""Collect a finished sweep into the paper's table layout.

    python -m crossvis.tables multirun/table6/2026-11-25_12-00-00 [--table table6] [--csv out.csv]

Each run folder holds Hydra's ``.hydra/config.yaml`` and the ``metrics.json`` written by
``crossvis.train``. Runs that repeat a cell (seeds) are summarised as median ± std; cells with no
finished run are printed as ``missing``. The paper's figures stand beside ours.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from crossvis.cli import user_errors
from crossvis.errors import InputNotFoundError, UserError
from crossvis.io import atomic_path

METRICS = ("AP", "AP50", "AP75", "AR1", "AR10")


@dataclass(frozen=True)
class Column:
    label: str
    metric: str
    match: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Table:
    title: str
    rows: list[tuple[str, dict]]
    columns: list[Column]
    paper: dict[tuple[str, str], float]


def _metric_columns() -> list[Column]:
    return [Column(m, m) for m in METRICS]


def _paper_rows(rows: dict[str, tuple]) -> dict[tuple[str, str], float]:
    return {(row, m): v for row, values in rows.items() for m, v in zip(METRICS, values) if v is not None}


_T_VALUES = (1, 3, 5, 10, 15, 20, "inf")

TABLES: dict[str, Table] = {
    "table1": Table(
        "Table 1: YouTube-VIS 2019 val",
        [
            (f"{name}{' + Aug.' if ms else ''}", {"model.backbone.name": bb, "data.transform.multiscale": ms})
            for name, bb in (("ResNet-50", "resnet50"), ("ResNet-101", "resnet101"), ("DLA-34", "dla34"))
            for ms in (False, True)
        ],
        _metric_columns(),
        _paper_rows(
            {
                "ResNet-50": (34.8, 54.6, 37.9, 34.0, 39.0),
                "ResNet-50 + Aug.": (36.3, 56.8, 38.9, 35.6, 40.7),
                "ResNet-101": (36.6, 57.3, 39.7, 36.0, 42.0),
                "DLA-34": (33.0, 52.7, 35.0, 33.9, 39.5),
                "DLA-34 + Aug.": (36.2, 56.7, 38.4, 35.1, 42.0),
            }
        ),
    ),
    "table2": Table(
        "Table 2: OVIS val",
        [("CrossVIS ResNet-50", {})],
        _metric_columns(),
        _paper_rows({"CrossVIS ResNet-50": (14.9, 32.7, 12.1, 10.3, 19.8)}),
    ),
    "table3": Table(
        "Table 3: YouTube-VIS 2021 val",
        [("CrossVIS", {"data.transform.multiscale": False}), ("CrossVIS + Aug.", {"data.transform.multiscale": True})],
        _metric_columns(),
        _paper_rows({"CrossVIS": (33.3, 53.8, 37.0, 30.1, 37.6), "CrossVIS + Aug.": (34.2, 54.4, 37.9, 30.4, 38.2)}),
    ),
    "table6": Table(
        "Table 6: crossover learning vs. sampling interval T (AP)",
        [("baseline", {"model.crossover.enabled": False}), ("crossover", {"model.crossover.enabled": True})],
        [Column(f"T={t}", "AP", {"data.sampler.T": t}) for t in _T_VALUES],
        {
            **{("baseline", f"T={t}"): v for t, v in zip(_T_VALUES, (33.1, 33.4, 33.5, 33.5, 33.6, 33.4, 33.5))},
            **{("crossover", f"T={t}"): v for t, v in zip(_T_VALUES, (33.6, 34.2, 34.6, 34.6, 34.3, 34.8, 34.8))},
        },
    ),
    "table7": Table(
        "Table 7: instance association embeddings (median ± std over seeds)",
        [
            (f"{tname} {lname}", {"model.embedding.type": t, "model.embedding.loss": loss})
            for tname, t in (("Pair-wise", "pairwise"), ("Global", "global"))
            for lname, loss in (("CE", "ce"), ("Focal", "focal"))
        ],
        [Column(m, m) for m in ("AP", "AP50", "AP75")],
        {
            ("Pair-wise CE", "AP"): 33.1, ("Pair-wise CE", "AP50"): 51.9, ("Pair-wise CE", "AP75"): 34.9,
            ("Pair-wise Focal", "AP"): 33.3, ("Pair-wise Focal", "AP50"): 52.1, ("Pair-wise Focal", "AP75"): 35.0,
            ("Global CE", "AP"): 33.4, ("Global CE", "AP50"): 53.9, ("Global CE", "AP75"): 35.7,
            ("Global Focal", "AP"): 34.8, ("Global Focal", "AP50"): 54.6, ("Global Focal", "AP75"): 37.9,
        },
    ),
    "table8": Table(
        "Table 8: crossover learning (COL) and global balanced embedding (GBE)",
        [
            (name, {"model.crossover.enabled": col, "model.embedding.type": emb})
            for name, col, emb in (
                ("Baseline", False, "pairwise"),
                ("+ COL", True, "pairwise"),
                ("+ GBE", False, "global"),
                ("+ COL + GBE", True, "global"),
            )
        ],
        [Column("AP", "AP")],
        {("Baseline", "AP"): 32.1, ("+ COL", "AP"): 33.1, ("+ GBE", "AP"): 33.5, ("+ COL + GBE", "AP"): 34.8},
    ),
}


def _normalise(value) -> str:
    """Compare config values across YAML spellings: true/True, inf/'inf'/float('inf'), 5/5.0."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and (math.isinf(value) or value.is_integer()):
        return "inf" if math.isinf(value) else str(int(value))
    if isinstance(value, (list, tuple)):  # an explicit list of scales counts as multi-scale on
        return "true" if value else "false"
    return str(value).lower()


@dataclass(frozen=True)
class Run:
    path: Path
    config: dict
    metrics: dict

    def matches(self, match: dict) -> bool:
        return all(
            _normalise(OmegaConf.select(self.config, key)) == _normalise(value) for key, value in match.items()
        )


def load_runs(sweep_dir: Path) -> list[Run]:
    """Finished runs below ``sweep_dir`` (a run without metrics.json is unfinished and left out)."""
    runs = []
    for config_path in sorted(sweep_dir.glob("**/.hydra/config.yaml")):
        run_dir = config_path.parent.parent
        metrics_path = run_dir / "metrics.json"
        if metrics_path.is_file():
            config = OmegaConf.load(config_path)
            runs.append(Run(run_dir, config, json.loads(metrics_path.read_text())))
    return runs


@dataclass(frozen=True)
class Cell:
    values: list[float]  # percentages, one per run
    paper: float | None

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    def text(self) -> str:
        ours = "missing" if self.median is None else f"{self.median:.1f}"
        if self.std is not None:
            ours += f" ± {self.std:.2f}"
        return ours if self.paper is None else f"{ours} ({self.paper:.1f})"


def collect(table: Table, runs: list[Run]) -> dict[tuple[str, str], Cell]:
    cells = {}
    for row_label, row_match in table.rows:
        for column in table.columns:
            matching = [r for r in runs if r.matches({**row_match, **column.match})]
            values = [100.0 * r.metrics[column.metric] for r in matching if column.metric in r.metrics]
            cells[(row_label, column.label)] = Cell(values, table.paper.get((row_label, column.label)))
    return cells


def to_markdown(table: Table, cells: dict[tuple[str, str], Cell]) -> str:
    header = ["", *(c.label for c in table.columns)]
    lines = [
        f"**{table.title}** — ours (paper)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row_label, _ in table.rows:
        lines.append("| " + " | ".join([row_label, *(cells[(row_label, c.label)].text() for c in table.columns)]) + " |")
    return "\n".join(lines)


def to_csv(table: Table, cells: dict[tuple[str, str], Cell]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["row", "column", "median", "std", "runs", "paper"])
    for (row, column), cell in cells.items():
        writer.writerow([row, column, cell.median, cell.std, len(cell.values), cell.paper])
    return out.getvalue()


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--table", choices=sorted(TABLES), help="default: the `table` key of the runs' config")
    parser.add_argument("--csv", type=Path, help="also write the cells as CSV here")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        raise InputNotFoundError(f"sweep folder {args.sweep_dir} does not exist (expected a Hydra multirun folder)")
    runs = load_runs(args.sweep_dir)
    name = args.table or next((r.config.get("table") for r in runs if r.config.get("table")), None)
    if name not in TABLES:
        raise UserError(f"cannot tell which table {args.sweep_dir} is; pass --table {{{','.join(TABLES)}}}")
    table = TABLES[name]
    cells = collect(table, runs)
    print(f"{len(runs)} finished runs in {args.sweep_dir}\n")
    print(to_markdown(table, cells))
    if args.csv:
        with atomic_path(args.csv) as tmp:
            tmp.write_text(to_csv(table, cells))
        print(f"\nCSV: {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
