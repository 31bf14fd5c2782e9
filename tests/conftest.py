"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossvis.data.synthetic import write_synthetic
from crossvis.data.synthetic_coco import write_synthetic_coco

from helpers import run_module, train_args


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


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smallest synthetic set (read-only): 2 train videos x 4 frames and 1 valid video at 64x96,
    seed 0; at 2 pairs a step, 4 steps an epoch (train with data.transform.short=64 data.transform.max_size=96)."""
    return write_synthetic(
        tmp_path_factory.mktemp("tiny") / "data", videos=2, frames=4, height=64, width=96, val_videos=1
    )


@pytest.fixture(scope="session")
def trained_run(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run folder of a briefly trained tiny model (ends with a validation), shared by several tests."""
    run_dir = tmp_path_factory.mktemp("trained")
    run_module(
        "crossvis.cli.train",
        *train_args(
            synthetic_root,
            run_dir,
            "trainer.max_steps=80",
            "optim.name=adamw",
            "optim.base_lr=0.002",
            "optim.base_batch_size=2",  # the tests' own batch: 10 warm-up steps at LR 0.002
            "optim.warmup_iters=10",
            "analyze=true",
        ),
    )
    return run_dir


@pytest.fixture(scope="session")
def synthetic_coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic COCO-format image set (read-only): 12 train + 4 val images, 128x224 and 224x128."""
    return write_synthetic_coco(
        tmp_path_factory.mktemp("synthetic_coco") / "coco", images=12, val_images=4, seed=0, height=128, width=224
    )
