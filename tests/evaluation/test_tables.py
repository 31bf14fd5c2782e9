"""The sweep collector renders the paper's layouts from finished runs, never inventing cells."""

import csv
import json
import statistics

import pytest
from omegaconf import OmegaConf

from crossvis.cli.tables import main
from crossvis.evaluation.tables import TABLES
from crossvis.files import record_failure


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
    baseline_cells = rows[0].split("|")[2:-2]
    crossover_cells = rows[1].split("|")[2:-2]
    assert rows[0].split("|")[-2].strip() == "public"  # tracker column (default scoring)
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
    assert (
        capsys.readouterr().err
        == f"error: sweep folder {tmp_path / 'nope'} does not exist (expected a Hydra multirun folder)\n"
    )


def _table8_sweep(root) -> None:
    """Table 8 runs as the experiment composes them (tracker follows the embedding), local AP in metrics.json."""
    job = 0
    for col in (False, True):
        for emb, loss, tracker in (("pairwise", "ce", "masktrack"), ("global", "focal", "public")):
            _write_run(
                root / str(job),
                {
                    "table": "table8",
                    "model": {"crossover": {"enabled": col}, "embedding": {"type": emb, "loss": loss}},
                    "inference": {"tracker": {"scoring": tracker}},
                    "data": {"name": "ytvis19", "validate_on": "holdout", "holdout_every": 10},
                },
                {"AP": 0.20 + 0.01 * job},
            )
            job += 1


def test_table8_names_each_rows_tracker_and_the_local_split(tmp_path, capsys):
    _table8_sweep(tmp_path)
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| Baseline | 20.0 (32.1) | masktrack |" in out
    assert "| + COL | 22.0 (33.1) | masktrack |" in out
    assert "| + GBE | 21.0 (33.5) | public |" in out
    assert "| + COL + GBE | 23.0 (34.8) | public |" in out
    assert "Local numbers: ytvis19 held-out training videos (every 10-th video id, holdout_split.json)." in out


def test_official_scores_stand_beside_the_local_ones(tmp_path, capsys):
    _table8_sweep(tmp_path / "sweep")
    official = tmp_path / "official.csv"
    official.write_text(f"run,AP,AP50\n3,34.1,55.0\n{tmp_path / 'sweep' / '0'},31.9,\n")
    assert main([str(tmp_path / "sweep"), "--official", str(official), "--csv", str(tmp_path / "t8.csv")]) == 0
    out = capsys.readouterr().out
    assert "local / official (paper)" in out
    assert "| Baseline | 20.0 / 31.9 (32.1) | masktrack |" in out
    assert "| + COL + GBE | 23.0 / 34.1 (34.8) | public |" in out
    assert "| + GBE | 21.0 / – (33.5) | public |" in out  # not submitted
    rows = (tmp_path / "t8.csv").read_text().splitlines()
    assert rows[0].split(",")[5] == "official_median" and "Baseline,AP,20.0,,1,31.9,1,32.1,masktrack,0" in rows


@pytest.mark.parametrize(
    "content, message",
    [
        ("run,AP\nnowhere,30\n", "line 2: field 'run'"),
        ("folder,AP\n0,30\n", "expected a header with 'run'"),
        ("run,AP\n0,high\n", "line 2: expected numbers"),
    ],
)
def test_bad_official_csv_is_an_error(tmp_path, capsys, content, message):
    _table8_sweep(tmp_path / "sweep")
    (tmp_path / "official.csv").write_text(content)
    assert main([str(tmp_path / "sweep"), "--official", str(tmp_path / "official.csv")]) == 1
    assert message in capsys.readouterr().err


