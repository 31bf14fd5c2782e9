"""Lightning training checkpoints: written atomically, ``last.ckpt`` on a step interval, checked when read.

(Model weights from other code bases, detectron2 / AdelaiDet / the authors' CrossVIS, are read and
mapped by :mod:`crossvis.modeling.released_weights`.)

- :class:`AtomicCheckpointIO` writes every checkpoint to a temporary file beside it and renames
  it into place, so a run killed mid-write leaves the previous checkpoint intact.
- :class:`LastCheckpoint` keeps ``last.ckpt`` at the latest state: every
  ``checkpoint.every_n_steps`` optimiser steps and at the last step of training, whatever
  ``best.ckpt`` does. A killed run loses at most one interval.
- :func:`read_training_checkpoint` and :func:`check_categories` turn a file that is not a checkpoint, or a
  checkpoint trained on other categories, into a user error before any work starts.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

from crossvis.cli import require_file
from crossvis.errors import InputFormatError, UserError
from crossvis.io import atomic_path

CHECKPOINT_EXPECTED = "a Lightning checkpoint (.ckpt) written by crossvis.train"
TORCH_RNG_KEY = "torch_rng_state"  # older checkpoints: torch only
RNG_KEY = "random_state"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint writer, through a temporary file renamed onto the target."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``: the latest state every ``every_n_steps`` steps and at the end of training."""

    def __init__(self, dirpath: str | os.PathLike, every_n_steps: int) -> None:
        if not isinstance(every_n_steps, int) or isinstance(every_n_steps, bool) or every_n_steps < 1:
            raise UserError(f"checkpoint.every_n_steps: expected a positive integer, got {every_n_steps!r}")
        super().__init__(
            dirpath=dirpath,
            filename="last",
            monitor=None,
            save_top_k=1,
            every_n_train_steps=every_n_steps,
            save_on_train_epoch_end=False,
            enable_version_counter=False,  # overwrite last.ckpt, never last-v1.ckpt
        )

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args)
        # The final step is rarely a multiple of the interval: save it here, in the same loop state
        # as the interval saves (a save after the loop ends resumes one step and one epoch ahead).
        if _is_final_batch(trainer) and not self._should_skip_saving_checkpoint(trainer):
            self._save_none_monitor_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Training stopped otherwise (e.g. early stopping): keep its final state too.
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_none_monitor_checkpoint(trainer, self._monitor_candidates(trainer))


class RandomState(pl.Callback):
    """Saves and restores the process's global random streams (torch, CUDA, numpy, Python), so a resumed
    run draws what the interrupted run would have (the model samples positives with ``torch.randperm``).

    The data pipeline uses none of them: every random choice of a training item (reference frame,
    scale, flip) comes from a generator seeded with (seed, epoch, index), in whichever loader worker
    it is made, and the loader has its own generator. Stored as tensors and plain numbers, so
    checkpoints stay loadable with ``weights_only=True``.
    """

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        np_state = np.random.get_state(legacy=False)
        checkpoint[RNG_KEY] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {
                **np_state,
                "state": {
                    "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                    "pos": int(np_state["state"]["pos"]),
                },
            },
            "python": random.getstate(),
        }

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        state = checkpoint.get(RNG_KEY)
        if state is None:  # checkpoints from before the streams were saved
            if TORCH_RNG_KEY in checkpoint:
                torch.set_rng_state(checkpoint[TORCH_RNG_KEY])
            return
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        np_state = state["numpy"]
        key = np_state["state"]["key"].numpy().astype(np.uint32)
        np.random.set_state({**np_state, "state": {"key": key, "pos": np_state["state"]["pos"]}})
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))


def _is_final_batch(trainer: pl.Trainer) -> bool:
    """True in ``on_train_batch_end`` of the batch after which ``max_steps`` or ``max_epochs`` stops training."""
    if 0 < trainer.max_steps <= trainer.global_step:
        return True
    last_epoch = (
        trainer.max_epochs is not None and trainer.max_epochs > 0 and trainer.current_epoch + 1 >= trainer.max_epochs
    )
    return last_epoch and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch


def read_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint on the CPU (tensors and plain containers only) or raise a user error naming it."""
    path = require_file(path, "checkpoint", CHECKPOINT_EXPECTED)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types (UnpicklingError, RuntimeError, EOFError, ...)
        # torch's own message advises the unsafe weights_only=False: name the file and the type only.
        raise InputFormatError(
            f"checkpoint: cannot read {path} ({type(error).__name__}); expected {CHECKPOINT_EXPECTED}"
        ) from None
    missing = [
        k
        for k in ("state_dict", "hyper_parameters", "global_step")
        if not isinstance(checkpoint, dict) or k not in checkpoint
    ]
    if missing:
        raise InputFormatError(f"checkpoint: {path} has no {missing}; expected {CHECKPOINT_EXPECTED}")
    return checkpoint


def check_categories(
    checkpoint: str | os.PathLike,
    names: Sequence[str],
    ids: Sequence[int],
    data_json: str | os.PathLike,
    data_categories: Sequence[tuple[int, str]],
) -> None:
    """Fail, naming both lists, unless the checkpoint's categories (id, name) are the data's, in order."""
    trained = [(int(i), str(n)) for i, n in zip(ids, names)]
    expected = [(int(i), str(n)) for i, n in data_categories]
    if trained != expected or len(names) != len(ids):
        raise UserError(
            f"checkpoint {checkpoint} was trained on other categories than {data_json}: "
            f"checkpoint (id, name) {trained}; data {expected}. Use a checkpoint trained on this dataset."
        )
