"""A run's config as the model and the online runner read it, from a fresh run or from any checkpoint.

Checkpoints store the resolved run config. Those of earlier versions lack keys added since (they
take the packaged defaults, which are the values the code used when the key did not exist yet),
kept the test-time resize in ``data.transform`` and the tracker at the top level (before the
``inference`` group), and the per-frame post-processing in ``model.inference`` (now
``inference.detection``, ``inference.precision``, ``inference.channels_last``).
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from crossvis.conf import CONF_DIR
from crossvis.errors import config_node
from crossvis.modeling.specs import CrossVISSpec, spec_from_dict

# Keys of the model config read by training (model.init_from), not by the network.
TRAINING_KEYS = ("init_from", "init_strict")
RUNTIME_KEYS = ("precision", "channels_last")


def _packaged(path: str) -> dict[str, Any]:
    """A packaged yaml file as a plain dict, without its Hydra defaults list."""
    values = OmegaConf.to_container(OmegaConf.load(CONF_DIR / path))
    values.pop("defaults", None)
    return values


def _merge(*trees: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts merged key by key, later ones winning."""
    return OmegaConf.to_container(OmegaConf.merge(*trees))


def default_inference(short: int, max_size: int) -> dict[str, Any]:
    """The inference group's defaults (conf/inference/default.yaml) with the test-time resize ``short``, ``max_size``."""
    return {**_packaged("inference/default.yaml"), "short": short, "max_size": max_size}


def upgrade_run_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` (a resolved run config) in the current layout, with missing model and inference keys filled."""
    cfg = dict(cfg)
    model_defaults = {**_packaged("model/default.yaml"), "backbone": _packaged("model/backbone/_timm.yaml")}
    model = _merge(model_defaults, cfg["model"])
    legacy = model.pop("inference", {})
    inference = cfg.get("inference")
    if inference is None:
        transform = cfg["data"]["transform"]
        inference = {
            "short": transform["short"],
            "max_size": transform["max_size"],
            "tracker": cfg.pop("tracker", None) or {},
        }
    inference_defaults = default_inference(inference["short"], inference["max_size"])
    moved = {
        "detection": {key: value for key, value in legacy.items() if key not in RUNTIME_KEYS},
        **{key: legacy[key] for key in RUNTIME_KEYS if key in legacy},
    }
    cfg.update(model=model, inference=_merge(inference_defaults, moved, inference))
    cfg.setdefault("analyze", _packaged("train.yaml")["analyze"])
    return cfg


def model_spec(cfg_model: dict[str, Any]) -> CrossVISSpec:
    """The network's settings from the (resolved) ``model`` config; a bad value is a config error naming its key."""
    with config_node("model"):
        return spec_from_dict(CrossVISSpec, cfg_model, ignore=TRAINING_KEYS)
