"""Collect a finished sweep into the paper's table layout.

    python -m crossvis.tables multirun/table6/2026-11-25_12-00-00 [--table table6] [--csv out.csv]
        [--official official.csv]

Each run folder holds Hydra's ``.hydra/config.yaml`` and the ``metrics.json`` written by
``crossvis.train``: the *local* numbers, measured on the split named by the run's
``data.validate_on`` (the ``experiment=tableN`` sweeps: the held-out training videos of
``holdout_split.json``). ``--official`` adds the evaluation server's scores of the runs that were
submitted: a CSV with a ``run`` column (the run folder, absolute or relative to the sweep folder
or the current directory) and metric columns (``AP``, ``AP50``, ... in percent, as the server
prints them). Runs that repeat a cell (seeds) are summarised as median ± std; cells with no
finished run are printed as ``missing``, and cells whose runs failed as ``failed: <reason>`` (the
``failed.json`` the run left; the full reasons are listed below the table). Each row also says which tracker its runs used
(``inference.tracker.scoring``), and the paper's figures stand beside ours.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crossvis.cli import user_errors
from crossvis.errors import InputNotFoundError, UserError
from crossvis.evaluation.tables import (
    TABLES,
    collect,
    error_table,
    load_runs,
    read_official,
    sweep_grid,
    to_csv,
    to_markdown,
)
from crossvis.files import atomic_path


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--table", choices=sorted(TABLES), help="default: the `table` key of the runs' config")
    parser.add_argument("--csv", type=Path, help="also write the cells as CSV here")
    parser.add_argument("--official", type=Path, help="CSV of official server scores: run,AP,AP50,... (percent)")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        raise InputNotFoundError(f"sweep folder {args.sweep_dir} does not exist (expected a Hydra multirun folder)")
    runs = load_runs(args.sweep_dir)
    name = args.table or next((r.config.get("table") for r in runs if r.config.get("table")), None)
    if name not in TABLES:
        raise UserError(f"cannot tell which table {args.sweep_dir} is; pass --table {{{','.join(TABLES)}}}")
    table = TABLES[name]
    finished, failed = [r for r in runs if r.failure is None], [r for r in runs if r.failure is not None]
    try:
        official = read_official(args.official, args.sweep_dir, finished) if args.official else None
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    collected = collect(table, runs, official)
    print(f"{len(finished)} finished runs" + (f", {len(failed)} failed" if failed else "") + f" in {args.sweep_dir}\n")
    print(to_markdown(table, collected))
    for run in failed:
        print(f"\nfailed: {run.path}: {run.failure}")
    errors = error_table(runs, sweep_grid(name).keys())
    if errors:
        print("\n" + errors)
    if args.csv:
        with atomic_path(args.csv) as tmp:
            tmp.write_text(to_csv(table, collected))
        print(f"\nCSV: {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
