"""Backbone + FPN: shapes for every configured backbone, freezing, normalisation, checkpoints, grad scale."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from omegaconf import OmegaConf
from torchvision.ops import FrozenBatchNorm2d

from crossvis.modeling.backbone import Backbone, BackboneFPN, pad_to_multiple

pytestmark = pytest.mark.filterwarnings("ignore:model.backbone.frozen_bn=true with random")

CONF = Path(__file__).resolve().parents[1] / "conf" / "model" / "backbone"


def backbone_cfg(name: str, **overrides):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    cfg.pretrained = False
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def test_pad_to_multiple_pads_bottom_right_with_zeros():
    x = torch.ones(1, 3, 97, 131)
    y = pad_to_multiple(x, 32)
    assert y.shape == (1, 3, 128, 160)
    assert y[..., :97, :131].eq(1).all() and y[..., 97:, :].eq(0).all() and y[..., :, 131:].eq(0).all()
    assert pad_to_multiple(y, 32) is y


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet101", "dla34"])
@pytest.mark.parametrize("size", [(360, 640), (97, 131)])
def test_fpn_levels_have_strides_8_to_128(name, size):
    torch.manual_seed(0)
    model = BackboneFPN(backbone_cfg(name), channels=32, grad_scale=0.1).eval()
    images = pad_to_multiple(torch.rand(1, 3, *size) * 255, 32)
    hp, wp = images.shape[-2:]
    with torch.no_grad():
        feats = model(images)
    expected = [(hp // s, wp // s) for s in (8, 16, 32)]
    expected += [(-(-expected[-1][0] // 2), -(-expected[-1][1] // 2))]
    expected += [(-(-expected[-1][0] // 2), -(-expected[-1][1] // 2))]
    assert [tuple(f.shape) for f in feats] == [(1, 32, h, w) for h, w in expected]
    assert all(torch.isfinite(f).all() for f in feats)


def test_stem_and_first_stage_frozen_with_frozen_bn():
    bb = Backbone(backbone_cfg("resnet18"))
    frozen = {n.split(".")[0] for n, p in bb.body.named_parameters() if not p.requires_grad}
    trainable = {n.split(".")[0] for n, p in bb.body.named_parameters() if p.requires_grad}
    assert frozen == {"conv1", "layer1"}  # bn1 is a FrozenBatchNorm2d: buffers only
    assert trainable == {"layer2", "layer3", "layer4"}
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in bb.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in bb.modules())

    dla = Backbone(backbone_cfg("dla34", freeze_at=1, frozen_bn=False))
    frozen = {n.split(".")[0] for n, p in dla.body.named_parameters() if not p.requires_grad}
    assert frozen == {"base_layer", "level0", "level1"}  # everything up to the stride-2 output
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in dla.modules())
    assert all(p.requires_grad for p in Backbone(backbone_cfg("resnet18", freeze_at=0)).parameters())


def test_frozen_bn_on_random_weights_warns():
    with pytest.warns(UserWarning, match="frozen_bn=false"):
        Backbone(backbone_cfg("resnet18"))


def test_pixels_normalised_with_timm_mean_std():
    bb = Backbone(backbone_cfg("resnet18"))
    mean = torch.tensor([0.485, 0.456, 0.406]) * 255
    std = torch.tensor([0.229, 0.224, 0.225]) * 255
    assert torch.allclose(bb.pixel_mean.flatten(), mean) and torch.allclose(bb.pixel_std.flatten(), std)
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        ours = bb.eval()(x)
        ref = bb.body((x - mean[:, None, None]) / std[:, None, None])
    assert all(torch.equal(a, b) for a, b in zip(ours, ref))


def test_checkpoint_loads_local_timm_state_dict(tmp_path):
    torch.manual_seed(1)
    source = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "r18.pth"
    torch.save(source.state_dict(), path)
    bb = Backbone(backbone_cfg("resnet18", checkpoint=str(path)))
    assert torch.equal(bb.body.layer3[0].conv1.weight, source.layer3[0].conv1.weight)
    assert torch.equal(bb.body.bn1.running_mean, source.bn1.running_mean)

    with pytest.raises(FileNotFoundError, match="model.backbone.checkpoint"):
        Backbone(backbone_cfg("resnet18", checkpoint=str(tmp_path / "missing.pth")))


def test_heads_gradient_scaled_into_backbone():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64) * 255
    grads = {}
    for g in (1.0, 0.1):
        torch.manual_seed(0)
        model = BackboneFPN(backbone_cfg("resnet18"), channels=16, grad_scale=g)
        feats = model(x)
        assert torch.allclose(sum(f.sum() for f in feats), sum(f.sum() for f in model.fpn(model.backbone(x))))
        sum(f.sum() for f in feats).backward()
        grads[g] = model.fpn.p6.weight.grad.clone()
    assert torch.allclose(grads[0.1], 0.1 * grads[1.0], rtol=1e-4, atol=1e-8)


def test_unreachable_imagenet_weights_name_the_switches(monkeypatch):
    def offline_create_model(name, pretrained=False, **kwargs):
        if pretrained:
            raise FileNotFoundError("cannot reach the hub and nothing is cached")
        return timm.models.create_model(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline_create_model)
    with pytest.raises(RuntimeError, match=r"model.backbone.pretrained=false or model.backbone.checkpoint=PATH"):
        Backbone(backbone_cfg("resnet18", pretrained=True))
