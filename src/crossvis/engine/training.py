"""Fit CrossVIS as a run config says: data module, model, callbacks, logger, resume; the train entry point's library."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationKeyError, InterpolationToMissingValueError, MissingMandatoryValue
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_info

from crossvis.checkpoint.released import init_model
from crossvis.checkpoint.training_state import (
    AtomicCheckpointIO,
    LastCheckpoint,
    RandomState,
    check_categories,
    read_training_checkpoint,
    resolve_resume,
)
from crossvis.cli import require_writable_dir
from crossvis.data.coco_datamodule import build_datamodule
from crossvis.data.datamodule import VISDataModule, official_split
from crossvis.engine.lightning_module import CrossVISModule
from crossvis.engine.schedule import set_training_length
from crossvis.engine.splits import evaluate_split
from crossvis.errors import ConfigError, config_node
from crossvis.files import write_json_atomic

WANDB_RUN_ID_KEY = "wandb_run_id"


def build_logger(cfg: DictConfig, resume_run_id: str | None = None) -> pl.loggers.Logger | bool:
    """The experiment logger of ``logger=...`` (``logger=none`` → no logger).

    When resuming, a W&B logger continues the W&B run recorded in the checkpoint.
    """
    if cfg.logger is None or cfg.logger.get("_target_") is None:
        return False
    is_wandb = OmegaConf.select(cfg.logger, "_target_", default="").endswith("WandbLogger")
    extra = {"id": resume_run_id, "resume": "allow"} if is_wandb and resume_run_id else {}
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    if is_wandb:
        extra.update(wandb_sweep_fields(cfg, overrides))
    logger = instantiate(cfg.logger, **extra)
    logger.log_hyperparams({**OmegaConf.to_container(cfg, resolve=True), "overrides": overrides})
    return logger


WANDB_TAG_CHARS = 64  # W&B rejects longer tags


def wandb_sweep_fields(cfg: DictConfig, overrides: list[str]) -> dict:
    """W&B ``group`` and ``tags`` so that a sweep's runs form one W&B table: the runs of a multi-run
    share a group (the paper table, else the sweep folder) and carry their overrides as tags."""
    fields = {"tags": [o[:WANDB_TAG_CHARS] for o in overrides]}
    if HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN":
        fields["group"] = cfg.get("table") or Path(HydraConfig.get().sweep.dir).name
    return fields


class WandbRunId(pl.Callback):
    """Records the W&B run id in every checkpoint, so that a resumed run continues the same W&B run."""

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        if isinstance(trainer.logger, WandbLogger):
            checkpoint[WANDB_RUN_ID_KEY] = trainer.logger.version


def check_resume(resume: str | None, datamodule: VISDataModule) -> str | None:
    """Check ``resume`` (if set): a training checkpoint of the data's categories; returns its W&B run id."""
    if not resume:
        return None
    checkpoint = read_training_checkpoint(resume)
    hparams = checkpoint["hyper_parameters"]
    train_vis = datamodule.train_vis
    check_categories(
        resume,
        hparams.get("category_names", []),
        hparams.get("category_ids", []),
        train_vis.json_path,
        [(c.id, c.name) for c in train_vis.categories],
    )
    return checkpoint.get(WANDB_RUN_ID_KEY)


def check_init_from(cfg: DictConfig) -> None:
    """The paper's tables start from CondInst trained on COCO: their ``model.init_from`` is required (``???``)."""
    try:
        OmegaConf.select(cfg, "model.init_from", throw_on_missing=True)
    except (MissingMandatoryValue, InterpolationToMissingValueError, InterpolationKeyError) as error:
        first_line = str(error).strip().splitlines()[0]  # "...: KEY" or "Interpolation key 'KEY' not found"
        missing = first_line.split("'")[1] if "'" in first_line else first_line.rsplit(": ", 1)[-1]
        raise ConfigError(
            f"{missing}: experiment={cfg.table} starts from CondInst MS R-50 1x trained on COCO, as every table of "
            f"the paper; pass {missing}=PATH (AdelaiDet's CondInst_MS_R_50_1x.pth, see the README's "
            "'Released weights', or a checkpoint of make pretrain-coco), or opt out explicitly with "
            "model.init_from=null (with model/backbone=resnet50 for timm's ImageNet weights)"
        ) from None


