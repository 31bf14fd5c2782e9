"""crossvis.checkpoint.loading: a checkpoint written before the `inference` config group keeps its test-time settings."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from crossvis.checkpoint.loading import load_module
from crossvis.conf import CONF_DIR
from crossvis.engine.lightning_module import CrossVISModule

from helpers import TINY_MODEL


def test_checkpoint_from_before_the_inference_group_gets_its_resize_and_tracker(tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["data=synthetic", "logger=none", *TINY_MODEL])
    old = OmegaConf.to_container(cfg, resolve=True)
    del old["inference"]  # the layout of earlier checkpoints: tracker at the top, resize in data.transform
    old["tracker"] = {"match_threshold": 0.3, "scoring": "masktrack"}
    old["data"]["transform"].update(short=100, max_size=180)
    module = CrossVISModule(old, 2, 3, ["a", "b"], [4, 7])
    path = tmp_path / "old.ckpt"
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "global_step": 0,
            "pytorch-lightning_version": pl.__version__,
        },
        path,
    )
    loaded = load_module(path)
    inference = OmegaConf.to_container(loaded.cfg.inference)
    assert (inference["short"], inference["max_size"]) == (100, 180)
    assert inference["tracker"]["match_threshold"] == 0.3 and inference["tracker"]["scoring"] == "masktrack"
    assert inference["tracker"]["association"] == "greedy"  # keys added since: the packaged defaults'
    assert inference["detection"]["score_threshold"] == 0.05 and inference["precision"] == 32
    assert loaded.category_ids == [4, 7] and not loaded.training
