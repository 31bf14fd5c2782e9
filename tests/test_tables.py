"""The sweep collector renders the paper's layouts from finished runs, never inventing cells."""

import json
import statistics

import pytest
from omegaconf import OmegaConf

from crossvis.tables import TABLES, main


def _write_run(path, config: dict, metrics: dict | None) -> None:
    (path / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(config), path / ".hydra" / "config.yaml")
    if metrics is not None:
        (path / "metrics.json").write_text(json.dumps(metrics))


def test_table6_prints_all_fourteen_cells_and_marks_missing(tmp_path, capsys):
    t_values = [1, 3, 5, 10, 15, 20, float("inf")]
    job = 0
    for enabled in (False, True):
        for t in t_values:
            finished = not (enabled and t == 20)  # one run did not finish
            ap = 0.3 + 0.01 * job
            _write_run(
                tmp_path / str(job),
                {"table": "table6", "model": {"crossover": {"enabled": enabled}}, "data": {"sampler": {"T": t}}},
                {"AP": ap} if finished else None,
            )
            job += 1
    assert main([str(tmp_path), "--csv", str(tmp_path / "t6.csv")]) == 0
    out = capsys.readouterr().out
    assert "13 finished runs" in out
    rows = [line for line in out.splitlines() if line.startswith("| baseline") or line.startswith("| crossover")]
    assert len(rows) == 2
    baseline_cells = rows[0].split("|")[2:-1]
    crossover_cells = rows[1].split("|")[2:-1]
    assert len(baseline_cells) == len(crossover_cells) == 7
    assert baseline_cells[0].strip() == "30.0 (33.1)"  # job 0: AP 0.30, paper 33.1
    assert crossover_cells[6].strip() == f"{100 * (0.3 + 0.01 * 13):.1f} (34.8)"  # T=inf
    assert crossover_cells[5].strip() == "missing (34.8)"  # T=20 did not finish
    csv_lines = (tmp_path / "t6.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 14


def test_table7_reports_median_and_std_over_seeds(tmp_path, capsys):
    aps = [0.30, 0.34, 0.32]
    for seed, ap in enumerate(aps):
        _write_run(
            tmp_path / f"run{seed}",
            {"table": "table7", "seed": seed, "model": {"embedding": {"type": "global", "loss": "focal"}}},
            {"AP": ap, "AP50": 0.5, "AP75": 0.3},
        )
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| Global Focal"))
    ap_cell = row.split("|")[2].strip()
    values = [100 * a for a in aps]
    assert ap_cell == f"{statistics.median(values):.1f} ± {statistics.stdev(values):.2f} (34.8)"
    assert "| Pair-wise CE | missing (33.1) |" in out


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_table_renders_from_an_empty_sweep(tmp_path, capsys, name):
    assert main([str(tmp_path), "--table", name]) == 0
    out = capsys.readouterr().out
    table = TABLES[name]
    assert out.count("missing") == len(table.rows) * len(table.columns)


def test_unknown_folder_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "nope")])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == f"error: sweep folder {tmp_path / 'nope'} does not exist (expected a Hydra multirun folder)\n"
