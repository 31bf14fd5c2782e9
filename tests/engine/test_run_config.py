"""Run configs from checkpoints of earlier layouts: keys added since take the packaged defaults, the
post-processing stored in ``model.inference`` moves to ``inference``; the current layout is left as it is."""

from __future__ import annotations

import copy

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from crossvis.conf import CONF_DIR
from crossvis.engine.inference import frame_settings
from crossvis.engine.lightning_module import CrossVISModule, build_model
from crossvis.engine.run_config import upgrade_run_config
from crossvis.errors import ConfigError
from crossvis.modeling.specs import PostProcessing

from helpers import TINY_MODEL


def _run_config(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["data=synthetic", "logger=none", *TINY_MODEL, *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


def test_a_current_run_config_is_left_as_it_is() -> None:
    cfg = _run_config()
    assert upgrade_run_config(copy.deepcopy(cfg)) == cfg


def test_post_processing_of_model_inference_moves_to_inference_and_missing_keys_take_the_defaults() -> None:
    old = _run_config()
    del old["inference"]["detection"], old["inference"]["precision"], old["inference"]["channels_last"]
    old["model"]["inference"] = {
        "score_threshold": 0.1,
        "pre_nms_topk": 500,
        "nms_threshold": 0.5,
        "max_detections": 50,
        "mask_threshold": 0.4,
        "precision": "bf16",
        "channels_last": True,
    }
    del old["model"]["bn_batches"], old["model"]["embedding"]["normalizer"], old["model"]["backbone"]["input_format"]
    new = upgrade_run_config(copy.deepcopy(old))
    assert "inference" not in new["model"]
    assert (new["model"]["bn_batches"], new["model"]["embedding"]["normalizer"]) == ("per_position", "local")
    assert new["model"]["backbone"]["input_format"] == "RGB" and new["model"]["backbone"]["name"] == "regnetx_002"
    module = CrossVISModule(old, 2, 3, ["a", "b"], [1, 2])
    settings = frame_settings(module.cfg.inference)
    assert settings.detection == PostProcessing(0.1, 500, 0.5, 50, 0.4)
    assert (settings.precision, settings.channels_last) == ("bf16", True)
    assert module.hparams["cfg"] == new  # what a checkpoint of this module stores


def test_a_key_the_model_does_not_have_is_a_config_error() -> None:
    cfg = _run_config("+model.fcos.iou_type=giou")
    with pytest.raises(ConfigError, match=r"^model.fcos.iou_type: unknown setting; expected one of \['sizes_of"):
        build_model(cfg["model"], 2, 3)
