"""timm backbone (strides 8/16/32) and the FPN that turns it into the P3–P7 pyramid used by FCOS/CondInst."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.layers import freeze_batch_norm_2d
from torch import Tensor, nn

from crossvis.errors import ArgumentError
from crossvis.modeling.specs import BackboneSpec

BACKBONE_STRIDES = (8, 16, 32)
FPN_STRIDES = (8, 16, 32, 64, 128)


def pad_to_multiple(images: Tensor, divisor: int = 32) -> Tensor:
    """Zero-pad ``images [..., H, W]`` bottom/right to multiples of ``divisor``.

    Every pyramid level must then have exactly half the size of the one below (DLA-34 fails otherwise).
    """
    h, w = images.shape[-2:]
    pad_h, pad_w = (-h) % divisor, (-w) % divisor
    if pad_h == 0 and pad_w == 0:
        return images
    return F.pad(images, (0, pad_w, 0, pad_h))


def _create_timm(spec: BackboneSpec) -> nn.Module:
    """Build the timm feature extractor; ``checkpoint`` (local timm state dict) wins over ``pretrained``."""
    kwargs: dict[str, Any] = dict(features_only=True, out_indices=(-3, -2, -1))
    if spec.checkpoint:
        path = Path(spec.checkpoint).expanduser()
        if not path.is_file():
            raise ArgumentError("checkpoint", f": no such file {path} (expected a timm state dict for {spec.name!r})")
        kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    else:
        kwargs.update(pretrained=bool(spec.pretrained))
    try:
        model = timm.create_model(spec.name, **kwargs)
    except OSError as error:  # no network / no cached weights: say which switch to flip
        raise ArgumentError(
            "pretrained",
            f"=true: could not fetch timm ImageNet weights for {spec.name!r} ({error}). Without internet, set "
            "pretrained=false or checkpoint=PATH (or initialise the whole model from a COCO CondInst checkpoint).",
        ) from error
    if tuple(model.feature_info.reduction()) != BACKBONE_STRIDES:
        raise ArgumentError(
            "name",
            f"={spec.name!r}: last three feature strides are {model.feature_info.reduction()}, "
            f"expected {list(BACKBONE_STRIDES)}",
        )
    return model


def _freeze_stages(model: nn.Module, freeze_at: int, name: str) -> None:
    """Freeze the stem (``freeze_at`` ≥ 1) and the first ``freeze_at − 1`` stages, detectron2-style.

    Stage k is the block whose output has stride 2**k, found through timm's feature_info, so the
    rule is the same for ResNets (stem = conv1..act1) and DLA (stem = base_layer..level1).
    """
    if freeze_at <= 0:
        return
    by_stride = {info["reduction"]: info["module"] for info in model.feature_info.info}
    boundary = by_stride.get(2**freeze_at)
    children = [n for n, _ in model.named_children()]
    if boundary is None or boundary.replace(".", "_") not in children:
        raise ArgumentError(
            "freeze_at",
            f"={freeze_at}: {name!r} has no stage with stride {2**freeze_at} (available strides {sorted(by_stride)})",
        )
    last = children.index(boundary.replace(".", "_"))
    for child_name in children[: last + 1]:
        getattr(model, child_name).requires_grad_(False)


def move_stride_to_1x1(body: nn.Module) -> None:
    """detectron2's ``STRIDE_IN_1X1`` (MSRA ResNet): each stage's stride sits in its first block's 1×1 conv.

    timm (like torchvision) strides the 3×3 conv; the tensors have the same shapes either way, so
    only the conv strides change. Every CondInst / CrossVIS checkpoint was trained this way.
    """
    for name in ("layer2", "layer3", "layer4"):
        block = getattr(body, name, None)
        if block is None or not hasattr(block[0], "conv3"):
            raise ArgumentError("stride_in_1x1", "=true needs a timm bottleneck ResNet (resnet50, resnet101)")
        block[0].conv1.stride, block[0].conv2.stride = block[0].conv2.stride, (1, 1)


class Backbone(nn.Module):
    """timm network returning C3–C5 from 0..255 RGB pixels, padded bottom/right.

    Input normalisation happens here and only here: ``input_format=BGR`` flips the channels (the
    MSRA/detectron2 weights expect BGR; no converter touches conv1), then ``(x − pixel_mean) /
    pixel_std`` with the config's values (null: the timm model's own mean/std), then the padding
    beyond each image's valid size is set to zero, i.e. padded *after* normalisation like
    detectron2's ``ImageList.from_tensors``.
    """

    def __init__(self, spec: BackboneSpec) -> None:
        super().__init__()
        body = _create_timm(spec)
        if spec.stride_in_1x1:
            move_stride_to_1x1(body)
        _freeze_stages(body, spec.freeze_at, spec.name)
        if spec.frozen_bn:
            if not (spec.pretrained or spec.checkpoint or spec.stride_in_1x1):
                warnings.warn(
                    f"backbone frozen_bn=true with random {spec.name} weights: BatchNorm stays at its init "
                    "(timm zero-initialises the last BN of ResNet blocks, so those branches never train); "
                    "set frozen_bn=false to train a backbone from scratch",
                    stacklevel=2,
                )
            body = freeze_batch_norm_2d(body)
        self.body = body
        self.out_channels: list[int] = list(body.feature_info.channels())
        self.input_format = spec.input_format.upper()
        mean, std = spec.pixel_mean, spec.pixel_std  # 0..255 scale, in input_format order
        timm_scale = torch.tensor(255.0)
        mean = torch.tensor(list(mean)) if mean is not None else torch.tensor(body.pretrained_cfg["mean"]) * timm_scale
        std = torch.tensor(list(std)) if std is not None else torch.tensor(body.pretrained_cfg["std"]) * timm_scale
        self.register_buffer("pixel_mean", mean.float().view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", std.float().view(3, 1, 1), persistent=False)

    def normalize(self, images: Tensor, image_sizes: Tensor | None = None) -> Tensor:
        """``images [N, 3, H, W]`` RGB 0..255 → the network input; zero beyond ``image_sizes [N, 2]`` (h, w)."""
        if self.input_format == "BGR":
            images = images.flip(1)  # the one place where channels are reordered
        x = (images - self.pixel_mean) / self.pixel_std
        if image_sizes is None:
            return x
        ys = torch.arange(x.shape[-2], device=x.device)
        xs = torch.arange(x.shape[-1], device=x.device)
        sizes = image_sizes.to(x.device)
        valid = (ys[None, :, None] < sizes[:, 0, None, None]) & (xs[None, None, :] < sizes[:, 1, None, None])
        return x * valid[:, None].to(x.dtype)

    def forward(self, images: Tensor, image_sizes: Tensor | None = None) -> list[Tensor]:
        """``images [N, 3, H, W]`` RGB 0..255 (padded), valid sizes ``[N, 2]`` → [C3, C4, C5]."""
        return self.body(self.normalize(images, image_sizes))


def _c2_xavier_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    """Conv initialised with kaiming-uniform(a=1), the usual FPN init."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    nn.init.zeros_(conv.bias)
    return conv


