"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossvis.data.synthetic import write_synthetic


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset in the YouTube-VIS layout, written once per session (read-only).

    6 train videos x 8 frames and 2 valid videos at 128x224, seed 0: ``train.json`` (mixed mask
    encodings), ``train/JPEGImages``, ``valid.json`` (no annotations), ``valid_gt.json``,
    ``valid/JPEGImages``. Copy it before modifying anything.
    """
    return write_synthetic(
        tmp_path_factory.mktemp("synthetic") / "data", videos=6, frames=8, seed=0, height=128, width=224, val_videos=2
    )
