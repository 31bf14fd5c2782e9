"""Lightning training checkpoints: written atomically, ``last.ckpt`` on a step interval, checked when read.

(Model weights from other code bases, detectron2 / AdelaiDet / the authors' CrossVIS, are read and
mapped by :mod:`crossvis.checkpoint.released`.)

- :class:`AtomicCheckpointIO` writes every checkpoint to a temporary file beside it and renames
  it into place, so a run killed mid-write leaves the previous checkpoint intact.
- :class:`LastCheckpoint` keeps ``last.ckpt`` at the latest state: every
  ``checkpoint.every_n_steps`` optimiser steps, at the last step of training and when a stop signal
  (SIGUSR1/SIGUSR2/SIGTERM: pre-emption, time limits) arrives, whatever ``best.ckpt`` does. A killed
  run loses at most one interval; a signalled one nothing. :func:`resolve_resume` finds the newest
  checkpoint of a run folder (``resume=auto``).
- :class:`RandomState` saves the random streams, the data module the position in the pair order:
  a resumed run continues exactly as the uninterrupted one.
- :func:`read_training_checkpoint` and :func:`check_categories` turn a file that is not a checkpoint, or a
  checkpoint trained on other categories, into a user error before any work starts.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from crossvis.cli import require_file
from crossvis.errors import InputFormatError, UserError
from crossvis.files import atomic_path

CHECKPOINT_EXPECTED = "a Lightning checkpoint (.ckpt) written by crossvis.cli.train"
TORCH_RNG_KEY = "torch_rng_state"  # older checkpoints: torch only
RNG_KEY = "random_state"
# Stop (and resume later) on these: SLURM's --signal (USR1 for Lightning, USR2 for submitit), TERM (pre-emption).
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint writer, through a temporary file renamed onto the target."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``: the latest state every ``every_n_steps`` steps, at the end of training, and when
    the job is told to stop (:data:`STOP_SIGNALS`: SLURM's ``--signal``, time limits, pre-emption).

    A stop signal is acted on at the end of the current optimiser step, in the same loop state as the
    interval saves (so resuming from it is exact): ``last.ckpt`` is written, training stops and
    :meth:`hand_over` passes the signal on to the job runner.
    """

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
        self.stop_signal: int | None = None
        # The job runner's handlers (submitit requeues the job in its own), taken before Lightning's.
        self._runner_handlers = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # After Lightning's own handlers (which save mid-step, or raise at the next step), which its
        # teardown puts back once fitting ends.
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                signal.signal(signum, self._request_stop)

    def _request_stop(self, signum: int, frame: Any) -> None:
        self.stop_signal = signum  # acted on at the end of the current step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args)
        stopping = trainer.strategy.reduce_boolean_decision(self.stop_signal is not None, all=False)
        # The final step is rarely a multiple of the interval: save it here, in the same loop state as
        # the interval saves (a save after the loop ends resumes one step and one epoch ahead).
        if (stopping or _is_final_batch(trainer)) and not self._should_skip_saving_checkpoint(trainer):
            self._save_none_monitor_checkpoint(trainer, self._monitor_candidates(trainer))
        if stopping:
            self.stop_signal = self.stop_signal or signal.SIGTERM  # the ranks that got no signal themselves
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Training stopped otherwise (e.g. early stopping): keep its final state too.
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_none_monitor_checkpoint(trainer, self._monitor_candidates(trainer))

    def hand_over(self, trainer: pl.Trainer) -> None:
        """After a stop signal: give it to the job runner's handler (submitit requeues the job there);
        in a SLURM job without one, requeue it with ``scontrol``; then exit with status 128 + signal."""
        if self.stop_signal is None:
            return
        name = signal.Signals(self.stop_signal).name
        rank_zero_info(
            f"{name}: stopped after step {trainer.global_step}, saved in {Path(self.dirpath) / 'last.ckpt'}; "
            "the same command with resume=auto continues it exactly"
        )
        handler = self._runner_handlers.get(self.stop_signal)
        if callable(handler):
            handler(self.stop_signal, None)
        elif os.environ.get("SLURM_JOB_ID") and trainer.is_global_zero:
            requeue_slurm_job()
        raise SystemExit(128 + self.stop_signal)


def requeue_slurm_job() -> None:
    """Put this SLURM job (or array task) back in the queue: it starts again with the same command."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ["SLURM_JOB_ID"]
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if result.returncode != 0:
        rank_zero_warn(f"scontrol requeue {job} failed ({result.returncode}): {result.stderr.strip()}")


def resolve_resume(resume: str | None, run_dir: str | os.PathLike) -> str | None:
    """``resume=auto``: the newest readable training checkpoint of the run folder (``checkpoints/*.ckpt``
    and Lightning's SLURM ``hpc_ckpt_*.ckpt``), or None to start afresh; any other value unchanged."""
    if resume != "auto":
        return resume
    run_dir = Path(run_dir)
    found = []
    for path in [*run_dir.glob("checkpoints/*.ckpt"), *run_dir.glob("hpc_ckpt_*.ckpt")]:
        try:
            step = read_training_checkpoint(path)["global_step"]
        except UserError as error:  # e.g. cut short by a full disk: an older one will do
            rank_zero_warn(f"resume=auto: skipping {path}: {error}")
            continue
        found.append(((step, path.name == "last.ckpt", path.stat().st_mtime), str(path)))
    newest = max(found)[1] if found else None
    rank_zero_info(f"resume=auto: {newest or f'no checkpoint in {run_dir}, starting afresh'}")
    return newest


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