class FPN(nn.Module):
    """P3–P5 from C3–C5 (lateral 1×1, top-down sum, output 3×3); P6 = 3×3/2 on P5; P7 = 3×3/2 on ReLU(P6)."""

    def __init__(self, in_channels: list[int], channels: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(_c2_xavier_conv(c, channels, 1) for c in in_channels)
        self.output = nn.ModuleList(_c2_xavier_conv(channels, channels, 3) for _ in in_channels)
        self.p6 = _c2_xavier_conv(channels, channels, 3, stride=2)
        self.p7 = _c2_xavier_conv(channels, channels, 3, stride=2)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        """[C3, C4, C5] → [P3, P4, P5, P6, P7] (strides 8..128)."""
        laterals = [conv(f) for conv, f in zip(self.lateral, feats)]
        for i in range(len(laterals) - 2, -1, -1):
            laterals[i] = laterals[i] + F.interpolate(laterals[i + 1], size=laterals[i].shape[-2:], mode="nearest")
        outs = [conv(x) for conv, x in zip(self.output, laterals)]
        p6 = self.p6(outs[-1])
        return outs + [p6, self.p7(F.relu(p6))]


class BackboneFPN(nn.Module):
    """Backbone + FPN whose outputs reach the heads with their gradient scaled by ``grad_scale``.

    ``g*f + (1-g)*f.detach()`` is f in the forward pass but lets only a fraction g of the heads'
    gradient into backbone+FPN (the public CrossVIS code's 0.1× rule).
    """

    def __init__(self, backbone: BackboneSpec, channels: int, grad_scale: float) -> None:
        super().__init__()
        self.backbone = Backbone(backbone)
        self.fpn = FPN(self.backbone.out_channels, channels)
        self.grad_scale = float(grad_scale)

    def forward(self, images: Tensor, image_sizes: Tensor | None = None) -> list[Tensor]:
        """``images [N, 3, H, W]`` 0..255, H and W multiples of 32, valid sizes [N, 2] → [P3..P7].

        The gradient scaling is a training device: with gradients off (inference) the features are
        returned untouched, as in the public code's test path.
        """
        feats = self.fpn(self.backbone(images, image_sizes))
        if not torch.is_grad_enabled():
            return feats
        g = self.grad_scale
        return [g * f + (1.0 - g) * f.detach() for f in feats]
