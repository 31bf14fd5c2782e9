"""Backbone + FPN: shapes for every configured backbone, freezing, normalisation, checkpoints, grad scale."""

from __future__ import annotations

import pytest
import timm
import torch
from omegaconf import OmegaConf
from torchvision.ops import FrozenBatchNorm2d

from crossvis.modeling.backbone import Backbone, BackboneFPN, pad_to_multiple
from crossvis.modeling.specs import BackboneSpec, spec_from_dict

from helpers import group_option

pytestmark = pytest.mark.filterwarnings("ignore:backbone frozen_bn=true with random")


def backbone_cfg(name: str, **overrides) -> BackboneSpec:
    """The settings of option ``name`` of model/backbone, without ImageNet weights, with ``overrides``."""
    values = {**OmegaConf.to_container(group_option("model/backbone", name)), "pretrained": False, **overrides}
    return spec_from_dict(BackboneSpec, values)


def test_pad_to_multiple_pads_bottom_right_with_zeros():
    x = torch.ones(1, 3, 97, 131)
    y = pad_to_multiple(x, 32)
    assert y.shape == (1, 3, 128, 160)
    assert y[..., :97, :131].eq(1).all() and y[..., 97:, :].eq(0).all() and y[..., :, 131:].eq(0).all()
    assert pad_to_multiple(y, 32) is y


@pytest.mark.parametrize("name", ["resnet18", "resnet10t", "regnetx_002", "resnet50", "resnet101", "dla34"])
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

    with pytest.raises(ValueError, match="^checkpoint: no such file"):
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
    with pytest.raises(ValueError, match=r"^pretrained=true: .*set pretrained=false or checkpoint=PATH"):
        Backbone(backbone_cfg("resnet18", pretrained=True))


def test_gradient_scaling_is_skipped_without_gradients():
    torch.manual_seed(0)
    model = BackboneFPN(backbone_cfg("resnet18"), channels=16, grad_scale=0.1).eval()
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        plain = model.fpn(model.backbone(x))
        assert all(torch.equal(a, b) for a, b in zip(model(x), plain))  # bit-identical: no 0.1f + 0.9f


def test_padding_is_zero_after_normalisation():
    bb = Backbone(backbone_cfg("resnet18")).eval()
    images = torch.zeros(2, 3, 64, 64)
    images[:, :, :40, :50] = 200.0
    x = bb.normalize(images, torch.tensor([[40, 50], [64, 32]]))
    expected0 = (200.0 - bb.pixel_mean) / bb.pixel_std
    assert torch.allclose(x[0, :, :40, :50], expected0.expand(3, 40, 50))
    assert x[0, :, 40:].eq(0).all() and x[0, :, :, 50:].eq(0).all()  # raw zero padding would give −mean/std
    assert x[1, :, :, 32:].eq(0).all() and x[1, :, 40:, :32].ne(0).all()


@pytest.mark.parametrize("name", ["resnet50_d2", "resnet101_d2"])
def test_detectron2_resnet_strides_sit_in_the_1x1_convs(name):
    bb = Backbone(backbone_cfg(name))
    body = bb.body
    assert body.conv1.stride == (2, 2) and body.layer1[0].conv1.stride == (1, 1)
    for layer in (body.layer2, body.layer3, body.layer4):
        assert layer[0].conv1.stride == (2, 2) and layer[0].conv2.stride == (1, 1)  # STRIDE_IN_1X1
        assert layer[0].downsample[0].stride == (2, 2)
        assert all(block.conv1.stride == (1, 1) and block.conv2.stride == (1, 1) for block in layer[1:])
    assert all(isinstance(m, FrozenBatchNorm2d) or "BatchNorm" not in type(m).__name__ for m in body.modules())
    with torch.no_grad():
        feats = bb.eval()(torch.rand(1, 3, 64, 96) * 255)
    assert [tuple(f.shape[-2:]) for f in feats] == [(8, 12), (4, 6), (2, 3)]
    with pytest.raises(ValueError, match="timm ImageNet weights do not fit"):
        Backbone(backbone_cfg(name, pretrained=True))


def test_detectron2_resnet_input_is_bgr_minus_mean_with_std_one():
    bb = Backbone(backbone_cfg("resnet50_d2")).eval()
    seen = {}
    bb.body.conv1.register_forward_pre_hook(lambda module, args: seen.setdefault("x", args[0]))
    rgb = torch.zeros(1, 3, 64, 64)
    rgb[:, 0], rgb[:, 1], rgb[:, 2] = 10.0, 20.0, 30.0  # R, G, B
    with torch.no_grad():
        bb(rgb, torch.tensor([[48, 64]]))
    x = seen["x"][0]
    # channel 0 = B − 103.530, 1 = G − 116.280, 2 = R − 123.675; padding rows 48.. are zero
    assert torch.allclose(
        x[:, :48], torch.tensor([30 - 103.530, 20 - 116.280, 10 - 123.675]).view(3, 1, 1).expand(3, 48, 64)
    )
    assert x[:, 48:].eq(0).all()


def test_converted_block_computes_detectron2_bottleneck():
    """res3.0 of an MSRA checkpoint, loaded through the key table, equals a hand-written detectron2 block."""
    from crossvis.checkpoint.released import map_detectron2_key

    torch.manual_seed(0)
    bb = Backbone(backbone_cfg("resnet50_d2")).eval()
    shapes = {
        "conv1": (128, 256, 1, 1),
        "conv2": (128, 128, 3, 3),
        "conv3": (512, 128, 1, 1),
        "shortcut": (512, 256, 1, 1),
    }
    d2 = {}
    for conv, shape in shapes.items():
        d2[f"backbone.bottom_up.res3.0.{conv}.weight"] = torch.randn(shape) * 0.1
        c = shape[0]
        d2[f"backbone.bottom_up.res3.0.{conv}.norm.weight"] = torch.rand(c) + 0.5
        d2[f"backbone.bottom_up.res3.0.{conv}.norm.bias"] = torch.randn(c) * 0.1
        d2[f"backbone.bottom_up.res3.0.{conv}.norm.running_mean"] = torch.randn(c) * 0.1
        d2[f"backbone.bottom_up.res3.0.{conv}.norm.running_var"] = torch.rand(c) + 0.5
    prefix = "features.backbone.body."
    own = {map_detectron2_key(k)[len(prefix) :]: v for k, v in d2.items()}
    missing, unexpected = bb.body.load_state_dict(own, strict=False)
    assert unexpected == [] and not any(k.startswith("layer2.0.") for k in missing)

    def conv_norm(x, name, stride=1, padding=0):
        p = f"backbone.bottom_up.res3.0.{name}"
        y = torch.nn.functional.conv2d(x, d2[f"{p}.weight"], stride=stride, padding=padding)
        scale = d2[f"{p}.norm.weight"] * (d2[f"{p}.norm.running_var"] + 1e-5).rsqrt()
        shift = d2[f"{p}.norm.bias"] - d2[f"{p}.norm.running_mean"] * scale
        return y * scale[:, None, None] + shift[:, None, None]

    x = torch.randn(1, 256, 16, 16)
    relu = torch.nn.functional.relu
    y = relu(conv_norm(x, "conv1", stride=2))  # detectron2 STRIDE_IN_1X1: stride in the 1×1
    y = relu(conv_norm(y, "conv2", padding=1))
    expected = relu(conv_norm(y, "conv3") + conv_norm(x, "shortcut", stride=2))
    with torch.no_grad():
        assert torch.allclose(bb.body.layer2[0](x), expected, atol=1e-5)
