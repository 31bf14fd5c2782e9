"""LightningModule: trains CrossVIS on frame pairs and validates it with online video inference."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_info
from torch import nn

from crossvis.data.transforms import load_frame_rgb, preprocess_for_inference
from crossvis.engine.inference import VideoInference, frame_settings
from crossvis.engine.run_config import model_spec, upgrade_run_config
from crossvis.engine.runtime import Runtime
from crossvis.engine.schedule import Schedule, WarmupMultiStepLR, global_batch, resolve_schedule
from crossvis.errors import config_node
from crossvis.evaluation.coco_eval import detections_to_coco, evaluate_coco
from crossvis.evaluation.metric import evaluate as evaluate_results
from crossvis.files import write_json_atomic
from crossvis.modeling.crossvis import CrossVIS
from crossvis.visualize import draw_tracks

LOSS_NAMES = ("loss_cls", "loss_box", "loss_ctr", "loss_mask", "loss_cross", "loss_id")
VAL_METRICS = ("AP", "AP50", "AP75", "AR1", "AR10")
NUM_PREVIEWS = 3  # frames of the first validation video drawn with their tracks for W&B
# detectron2's norm_module_types (solver/build.py): no weight decay on them (WEIGHT_DECAY_NORM = 0).
NORM_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def build_model(cfg_model: DictConfig | dict, num_classes: int, num_identities: int) -> CrossVIS:
    """``CrossVIS`` from the ``model`` config; an error about one of its settings names the config key."""
    spec = model_spec(_plain(cfg_model))
    with config_node("model"):
        return CrossVIS(spec, num_classes=num_classes, num_identities=num_identities)


def _plain(cfg: DictConfig | dict) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


class CrossVISModule(pl.LightningModule):
    """Owns the model, the optimiser schedule and the validation protocol.

    Everything needed to rebuild the model from a checkpoint (config, class and identity
    counts, category names and ids) is saved as hyper-parameters.
    """

    def __init__(
        self,
        cfg: DictConfig | dict,
        num_classes: int,
        num_identities: int,
        category_names: list[str],
        category_ids: list[int],
        val_ground_truth: dict | None = None,
        val_format: str = "vis",
    ) -> None:
        """``val_ground_truth`` (the validation split's json dict, None: no metrics) and ``val_format``
        ("vis": video tracking, "coco": per-image detections + COCOeval) describe the validation
        data of a training run; they are not hyper-parameters (a loaded checkpoint has neither)."""
        super().__init__()
        cfg = OmegaConf.create(upgrade_run_config(_plain(cfg)))
        frame_settings(cfg.inference)  # a bad inference setting fails now, not at the first validation
        self.save_hyperparameters(
            {
                "cfg": OmegaConf.to_container(cfg),
                "num_classes": num_classes,
                "num_identities": num_identities,
                "category_names": list(category_names),
                "category_ids": list(category_ids),
            }
        )
        self.cfg = cfg
        self.model = build_model(cfg.model, num_classes, num_identities)
        self.category_names = list(category_names)
        self.category_ids = list(category_ids)
        self.val_ground_truth = val_ground_truth
        self.val_format = val_format
        self._val_results: dict[int, list[dict]] = {}
        self._previews: list[np.ndarray] = []
        self.last_validated_step: int | None = None
        self._pair_counts: dict[str, int] = {}  # training pairs seen per source (video / coco)
        self.schedule: Schedule | None = None  # set by configure_optimizers

    # ----------------------------------------------------------------------------- inference
    # ------------------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        losses = self.model.forward_train(batch["images"], batch["image_sizes"], batch["targets"])
        total = sum(losses[name] for name in LOSS_NAMES if name in losses)  # Eq. 15 (no L_id without embeddings)
        batch_size = batch["images"].shape[0]
        for name in LOSS_NAMES:
            if name in losses:
                self.log(f"train/{name}", losses[name], batch_size=batch_size)
        for meta in batch["meta"]:
            source = meta.get("source", "video")
            self._pair_counts[source] = self._pair_counts.get(source, 0) + 1
        if len(self._pair_counts) > 1 or "coco" in self._pair_counts:  # COCO and joint runs: items per source so far
            for source, count in self._pair_counts.items():
                self.log(f"train/pairs_{source}", float(count), batch_size=batch_size, reduce_fx="max")
        self.log("train/loss", total, prog_bar=True, batch_size=batch_size)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=batch_size)
        return total

    def on_train_start(self) -> None:
        rank_zero_info(self.schedule.describe())
        # On resume Lightning restores the optimiser's learning rates as the interrupted run saved
        # them, i.e. from that run's schedule. Re-apply this run's schedule at the restored step, so
        # step, scheduler and logged LR agree from the start.
        scheduler = self.lr_schedulers()
        if self.global_step == 0 or not isinstance(scheduler, WarmupMultiStepLR):
            return
        scheduler.last_epoch = self.global_step  # the schedule counts optimiser steps
        for group in scheduler.optimizer.param_groups:
            group["lr"] = self.schedule.lr_at(self.global_step)

    # ---------------------------------------------------------------------------- validation
    def _still_images(self) -> bool:
        """COCO validation (per-image detections, COCOeval) instead of video tracking."""
        return self.val_format == "coco"

    def on_validation_epoch_start(self) -> None:
        self._val_results = {}
        self._previews = []
        self._inference = (
            None
            if self._still_images()
            else VideoInference.from_config(self.cfg.inference, self.model, self.category_ids)
        )

    @torch.no_grad()
    def _image_results(self, image_id: int, path: str) -> list[dict]:
        """Detections of one COCO image file as COCO results, at the test-time resize."""
        frame_model = Runtime().frame_model(self.model, frame_settings(self.cfg.inference))
        image = load_frame_rgb(path)
        tensor = preprocess_for_inference(image, self.cfg.inference.short, self.cfg.inference.max_size)
        return detections_to_coco(image_id, frame_model(tensor.to(self.device), image.shape[:2]), self.category_ids)

    def validation_step(self, video: dict[str, Any], batch_idx: int) -> None:
        if self._inference is None:  # a COCO image
            self._val_results[video["image_id"]] = self._image_results(video["image_id"], video["path"])
            return
        video_id = video["video_id"]
        wants_previews = batch_idx == 0 and isinstance(self.logger, WandbLogger)
        self._val_results[video_id] = self._inference.run_paths(
            video_id, video["frame_paths"], on_frame=self._keep_preview if wants_previews else None
        )

    def _keep_preview(self, index: int, frame: np.ndarray, detections: dict, track_ids: np.ndarray) -> None:
        if len(self._previews) < NUM_PREVIEWS:
            self._previews.append(draw_tracks(frame, detections, track_ids, self.category_names))

    def on_validation_epoch_end(self) -> None:
        if self._previews:
            self.logger.log_image("val/predictions", self._previews, step=self.global_step)
        # A distributed sampler pads ranks with repeated videos: keep one copy per video.
        per_video = dict(gather_objects(list(self._val_results.items())))
        results = [entry for entries in per_video.values() for entry in entries]
        self._val_results = {}
        ground_truth = self.val_ground_truth
        if self._still_images():
            self._log_coco(ground_truth, results)
            return
        if ground_truth is None:
            return
        metrics = evaluate_results(ground_truth, results)
        self.last_validated_step = self.global_step
        for name in VAL_METRICS:
            self.log(f"val/{name}", float(metrics[name]), rank_zero_only=True, sync_dist=False)
        if self.cfg.analyze and self.trainer.is_global_zero:
            self._log_analysis(ground_truth, results)

    def _log_analysis(self, ground_truth: dict, results: list[dict]) -> None:
        """``analyze=true``: the error analysis of this validation into ``<run>/analysis`` (the last one
        stays), and to W&B as plots and a ΔAP-per-error-type table."""
        from crossvis.evaluation.report import ERROR_COLUMNS, error_row, run_analysis

        analysis, plots = run_analysis(
            ground_truth, results, Path(self.trainer.default_root_dir) / "analysis", quiet=True
        )
        if isinstance(self.logger, WandbLogger):
            for path in plots:  # W&B reads the PNG from its path
                self.logger.log_image(f"analysis/{path.stem}", [str(path)], step=self.global_step)
            self.logger.log_table("analysis/errors", columns=ERROR_COLUMNS, data=[error_row(analysis)])

    def _log_coco(self, ground_truth: dict, results: list[dict]) -> None:
        """COCO mask/box AP (COCOeval) → ``val/AP_mask``, ``val/AP_box``, …; results json beside the run."""
        if self.trainer.is_global_zero:
            write_json_atomic(Path(self.trainer.default_root_dir) / "coco_results.json", results)  # COCO results format
        metrics = evaluate_coco(ground_truth, results, verbose=self.trainer.is_global_zero)
        self.last_validated_step = self.global_step
        for name, value in metrics.items():
            self.log(f"val/{name}", value, rank_zero_only=True, sync_dist=False)

    # ----------------------------------------------------------------------------- optimiser
    def configure_optimizers(self) -> dict[str, Any]:
        optim = self.cfg.optim
        trainer = self.trainer
        steps = trainer.estimated_stepping_batches  # inf when neither max_steps nor max_epochs is set
        total_steps = None if math.isinf(steps) else int(steps)
        self.schedule = resolve_schedule(optim, global_batch(self.cfg.data.batch_size, trainer), total_steps)
        params = param_groups(self.model, optim.weight_decay)
        lr = self.schedule.lr
        if optim.name == "sgd":  # the paper's optimiser
            optimizer = torch.optim.SGD(params, lr=lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
        elif optim.name == "adamw":  # converges faster from scratch: used by the CPU demo
            optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=optim.weight_decay)
        else:
            raise ValueError(f"optim.name: expected 'sgd' or 'adamw', got {optim.name!r}")
        scheduler = WarmupMultiStepLR(optimizer, self.schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters as detectron2's get_default_optimizer_params groups them.

    Parameters of normalisation layers get no weight decay (WEIGHT_DECAY_NORM = 0); every other
    parameter, biases included, gets ``weight_decay`` (WEIGHT_DECAY_BIAS defaults to WEIGHT_DECAY).
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if param.requires_grad and id(param) not in seen:
                seen.add(id(param))
                (no_decay if isinstance(module, NORM_TYPES) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def gather_objects(items: list) -> list:
    """Concatenate a list from every rank (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return items
    gathered: list[list] = [None] * dist.get_world_size()  # type: ignore[list-item]
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]
