"""The LightningModule's validation hooks on a tiny model: every validation video is tracked once, the
results go to the metric with the ground truth the module was given, and the metrics are logged."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir

import crossvis.engine.lightning_module as lightning_module
from crossvis.conf import CONF_DIR
from crossvis.data.datamodule import VISDataModule
from crossvis.engine.lightning_module import CrossVISModule

from helpers import TINY

FAKE_METRICS = {"AP": 0.25, "AP50": 0.5, "AP75": 0.125, "AR1": 0.375, "AR10": 0.625}


def _setup(synthetic_root: Path, with_ground_truth: bool) -> tuple[CrossVISModule, VISDataModule]:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["data=synthetic", f"data.root={synthetic_root}", "logger=none", *TINY])
    datamodule = VISDataModule(cfg.data)
    datamodule.setup("fit")
    module = CrossVISModule(
        cfg,
        datamodule.num_classes,
        datamodule.num_identities,
        datamodule.category_names,
        [datamodule.label_to_category_id(i) for i in range(datamodule.num_classes)],
        val_ground_truth=datamodule.val_ground_truth if with_ground_truth else None,
    )

    def one_square(image: torch.Tensor, orig_size: tuple[int, int], post) -> dict[str, torch.Tensor]:
        masks = torch.zeros(1, *orig_size, dtype=torch.bool)
        masks[0, 8:24, 8:40] = True
        return {
            "boxes": torch.tensor([[8.0, 8.0, 40.0, 24.0]]),
            "labels": torch.tensor([0]),
            "scores": torch.tensor([0.9]),
            "masks": masks,
            "embeddings": torch.ones(1, 4),
        }

    module.model.forward_infer = one_square  # the hooks' plumbing, not what a network learned
    return module, datamodule


def _validate(module: CrossVISModule, datamodule: VISDataModule) -> pl.Trainer:
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.validate(module, datamodule=datamodule, verbose=False)
    return trainer


def test_validation_tracks_every_video_and_logs_the_metric(synthetic_root: Path, monkeypatch) -> None:
    module, datamodule = _setup(synthetic_root, with_ground_truth=True)
    calls = []
    monkeypatch.setattr(
        lightning_module, "evaluate_results", lambda gt, results: calls.append((gt, results)) or FAKE_METRICS
    )
    trainer = _validate(module, datamodule)
    [(ground_truth, results)] = calls
    assert ground_truth is datamodule.val_ground_truth  # the ground truth the module was given
    videos = {v.id: v.length for v in datamodule.val_dataset.videos}
    assert sorted(r["video_id"] for r in results) == sorted(videos)  # one track per video (the same square)
    assert all(len(r["segmentations"]) == videos[r["video_id"]] for r in results)
    assert {k: float(v) for k, v in trainer.callback_metrics.items()} == {
        f"val/{k}": v for k, v in FAKE_METRICS.items()
    }
    assert module.last_validated_step == 0


def test_without_ground_truth_nothing_is_scored(synthetic_root: Path, monkeypatch) -> None:
    module, datamodule = _setup(synthetic_root, with_ground_truth=False)
    monkeypatch.setattr(lightning_module, "evaluate_results", lambda *args: pytest.fail("scored without ground truth"))
    trainer = _validate(module, datamodule)
    assert not trainer.callback_metrics and module.last_validated_step is None


class _RecordingWandb(pl.loggers.Logger):
    """Stands in for the W&B logger: records the analysis images and table."""

    def __init__(self) -> None:
        super().__init__()
        self.images, self.tables = {}, {}

    name = "fake"
    version = "0"

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        pass

    def log_image(self, key, images, step=None) -> None:
        self.images[key] = images

    def log_table(self, key, columns=None, data=None) -> None:
        self.tables[key] = (columns, data)


def test_analyze_true_writes_the_analysis_and_logs_plots_and_table(synthetic_root: Path, tmp_path, monkeypatch) -> None:
    import json

    from omegaconf import open_dict

    module, datamodule = _setup(synthetic_root, with_ground_truth=True)
    with open_dict(module.cfg):
        module.cfg.analyze = True
    monkeypatch.setattr(lightning_module, "WandbLogger", _RecordingWandb)
    logger = _RecordingWandb()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=logger,
        default_root_dir=str(tmp_path),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.validate(module, datamodule=datamodule, verbose=False)
    analysis = json.loads((tmp_path / "analysis" / "analysis.json").read_text())
    assert analysis["metrics"]["AP"] == pytest.approx(float(trainer.callback_metrics["val/AP"]))
    plots = {f"analysis/{n}" for n in ("errors", "by_length", "by_occlusion", "per_category")}
    assert set(logger.images) == plots | {"val/predictions"}  # beside the predicted tracks of one video
    assert all(Path(logger.images[k][0]).read_bytes()[:4] == b"\x89PNG" for k in plots)
    columns, [row] = logger.tables["analysis/errors"]
    assert columns[0] == "AP" and row[0] == pytest.approx(100 * analysis["errors"]["AP"])
