"""End to end on synthetic data: COCO pre-training → video stage from its checkpoint; pseudo-pair and joint runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from crossvis.checkpoint.released import init_model
from crossvis.conf import CONF_DIR
from crossvis.evaluation.coco_eval import evaluate_coco
from crossvis.modeling.crossvis import CrossVIS

from helpers import TINY, run_module, spec_of, train_args

pytestmark = pytest.mark.filterwarnings("ignore:backbone frozen_bn=true with random")

# The tiny model's train sizes; a low score threshold so that a few steps already give detections.
COCO_ARGS = ["logger=csv", *TINY, "data.transform.train_short=[96,128]", "inference.detection.score_threshold=0.001"]
REINIT = ("head.cls_logits.", "embedding.", "identity_loss.")  # class logits (5 → 4 classes) and the new branch


def _coco_args(root: Path, run_dir: Path, *overrides: str) -> list[str]:
    return [f"data.root={root}", f"hydra.run.dir={run_dir}", *COCO_ARGS, *overrides]


def _csv_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def coco_run(synthetic_coco_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A few steps of ``experiment=coco_condinst`` (what ``make pretrain-coco`` runs), with COCO validation."""
    run_dir = tmp_path_factory.mktemp("coco_run")
    proc = run_module(
        "crossvis.cli.train",
        "experiment=coco_condinst",
        *_coco_args(synthetic_coco_root, run_dir, "trainer.max_steps=4"),
    )
    return run_dir, proc.stdout + proc.stderr


def test_pretrain_coco_reports_coco_ap(coco_run: tuple[Path, str], synthetic_coco_root: Path) -> None:
    run_dir, output = coco_run
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in output  # COCOeval summary
    assert "val/AP_mask" in output and "val/AP_box" in output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    results = json.loads((run_dir / "coco_results.json").read_text())
    gt = json.loads((synthetic_coco_root / "annotations" / "instances_val2017.json").read_text())
    assert results and {r["image_id"] for r in results} <= {im["id"] for im in gt["images"]}
    assert {r["category_id"] for r in results} <= {c["id"] for c in gt["categories"]}
    # the logged figures are COCOeval's on the written results json
    expected = evaluate_coco(gt, results, verbose=False)
    assert metrics["AP_mask"] == pytest.approx(expected["AP_mask"])
    assert metrics["AP_box"] == pytest.approx(expected["AP_box"])
    assert not any(row.get("train/loss_id") for row in _csv_rows(run_dir))  # no identity loss in the COCO stage


def test_coco_checkpoint_initialises_the_video_model(coco_run: tuple[Path, str]) -> None:
    """Only the class logits (5 COCO → 4 video classes) and the embedding branch keep their fresh init."""
    ckpt = coco_run[0] / "checkpoints" / "last.ckpt"
    stage1 = {k.removeprefix("model."): v for k, v in torch.load(ckpt, weights_only=False)["state_dict"].items()}
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose("train", overrides=TINY)
    torch.manual_seed(0)
    video = CrossVIS(spec_of(cfg.model), num_classes=4, num_identities=30)
    fresh = {k: v.clone() for k, v in video.state_dict().items()}
    init_model(video, ckpt)
    for key, value in video.state_dict().items():
        if key.startswith(REINIT):
            torch.testing.assert_close(value, fresh[key], msg=f"{key} should keep its fresh initialisation")
        else:
            torch.testing.assert_close(value, stage1[key], msg=f"{key} should come from the COCO stage")
    assert stage1["head.cls_logits.weight"].shape[0] == 5
    assert set(stage1) == {k for k in fresh if not k.startswith(REINIT[1:])}


def test_video_stage_from_coco_checkpoint(coco_run: tuple[Path, str], synthetic_root: Path, tmp_path: Path) -> None:
    ckpt = coco_run[0] / "checkpoints" / "last.ckpt"
    args = train_args(synthetic_root, tmp_path, f"model.init_from={ckpt}", "trainer.max_steps=3")
    run_module("crossvis.cli.train", *args)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"AP", "AP50", "AR10"} <= set(metrics)  # trained, then evaluated with the video protocol


def test_pseudo_pair_run_trains_crossover_and_pairwise_embedding(synthetic_coco_root: Path, tmp_path: Path) -> None:
    run_module(
        "crossvis.cli.train",
        "data=coco",
        "data.pseudo_pairs.enabled=true",
        "model.embedding.type=pairwise",
        "trainer.limit_val_batches=0",
        *_coco_args(synthetic_coco_root, tmp_path, "trainer.max_steps=3"),
    )
    rows = [r for r in _csv_rows(tmp_path) if r.get("train/loss")]
    assert len(rows) == 3
    assert any(float(r["train/loss_cross"]) > 0 for r in rows) and any(float(r["train/loss_id"]) > 0 for r in rows)


@pytest.mark.slow  # ~20 s; the mixing itself is tested in-process in test_coco_stage.py
def test_joint_run_logs_pairs_per_source(synthetic_root: Path, synthetic_coco_root: Path, tmp_path: Path) -> None:
    proc = run_module(
        "crossvis.cli.train",
        *train_args(
            synthetic_root,
            tmp_path,
            "data=synthetic_coco",
            f"data.coco.root={synthetic_coco_root}",
            "trainer.max_steps=4",
            "trainer.limit_val_batches=0",
        ),
    )
    assert "Joint training pairs per epoch:" in proc.stdout + proc.stderr
    last = [r for r in _csv_rows(tmp_path) if r.get("train/loss")][-1]
    video, coco = float(last.get("train/pairs_video") or 0), float(last.get("train/pairs_coco") or 0)
    assert video + coco == 4 * 2  # 4 steps of 2 pairs
    assert video > 0 and coco > 0
