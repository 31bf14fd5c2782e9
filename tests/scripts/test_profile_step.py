"""scripts/profile_step.py: every stage of a training step is timed and the shares cover the step."""

from __future__ import annotations

import sys
from pathlib import Path

from helpers import TINY_MODEL

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from profile_step import profile  # noqa: E402


def test_profile_times_every_stage_of_a_step(synthetic_root: Path) -> None:
    seconds = profile(str(synthetic_root), [*TINY_MODEL, "data.transform.short=128", "data.transform.max_size=224"])
    assert list(seconds) == [
        "data (load, resize, flip, collate)",
        "forward: backbone",
        "forward: FPN, FCOS head, mask branch, embedding head",
        "forward: targets, dynamic mask head, crossover, losses",
        "backward",
        "optimizer",
    ]
    # each stage costs something; a stage whose hooks never fired would be 0 or negative
    assert all(value > 0 for value in seconds.values()), seconds
