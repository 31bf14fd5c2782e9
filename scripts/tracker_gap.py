"""How much of the association gap each tracker option closes, from ``crossvis.cli.evaluate analyze=true`` runs.

    python scripts/tracker_gap.py BASELINE_RUN OPTION_RUN [OPTION_RUN ...]

Each run folder holds ``analysis/analysis.json``. The gap is the baseline's AP with oracle
(ground-truth) association minus its AP; an option closes ``(AP_option - AP_baseline) / gap`` of it
(negative: it loses AP). Prints a Markdown table and then one JSON line with the same rows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from crossvis.cli import user_errors
from crossvis.files import read_json


def gap_rows(baseline: dict, options: dict[str, dict]) -> list[dict]:
    """One row per run (the baseline first): AP, oracle-association AP, share of the baseline's gap closed."""
    ap0 = baseline["metrics"]["AP"]
    gap = baseline["oracles"]["ground_truth_association"]["AP"] - ap0
    rows = []
    for name, a in options.items():
        ap = a["metrics"]["AP"]
        rows.append(
            {
                "run": name,
                "AP": ap,
                "oracle_association_AP": a["oracles"]["ground_truth_association"]["AP"],
                "gap_closed": (ap - ap0) / gap if gap > 0 else None,
                "dAP_temporal": a["errors"]["dAP"]["temporal"],
                "identity_switches": a["tracking"]["identity_switches"],
                "AssA": a["tracking"].get("hota", {}).get("AssA"),
            }
        )
    return rows


def to_markdown(rows: list[dict]) -> str:
    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.1f}"

    lines = [
        "| run | AP | oracle assoc. AP | gap closed | ΔAP temporal | ID sw | AssA |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        closed = "–" if r["gap_closed"] is None else f"{100 * r['gap_closed']:+.0f} %"
        cells = [r["run"], pct(r["AP"]), pct(r["oracle_association_AP"]), closed, pct(r["dAP_temporal"])]
        lines.append("| " + " | ".join([*cells, str(r["identity_switches"]), pct(r["AssA"])]) + " |")
    return "\n".join(lines)


@user_errors
def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    runs = {
        Path(a).name: read_json(Path(a) / "analysis" / "analysis.json", "error analysis (analyze=true)") for a in args
    }
    rows = gap_rows(next(iter(runs.values())), runs)
    print(to_markdown(rows))
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
