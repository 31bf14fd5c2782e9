"""`make demo` (crossvis.cli.quickstart) end to end at a tiny size, with the recipe's two forked training processes."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import TINY_MODEL, last_json_line, run_module


def test_quickstart_trains_in_two_processes_and_reports_the_steps_of_the_evaluated_weights(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = run_module(
        "crossvis.cli.quickstart",
        f"output={out}",
        *TINY_MODEL,
        "synthetic.videos=3",
        "synthetic.frames=4",
        "synthetic.val_videos=1",
        "synthetic.height=96",
        "synthetic.width=160",
        "data.transform.short=96",
        "data.transform.max_size=160",
        "trainer.max_steps=3",
        "trainer.enable_progress_bar=false",
    )
    # the recipe's trainer: the fit runs in 2 forked processes, so the steps come from last.ckpt
    assert "Training steps: 3," in proc.stdout
    assert 0.0 <= last_json_line(proc.stdout)["AP"] <= 1.0
    for name in ("checkpoints/last.ckpt", "results.json", "submission.zip", "tracks.mp4", "tracks.gif"):
        assert (out / name).is_file(), name
    assert re.search(r"total time: \d+\.\d min", proc.stdout)
