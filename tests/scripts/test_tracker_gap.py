"""scripts/tracker_gap.py: the share of the baseline's oracle-association gap each run closes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from tracker_gap import main  # noqa: E402


def _run(path: Path, ap: float, oracle: float) -> Path:
    (path / "analysis").mkdir(parents=True)
    analysis = {
        "metrics": {"AP": ap},
        "oracles": {"ground_truth_association": {"AP": oracle}},
        "errors": {"dAP": {"temporal": 0.1}},
        "tracking": {"identity_switches": 3, "hota": {"AssA": 0.5}},
    }
    (path / "analysis" / "analysis.json").write_text(json.dumps(analysis))
    return path


def test_gap_closed_is_relative_to_the_baseline_gap(tmp_path, capsys) -> None:
    # Baseline 0.40 with oracle association 0.60: a gap of 0.20; 0.45 closes a quarter, 0.30 loses half.
    runs = [_run(tmp_path / n, ap, 0.6) for n, ap in (("public", 0.4), ("better", 0.45), ("worse", 0.3))]
    assert main([str(r) for r in runs]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["run"] for r in rows] == ["public", "better", "worse"]
    assert [r["gap_closed"] for r in rows] == pytest.approx([0.0, 0.25, -0.5])
