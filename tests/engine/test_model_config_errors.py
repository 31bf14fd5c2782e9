"""Model code names its own arguments in errors; building the model from the composed config names the config key."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from crossvis.conf import CONF_DIR
from crossvis.engine.lightning_module import CrossVISModule, build_model
from crossvis.errors import ConfigError

from helpers import TINY_MODEL


def _model_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[*TINY_MODEL, "logger=none", *overrides])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.embedding.type=local", "model.embedding.type='local': expected one of"),
        ("model.embedding.loss=triplet", "model.embedding.loss='triplet': expected one of"),
        ("model.fcos.box_loss=l1", "model.fcos.box_loss='l1': expected one of"),
        ("model.fcos.sizes_of_interest=[64,128]", "model.fcos.sizes_of_interest has 2 entries, expected 4"),
        ("model.upsample=nearest", "model.upsample='nearest': expected one of"),
        ("model.loss_normalizer=frame", "model.loss_normalizer='frame': expected one of"),
        ("model.bn_batches=pairs", "model.bn_batches='pairs': expected one of"),
        ("model.embedding.normalizer=global", "model.embedding.normalizer='global': expected one of"),
        ("+model.fcos.iou_type=giou", "model.fcos.iou_type: unknown setting; expected one of"),
        ("model.backbone.input_format=YUV", "model.backbone.input_format='YUV': expected RGB or BGR"),
        ("model.backbone.freeze_at=9", "model.backbone.freeze_at=9: 'regnetx_002' has no stage with stride 512"),
        ("model.backbone.checkpoint=/nonexistent.pth", "model.backbone.checkpoint: no such file /nonexistent.pth"),
    ],
)
def test_bad_model_setting_is_a_config_error_naming_the_key(override: str, message: str) -> None:
    cfg = _model_cfg(override)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        build_model(cfg.model, 3, 4)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        CrossVISModule(cfg, 3, 4, ["a", "b", "c"], [1, 2, 3])