def train(cfg: DictConfig) -> tuple[pl.Trainer, CrossVISModule, Path]:
    """Fit a model as configured; returns the trainer, the module and the run's output folder."""
    check_init_from(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = require_writable_dir(HydraConfig.get().runtime.output_dir, "hydra.run.dir")
    datamodule = build_datamodule(cfg)  # video, COCO (data=coco) or joint (data=*_coco)
    datamodule.setup("fit")
    resume = resolve_resume(cfg.resume, output_dir)
    resume_run_id = check_resume(resume, datamodule)
    if datamodule.holdout_ids:
        datamodule.write_split(output_dir / "holdout_split.json")
    module = CrossVISModule(
        cfg,
        num_classes=datamodule.num_classes,
        num_identities=datamodule.num_identities,
        category_names=datamodule.category_names,
        category_ids=[datamodule.label_to_category_id(i) for i in range(datamodule.num_classes)],
        val_ground_truth=datamodule.val_ground_truth,
        val_format=datamodule.val_format,
    )
    if cfg.model.init_from:
        with config_node("model"):
            missing, unexpected = init_model(module.model, cfg.model.init_from, bool(cfg.model.init_strict))
        rank_zero_info(
            f"Initialised from {cfg.model.init_from}: {len(missing)} missing keys {missing}, "
            f"{len(unexpected)} unexpected keys {unexpected}"
        )
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    if datamodule.val_dataset is None:
        trainer_kwargs["limit_val_batches"] = 0
    validates = trainer_kwargs["limit_val_batches"] != 0
    has_ground_truth = validates and datamodule.val_ground_truth is not None
    checkpoint_dir = output_dir / "checkpoints"
    last = LastCheckpoint(checkpoint_dir, cfg.checkpoint.every_n_steps)
    callbacks: list[pl.Callback] = [
        last,
        WandbRunId(),
        RandomState(),
    ]
    if has_ground_truth:
        callbacks.append(
            ModelCheckpoint(
                dirpath=checkpoint_dir, filename="best", monitor=cfg.checkpoint.monitor, mode=cfg.checkpoint.mode
            )
        )
    trainer = pl.Trainer(
        **trainer_kwargs,
        logger=build_logger(cfg, resume_run_id),
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(output_dir),
    )
    set_training_length(trainer, cfg.optim, cfg.data.batch_size)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    last.hand_over(trainer)  # stopped by a signal (pre-emption, time limit): last.ckpt written, exit
    if has_ground_truth and module.last_validated_step != trainer.global_step:
        trainer.validate(module, datamodule=datamodule)  # runs stopped by max_steps mid-epoch
    metrics = {
        key.removeprefix("val/"): float(value)
        for key, value in trainer.callback_metrics.items()
        if key.startswith("val/")
    }
    if trainer.is_global_zero and metrics:
        # Read by crossvis.cli.tables to assemble the paper's tables from a sweep.
        write_json_atomic(output_dir / "metrics.json", metrics)
    if datamodule.holdout_ids and OmegaConf.select(cfg, "data.val.json") and trainer.is_global_zero:
        # val/* came from the held-out split: the official split still gets its CodaLab submission.zip.
        evaluate_split(module.to(trainer.strategy.root_device), official_split(cfg.data), output_dir)
    if isinstance(trainer.logger, WandbLogger) and trainer.is_global_zero:
        trainer.logger.experiment.finish()  # close the run here, so the next job of an in-process sweep starts its own
    rank_zero_info(f"Checkpoints: {output_dir / 'checkpoints'}")
    return trainer, module, output_dir
