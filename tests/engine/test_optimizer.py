"""Optimiser parameter groups as detectron2's: no weight decay on normalisation layers, biases decayed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from torch import nn

from crossvis.conf import CONF_DIR
from crossvis.engine.lightning_module import CrossVISModule


def test_norm_layers_have_no_weight_decay_biases_do():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(
            "train", overrides=["logger=none", "model=cpu", "model.head.num_convs=1", "model.mask_branch.num_convs=1"]
        )
    module = CrossVISModule(cfg, num_classes=3, num_identities=5, category_names=list("abc"), category_ids=[1, 2, 3])
    module.trainer = SimpleNamespace(world_size=1, accumulate_grad_batches=1, estimated_stepping_batches=100)
    optimizer = module.configure_optimizers()["optimizer"]
    decay_of = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    model = module.model
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(decay_of) == len(trainable)  # every trainable parameter exactly once
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm))]
    assert any(isinstance(m, nn.GroupNorm) for m in norms) and any(isinstance(m, nn.BatchNorm2d) for m in norms)
    for m in norms:
        for p in m.parameters(recurse=False):
            if p.requires_grad:
                assert decay_of[id(p)] == 0.0
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None]
    assert convs
    for m in convs:
        assert decay_of[id(m.weight)] == pytest.approx(1e-4) and decay_of[id(m.bias)] == pytest.approx(1e-4)
