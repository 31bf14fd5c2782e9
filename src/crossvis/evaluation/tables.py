"""A finished sweep collected into the paper's table layout (``crossvis-tables``, :mod:`crossvis.cli.tables`).

Each run folder holds Hydra's ``.hydra/config.yaml`` and the ``metrics.json`` written by
``crossvis.cli.train``: the *local* numbers, measured on the split named by the run's
``data.validate_on``. Runs that repeat a cell (seeds) are summarised as median ± std; cells with
no finished run are ``missing``, cells whose runs failed ``failed: <reason>`` (the ``failed.json``
the run left).
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import statistics
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from crossvis.conf import CONF_DIR
from crossvis.files import FAILURE_RECORD, read_json

METRICS = ("AP", "AP50", "AP75", "AR1", "AR10")


# Sweep parameters that choose a config group, and the config value that records the choice (the
# option's own value of it: model/backbone=resnet50_d2 records model.backbone.name=resnet50).
GROUP_KEYS = {"model/backbone": ("model.backbone.name", "name")}
REPEAT_KEYS = ("seed",)  # runs repeated over these are one cell (median ± std)


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


@dataclass(frozen=True)
class Layout:
    """How a table lays out its sweep (conf/experiment/<table>.yaml): the sweep parameters that make
    the rows (outer first) and, optionally, the one that makes the columns; labels and the paper's
    figures. The values themselves come from the experiment config only."""

    title: str
    row_keys: tuple[str, ...]
    row_label: Callable[..., str]  # called with the row's values, in row_keys order
    paper: dict[tuple[str, str], float]
    metrics: tuple[str, ...] = METRICS
    column_key: str | None = None
    column_label: Callable[[Any], str] = str


def sweep_grid(table: str, conf_dir: Path = CONF_DIR) -> dict[str, list]:
    """``hydra.sweeper.params`` of ``conf/experiment/<table>.yaml``, each expanded as Hydra's sweeper does."""
    params = OmegaConf.load(conf_dir / "experiment" / f"{table}.yaml").hydra.sweeper.params
    parser = OverridesParser.create()
    grid = {}
    for key, value in params.items():
        [override] = parser.parse_overrides([f"{key}={value}"])
        grid[key] = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
    return grid


def recorded_value(key: str, value: Any, conf_dir: Path = CONF_DIR) -> tuple[str, Any]:
    """(config key, value) by which a run records the sweep value ``key=value`` (:data:`GROUP_KEYS`)."""
    if key not in GROUP_KEYS:
        return key, value
    config_key, field_name = GROUP_KEYS[key]
    return config_key, OmegaConf.load(conf_dir / key / f"{value}.yaml")[field_name]


def build_table(name: str, layout: Layout, conf_dir: Path = CONF_DIR) -> Table:
    """Rows and columns of ``layout`` from the sweep of ``conf/experiment/<name>.yaml``."""
    grid = sweep_grid(name, conf_dir)
    known = {*layout.row_keys, *([layout.column_key] if layout.column_key else []), *REPEAT_KEYS}
    if set(grid) - known:
        raise ValueError(
            f"conf/experiment/{name}.yaml sweeps {sorted(set(grid) - known)}, which the {name} layout does not place"
        )
    rows = [
        (layout.row_label(*values), dict(recorded_value(k, v, conf_dir) for k, v in zip(layout.row_keys, values)))
        for values in itertools.product(*(grid[k] for k in layout.row_keys))
    ]
    if layout.column_key is None:
        columns = [Column(m, m) for m in layout.metrics]
    else:
        [metric] = layout.metrics
        columns = [
            Column(layout.column_label(v), metric, dict([recorded_value(layout.column_key, v, conf_dir)]))
            for v in grid[layout.column_key]
        ]
    return Table(layout.title, rows, columns, layout.paper)