def test_grids_come_from_the_experiment_configs(tmp_path):
    """Changing a sweep in conf/experiment changes the collected table; a swept key without a place is an error."""
    from crossvis.evaluation.tables import LAYOUTS, build_table

    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "table6.yaml").write_text(
        "hydra:\n  sweeper:\n    params:\n      model.crossover.enabled: true\n      data.sampler.T: 2,inf\n"
    )
    table = build_table("table6", LAYOUTS["table6"], conf_dir=tmp_path)
    assert table.rows == [("crossover", {"model.crossover.enabled": True})]
    assert [(c.label, c.match) for c in table.columns] == [
        ("T=2", {"data.sampler.T": 2}),
        ("T=inf", {"data.sampler.T": float("inf")}),
    ]
    (tmp_path / "experiment" / "table3.yaml").write_text(
        "hydra:\n  sweeper:\n    params:\n      data.transform.multiscale: false\n      model.crossover.enabled: false,true\n"
    )
    with pytest.raises(
        ValueError, match=r"sweeps \['model.crossover.enabled'\], which the table3 layout does not place"
    ):
        build_table("table3", LAYOUTS["table3"], conf_dir=tmp_path)


def test_error_decomposition_of_every_analysed_run_is_one_table(tmp_path, capsys):
    from crossvis.evaluation.analysis import ERROR_TYPES

    for job, enabled in enumerate((False, True)):
        run = tmp_path / str(job)
        config = {"table": "table6", "model": {"crossover": {"enabled": enabled}}, "data": {"sampler": {"T": 5}}}
        _write_run(run, config, {"AP": 0.3})
        OmegaConf.save(
            OmegaConf.create(["data=synthetic", f"model.crossover.enabled={str(enabled).lower()}", "data.sampler.T=5"]),
            run / ".hydra" / "overrides.yaml",
        )
        if enabled:  # only this run was analysed (analyze=true)
            d_ap = {t: 0.01 * i for i, t in enumerate(ERROR_TYPES)}
            (run / "analysis").mkdir()
            (run / "analysis" / "analysis.json").write_text(
                json.dumps({"errors": {"AP": 0.3, "dAP": d_ap, "dAP_all": 0.5}})
            )
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "**Error decomposition**" in out
    rows = [line for line in out.splitlines() if line.startswith("| model.crossover")]
    assert rows == [
        "| model.crossover.enabled=true data.sampler.T=5 | 30.0 | 0.0 | 1.0 | 2.0 | 3.0 | 4.0 | 5.0 | 6.0 | 50.0 |"
    ]
    header = next(line for line in out.splitlines() if line.startswith("| run |"))
    assert header.split("|")[2:-1] == [f" {c} " for c in ["AP", *(f"dAP_{t}" for t in ERROR_TYPES), "dAP_all"]]


def test_failed_runs_mark_their_cells_with_the_reason(tmp_path, capsys):
    # Table 7, Global Focal: seed 0 finished, seed 1 crashed; Global CE: its only run had a bad value.
    cell = {"table": "table7", "model": {"embedding": {"type": "global", "loss": "focal"}}}
    _write_run(tmp_path / "0", {**cell, "seed": 0}, {"AP": 0.3, "AP50": 0.5, "AP75": 0.3})
    for name, config, error in [
        ("1", {**cell, "seed": 1}, RuntimeError("CUDA error: an illegal memory access")),
        ("2", {**cell, "model": {"embedding": {"type": "global", "loss": "ce"}}}, ValueError("bad | value\nhere")),
    ]:
        _write_run(tmp_path / name, config, None)
        with pytest.raises(type(error)), record_failure(tmp_path / name):  # as crossvis.cli.train leaves it
            raise error
    assert main([str(tmp_path), "--csv", str(tmp_path / "t7.csv")]) == 0
    out = capsys.readouterr().out
    assert f"1 finished runs, 2 failed in {tmp_path}" in out
    assert "| Global Focal | 30.0 (1 failed) (34.8) |" in out
    assert "| Global CE | failed: ValueError: bad / value here (33.4) |" in out
    assert f"failed: {tmp_path / '1'}: RuntimeError: CUDA error: an illegal memory access" in out
    assert "| Pair-wise CE | missing (33.1) |" in out
    rows = {(r["row"], r["column"]): r for r in csv.DictReader(open(tmp_path / "t7.csv"))}
    assert rows[("Global Focal", "AP")]["failed"] == "1" and rows[("Global Focal", "AP")]["runs"] == "1"
