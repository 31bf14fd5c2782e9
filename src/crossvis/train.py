"""Train CrossVIS (Hydra entry point).

    python -m crossvis.train data=synthetic data.root=DIR model/backbone=resnet18 trainer.max_steps=50
"""

from __future__ import annotations

from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_info

from crossvis.data.coco_datamodule import build_datamodule
from crossvis.io import write_json_atomic
from crossvis.lightning_module import CrossVISModule


def build_logger(cfg: DictConfig) -> pl.loggers.Logger | bool:
    """The experiment logger of ``logger=...`` (``logger=none`` → no logger)."""
    if cfg.logger is None or cfg.logger.get("_target_") is None:
        return False
    logger = instantiate(cfg.logger)
    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return logger


def train(cfg: DictConfig) -> tuple[pl.Trainer, CrossVISModule, Path]:
    """Fit a model as configured; returns the trainer, the module and the run's output folder."""
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    datamodule = build_datamodule(cfg)  # video, COCO (data=coco) or joint (data=*_coco)
    datamodule.setup("fit")
    module = CrossVISModule(
        cfg,
        num_classes=datamodule.num_classes,
        num_identities=datamodule.num_identities,
        category_names=datamodule.category_names,
        category_ids=[datamodule.label_to_category_id(i) for i in range(datamodule.num_classes)],
    )
    if cfg.model.init_from:
        missing, unexpected = module.model.load_init(cfg.model.init_from)
        rank_zero_info(
            f"Initialised from {cfg.model.init_from}: {len(missing)} missing keys {missing}, "
            f"{len(unexpected)} unexpected keys {unexpected}"
        )
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    if datamodule.val_dataset is None:
        trainer_kwargs["limit_val_batches"] = 0
    validates = trainer_kwargs["limit_val_batches"] != 0
    has_ground_truth = validates and datamodule.val_ground_truth is not None
    checkpoint = ModelCheckpoint(
        dirpath=output_dir / "checkpoints",
        filename="best" if has_ground_truth else "step{step}",
        monitor=cfg.checkpoint.monitor if has_ground_truth else None,
        mode=cfg.checkpoint.mode,
        save_last=True,
        auto_insert_metric_name=False,
    )
    trainer = pl.Trainer(
        **trainer_kwargs,
        logger=build_logger(cfg),
        callbacks=[checkpoint],
        default_root_dir=str(output_dir),
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.resume)
    if has_ground_truth and module.last_validated_step != trainer.global_step:
        trainer.validate(module, datamodule=datamodule)  # runs stopped by max_steps mid-epoch
    metrics = {
        key.removeprefix("val/"): float(value)
        for key, value in trainer.callback_metrics.items()
        if key.startswith("val/")
    }
    if trainer.is_global_zero and metrics:
        # Read by crossvis.tables to assemble the paper's tables from a sweep.
        write_json_atomic(output_dir / "metrics.json", metrics)
    if isinstance(trainer.logger, WandbLogger) and trainer.is_global_zero:
        trainer.logger.experiment.finish()  # close the run here, so the next job of an in-process sweep starts its own
    rank_zero_info(f"Checkpoints: {output_dir / 'checkpoints'}")
    return trainer, module, output_dir


@hydra.main(config_path="../../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