def _paper_rows(rows: dict[str, tuple], metrics: tuple[str, ...] = METRICS) -> dict[tuple[str, str], float]:
    return {(row, m): v for row, values in rows.items() for m, v in zip(metrics, values) if v is not None}


BACKBONE_NAMES = {"resnet50_d2": "ResNet-50", "resnet101_d2": "ResNet-101", "dla34": "DLA-34"}
AUG = {False: "", True: " + Aug."}
TABLE8_ROWS = {
    ("pairwise", False): "Baseline",
    ("pairwise", True): "+ COL",
    ("global", False): "+ GBE",
    ("global", True): "+ COL + GBE",
}
# Paper Table 6 (AP) per sampling interval T.
TABLE6_PAPER = {
    "baseline": {1: 33.1, 3: 33.4, 5: 33.5, 10: 33.5, 15: 33.6, 20: 33.4, "inf": 33.5},
    "crossover": {1: 33.6, 3: 34.2, 5: 34.6, 10: 34.6, 15: 34.3, 20: 34.8, "inf": 34.8},
}

LAYOUTS: dict[str, Layout] = {
    "table1": Layout(
        "Table 1: YouTube-VIS 2019 val",
        ("model/backbone", "data.transform.multiscale"),
        lambda backbone, multiscale: f"{BACKBONE_NAMES[backbone]}{AUG[multiscale]}",
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
    "table2": Layout(
        "Table 2: OVIS val",
        (),
        lambda: "CrossVIS ResNet-50",
        _paper_rows({"CrossVIS ResNet-50": (14.9, 32.7, 12.1, 10.3, 19.8)}),
    ),
    "table3": Layout(
        "Table 3: YouTube-VIS 2021 val",
        ("data.transform.multiscale",),
        lambda multiscale: f"CrossVIS{AUG[multiscale]}",
        _paper_rows({"CrossVIS": (33.3, 53.8, 37.0, 30.1, 37.6), "CrossVIS + Aug.": (34.2, 54.4, 37.9, 30.4, 38.2)}),
    ),
    "table6": Layout(
        "Table 6: crossover learning vs. sampling interval T (AP)",
        ("model.crossover.enabled",),
        lambda crossover: "crossover" if crossover else "baseline",
        {(row, f"T={t}"): v for row, values in TABLE6_PAPER.items() for t, v in values.items()},
        metrics=("AP",),
        column_key="data.sampler.T",
        column_label=lambda t: f"T={_normalise(t)}",
    ),
    "table7": Layout(
        "Table 7: instance association embeddings (median ± std over seeds)",
        ("model.embedding.type", "model.embedding.loss"),
        lambda kind, loss: (
            f"{ {'pairwise': 'Pair-wise', 'global': 'Global'}[kind] } { {'ce': 'CE', 'focal': 'Focal'}[loss] }"
        ),
        _paper_rows(
            {
                "Pair-wise CE": (33.1, 51.9, 34.9),
                "Pair-wise Focal": (33.3, 52.1, 35.0),
                "Global CE": (33.4, 53.9, 35.7),
                "Global Focal": (34.8, 54.6, 37.9),
            },
            ("AP", "AP50", "AP75"),
        ),
        metrics=("AP", "AP50", "AP75"),
    ),
    "table8": Layout(
        "Table 8: crossover learning (COL) and global balanced embedding (GBE)",
        ("model.embedding.type", "model.crossover.enabled"),
        lambda kind, crossover: TABLE8_ROWS[(kind, crossover)],
        {("Baseline", "AP"): 32.1, ("+ COL", "AP"): 33.1, ("+ GBE", "AP"): 33.5, ("+ COL + GBE", "AP"): 34.8},
        metrics=("AP",),
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


TABLES: dict[str, Table] = {name: build_table(name, layout) for name, layout in LAYOUTS.items()}


@dataclass(frozen=True)
class Run:
    path: Path
    config: dict
    metrics: dict
    failure: str | None = None  # why the run failed (its failed.json), None for a finished run

    def matches(self, match: dict) -> bool:
        return all(_normalise(OmegaConf.select(self.config, key)) == _normalise(value) for key, value in match.items())


def load_runs(sweep_dir: Path) -> list[Run]:
    """Finished and failed runs below ``sweep_dir`` (a run with neither metrics.json nor the failure
    record of ``crossvis.cli.train`` is unfinished, e.g. still running, and left out)."""
    runs = []
    for config_path in sorted(sweep_dir.glob("**/.hydra/config.yaml")):
        run_dir = config_path.parent.parent
        metrics_path, failure_path = run_dir / "metrics.json", run_dir / FAILURE_RECORD
        if metrics_path.is_file():
            config = OmegaConf.load(config_path)
            runs.append(Run(run_dir, config, read_json(metrics_path, "run metrics (crossvis.cli.train)")))
        elif failure_path.is_file():
            reason = read_json(failure_path, "failure record (crossvis.cli.train)").get("error", "?")
            runs.append(Run(run_dir, OmegaConf.load(config_path), {}, str(reason)))
    return runs


def read_official(path: Path, sweep_dir: Path, runs: list[Run]) -> dict[Path, dict[str, float]]:
    """Official scores per run folder (resolved) from ``path``; unknown runs or bad values are errors."""
    by_path = {r.path.resolve(): r for r in runs}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        metrics = [m for m in METRICS if m in fields]
        if "run" not in fields or not metrics:
            raise ValueError(f"{path}: expected a header with 'run' and some of {list(METRICS)}, got {fields}")
        scores = {}
        for line, row in enumerate(reader, start=2):
            run = Path(row["run"])
            candidates = [run] if run.is_absolute() else [sweep_dir / run, run]
            found = next((c.resolve() for c in candidates if c.resolve() in by_path), None)
            if found is None:
                raise ValueError(
                    f"{path}: line {line}: field 'run': expected a finished run of {sweep_dir}, got {row['run']!r}"
                )
            try:
                scores[found] = {m: float(row[m]) for m in metrics if row[m] not in (None, "")}
            except ValueError as e:
                raise ValueError(f"{path}: line {line}: expected numbers (percent) in {metrics}: {e}") from e
    return scores


@dataclass(frozen=True)
class Cell:
    values: list[float]  # local percentages, one per run
    paper: float | None
    official: list[float] = field(default_factory=list)  # server percentages of the submitted runs
    failures: list[str] = field(default_factory=list)  # reasons of the cell's failed runs

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    @property
    def official_median(self) -> float | None:
        return statistics.median(self.official) if self.official else None

    def text(self, with_official: bool = False) -> str:
        if self.median is None:
            ours = f"failed: {_cell_text(self.failures[0])}" if self.failures else "missing"
        else:
            ours = f"{self.median:.1f}"
        if self.std is not None:
            ours += f" ± {self.std:.2f}"
        if self.failures and self.median is not None:
            ours += f" ({len(self.failures)} failed)"
        if with_official:
            ours += " / " + ("–" if self.official_median is None else f"{self.official_median:.1f}")
        return ours if self.paper is None else f"{ours} ({self.paper:.1f})"


def _cell_text(reason: str, limit: int = 80) -> str:
    """A failure reason fit for one Markdown table cell: one line, no ``|``, at most ``limit`` characters."""
    text = " ".join(reason.split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Collected:
    cells: dict[tuple[str, str], Cell]
    trackers: dict[str, str]  # row -> inference.tracker.scoring of its runs
    splits: list[str]  # where the local numbers come from
    with_official: bool


def _split_of(run: Run) -> str:
    validate_on = OmegaConf.select(run.config, "data.validate_on", default="official")
    data = OmegaConf.select(run.config, "data.name", default="?")
    if validate_on == "holdout":
        every = OmegaConf.select(run.config, "data.holdout_every")
        return f"{data} held-out training videos (every {every}-th video id, holdout_split.json)"
    return f"{data} data.val ({OmegaConf.select(run.config, 'data.val.json', default='?')})"


def _scoring_of(run: Run) -> str:
    """The run's ``inference.tracker.scoring`` (runs from before the inference group: ``tracker.scoring``)."""
    legacy = OmegaConf.select(run.config, "tracker.scoring", default="public")
    return str(OmegaConf.select(run.config, "inference.tracker.scoring", default=legacy))


def collect(table: Table, runs: list[Run], official: dict[Path, dict[str, float]] | None = None) -> Collected:
    official = official or {}
    cells, trackers = {}, {}
    for row_label, row_match in table.rows:
        row_runs = []
        for column in table.columns:
            matching = [r for r in runs if r.matches({**row_match, **column.match})]
            row_runs += matching
            values = [100.0 * r.metrics[column.metric] for r in matching if column.metric in r.metrics]
            served = [
                official[p][column.metric]
                for p in (r.path.resolve() for r in matching)
                if column.metric in official.get(p, {})
            ]
            failures = [r.failure for r in matching if r.failure is not None]
            paper = table.paper.get((row_label, column.label))
            cells[(row_label, column.label)] = Cell(values, paper, served, failures)
        used = sorted({_scoring_of(r) for r in row_runs})
        trackers[row_label] = ", ".join(used) or "–"
    return Collected(cells, trackers, sorted({_split_of(r) for r in runs}), bool(official))


def to_markdown(table: Table, collected: Collected) -> str:
    header = ["", *(c.label for c in table.columns), "tracker"]
    layout = "local / official (paper)" if collected.with_official else "local (paper)"
    lines = [
        f"**{table.title}** — {layout}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row_label, _ in table.rows:
        texts = [collected.cells[(row_label, c.label)].text(collected.with_official) for c in table.columns]
        lines.append("| " + " | ".join([row_label, *texts, collected.trackers[row_label]]) + " |")
    lines += ["", "Local numbers: " + ("; ".join(collected.splits) or "no finished runs") + "."]
    return "\n".join(lines)


def to_csv(table: Table, collected: Collected) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    header = [
        "row",
        "column",
        "median",
        "std",
        "runs",
        "official_median",
        "official_runs",
        "paper",
        "tracker",
        "failed",
    ]
    writer.writerow(header)
    for (row, column), cell in collected.cells.items():
        writer.writerow(
            [
                row,
                column,
                cell.median,
                cell.std,
                len(cell.values),
                cell.official_median,
                len(cell.official),
                cell.paper,
                collected.trackers[row],
                len(cell.failures),
            ]
        )
    return out.getvalue()


def error_table(runs: list[Run], keys: Collection[str] = ()) -> str | None:
    """The error decomposition of every run that has one (``analyze=true``: ``<run>/analysis/analysis.json``),
    one row per run named by its overrides of ``keys`` (the sweep's parameters; all if none of
    them): AP and the ΔAP of fixing each error type, in points."""
    from crossvis.evaluation.report import ERROR_COLUMNS, error_row

    rows = []
    for run in runs:
        path = run.path / "analysis" / "analysis.json"
        if path.is_file():
            overrides_path = run.path / ".hydra" / "overrides.yaml"
            overrides = OmegaConf.load(overrides_path) if overrides_path.is_file() else []
            named = [str(o) for o in overrides if str(o).split("=")[0] in keys] or [str(o) for o in overrides]
            label = " ".join(named) or run.path.name
            rows.append([label, *(f"{v:.1f}" for v in error_row(read_json(path, "error analysis")))])
    if not rows:
        return None
    lines = ["**Error decomposition** — ΔAP when an oracle fixes each error type (docs/analysis.md)", ""]
    lines += ["| run | " + " | ".join(ERROR_COLUMNS) + " |", "|" + "---|" * (len(ERROR_COLUMNS) + 1)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])
