"""Running the Hydra entry points as a user would, with a model small enough for tests."""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from crossvis.conf import CONF_DIR
from crossvis.engine.inference import frame_settings
from crossvis.engine.run_config import default_inference, model_spec
from crossvis.modeling.specs import CrossVISSpec, PostProcessing

MODEL_CONF = CONF_DIR / "model"

# conf/model/default.yaml shrunk (ResNet-18 from scratch), for tests that build a CrossVIS directly.
TINY_DEFAULT_MODEL = [
    "backbone=resnet18",
    "backbone.pretrained=false",
    "fpn_channels=32",
    "head.channels=32",
    "head.num_convs=1",
    "mask_branch.channels=16",
    "mask_branch.num_convs=1",
    "embedding.dim=16",
]


def compose_tiny_model(*overrides: str) -> DictConfig:
    """The model group's default config at :data:`TINY_DEFAULT_MODEL` size, plus ``overrides``."""
    with initialize_config_dir(config_dir=str(MODEL_CONF), version_base=None):
        return compose("default", overrides=[*TINY_DEFAULT_MODEL, *overrides])


def spec_of(cfg_model: DictConfig) -> CrossVISSpec:
    """The typed settings (what :class:`CrossVIS` takes) of a composed ``model`` config."""
    return model_spec(OmegaConf.to_container(cfg_model, resolve=True))


def tiny_spec(*overrides: str) -> CrossVISSpec:
    """:func:`compose_tiny_model` as the typed settings :class:`CrossVIS` takes."""
    return spec_of(compose_tiny_model(*overrides))


def post_processing(**changes: float) -> PostProcessing:
    """CondInst's per-frame post-processing at the inference group's defaults, with ``changes``."""
    settings = frame_settings(default_inference(1, 1)).detection
    return dataclasses.replace(settings, **changes)


def group_option(group: str, name: str) -> DictConfig:
    """Option ``name`` of config group ``group`` (e.g. ``data``, ``model/backbone``) with its base merged in,
    detached from the run config it was composed in (its relative interpolations resolve inside it)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        node = OmegaConf.select(compose("train", overrides=[f"{group}={name}"]), group.replace("/", "."))
    return OmegaConf.create(OmegaConf.to_container(node, resolve=False))


# The CPU model shrunk further (used by every entry point that builds a model).
TINY_MODEL = [
    "model=cpu",
    "model.fpn_channels=32",
    "model.head.channels=32",
    "model.head.num_convs=1",
    "model.mask_branch.channels=16",
    "model.mask_branch.num_convs=1",
    "model.embedding.dim=16",
]
# Training runs: the tiny model, frames kept at the synthetic fixture's 128x224.
TINY = [
    *TINY_MODEL,
    "data.transform.short=128",
    "data.transform.max_size=224",
    "data.batch_size=2",
    "data.num_workers=0",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
]


# Runs crossvis.cli.train with a callback that SIGKILLs the process right after optimiser step K
# (before any checkpoint of that step: Lightning runs checkpoint callbacks last).
KILL_AT_STEP = """
import os, signal, sys
import pytorch_lightning as pl

class KillAt(pl.Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == int(os.environ["KILL_AT_STEP"]):
            os.kill(os.getpid(), signal.SIGKILL)

class Trainer(pl.Trainer):
    def __init__(self, *args, callbacks=(), **kwargs):
        super().__init__(*args, callbacks=[*callbacks, KillAt()], **kwargs)

pl.Trainer = Trainer
import runpy
runpy.run_module("crossvis.cli.train", run_name="__main__", alter_sys=True)  # as `python -m crossvis.cli.train`
"""


def run_module(module: str, *args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m module args``; on an unexpected exit code the assertion shows the output."""
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, (
            f"{module} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def train_args(data_root: Path, run_dir: Path, *overrides: str) -> list[str]:
    return ["data=synthetic", f"data.root={data_root}", f"hydra.run.dir={run_dir}", "logger=csv", *TINY, *overrides]


def logged_losses(run_dir: Path) -> list[tuple[int, float]]:
    """(step, train/loss) rows of the CSV logger."""
    with open(run_dir / "csv" / "metrics.csv") as f:
        return [(int(row["step"]), float(row["train/loss"])) for row in csv.DictReader(f) if row.get("train/loss")]


def last_json_line(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])
