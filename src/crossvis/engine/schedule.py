"""The LR schedule of a run: detectron2's WarmupMultiStepLR, scaled to the global batch as detectron2's
``REFERENCE_WORLD_SIZE`` rule scales it (``DefaultTrainer.auto_scale_workers``).

The ``optim`` config states a schedule at ``base_batch_size`` pairs: ``unit: iterations`` (the public
code's ``configs/CrossVIS/R_50_1x.yaml``: 23000 iterations at 16 pairs, ×0.1 at 15000 and 21000) or
``unit: epochs`` (the paper's text: 12 epochs, ×0.1 at epochs 9 and 11; ``optim=paper_12ep``). With a
global batch of G pairs the LR is multiplied by G / base_batch_size and every iteration count (length,
steps, warm-up) divided by it. ``trainer.max_steps`` (when set) replaces the length and keeps the
steps at the same fractions of training.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

SCHEDULE_UNITS = ("iterations", "epochs")


@dataclass(frozen=True)
class Schedule:
    """An LR schedule in optimiser steps: linear warm-up from ``warmup_factor``, ×``gamma`` at each milestone."""

    lr: float
    total_steps: int
    milestones: tuple[int, ...]
    warmup_iters: int
    warmup_factor: float
    gamma: float
    global_batch: int

    def lr_at(self, step: int) -> float:
        """The LR of optimiser step ``step`` (0-based), evaluated in detectron2's order of operations."""
        warmup = 1.0
        if step < self.warmup_iters:
            alpha = step / self.warmup_iters
            warmup = self.warmup_factor * (1 - alpha) + alpha
        return self.lr * warmup * self.gamma ** bisect.bisect_right(self.milestones, step)

    def describe(self) -> str:
        steps = ", ".join(str(m) for m in self.milestones) or "none"
        return (
            f"LR schedule: global batch {self.global_batch} pairs, LR {self.lr:g}, {self.total_steps} iterations, "
            f"x{self.gamma:g} at {steps}, linear warm-up over {self.warmup_iters} iterations from x{self.warmup_factor:g}"
        )


def resolve_schedule(optim: DictConfig, global_batch: int, total_steps: int | None = None) -> Schedule:
    """The ``optim`` config's schedule for a global batch of ``global_batch`` pairs.

    ``total_steps``: the run's length in optimiser steps when the trainer fixes it (``trainer.max_steps``,
    ``trainer.max_epochs``, or an epoch schedule's epochs); the steps keep their fractions of training.
    """
    if optim.unit not in SCHEDULE_UNITS:
        raise ValueError(f"optim.unit: expected one of {SCHEDULE_UNITS}, got {optim.unit!r}")
    if list(optim.steps) != sorted(optim.steps) or any(s > optim.length for s in optim.steps):
        raise ValueError(
            f"optim.steps: expected increasing values up to optim.length={optim.length}, got {optim.steps}"
        )
    scale = global_batch / optim.base_batch_size
    length, milestones = int(optim.length), [int(s) for s in optim.steps]
    if optim.unit == "iterations":
        length, milestones = int(round(length / scale)), [int(round(s / scale)) for s in milestones]
    elif total_steps is None:
        raise ValueError("optim.unit=epochs: the run's number of optimiser steps is unknown")
    if total_steps is not None and total_steps != length:  # the same shape over the run's length
        milestones = [int(round(m * total_steps / length)) for m in milestones]
        length = total_steps
    return Schedule(
        lr=optim.base_lr * scale,  # linear scaling rule
        total_steps=length,
        milestones=tuple(milestones),
        warmup_iters=int(round(optim.warmup_iters / scale)),
        warmup_factor=float(optim.warmup_factor),
        gamma=float(optim.gamma),
        global_batch=global_batch,
    )


def global_batch(batch_size: int, trainer: pl.Trainer) -> int:
    """Pairs per optimiser step: per process × processes (devices × nodes) × accumulated batches."""
    return batch_size * trainer.world_size * trainer.accumulate_grad_batches


def set_training_length(trainer: pl.Trainer, optim: DictConfig, batch_size: int) -> None:
    """Train for the schedule's length unless ``trainer.max_steps`` or ``trainer.max_epochs`` is set."""
    if trainer.max_steps > 0 or (trainer.max_epochs or -1) > 0:
        return
    if optim.unit == "epochs":
        trainer.fit_loop.max_epochs = int(optim.length)
    else:
        trainer.fit_loop.epoch_loop.max_steps = resolve_schedule(optim, global_batch(batch_size, trainer)).total_steps


class WarmupMultiStepLR(torch.optim.lr_scheduler.LRScheduler):
    """Every parameter group at ``schedule.lr_at(step)``.

    The schedule is not part of the state dict: a resumed run follows its own configuration's
    schedule from the restored step.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Schedule) -> None:
        self.schedule = schedule
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        return [self.schedule.lr_at(self.last_epoch) for _ in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {key: value for key, value in super().state_dict().items() if key != "schedule"}
