"""Layers shared by the model's heads: GroupNorm conv towers and CondInst's upsampling."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from crossvis.errors import check_choice
from crossvis.modeling.specs import UPSAMPLE_MODES


def _num_groups(channels: int) -> int:
    """GroupNorm groups: 32 when ``channels`` allows, fewer for narrow towers.

    Each group keeps at least 2 channels: a 1-channel group on a 1×1 P7 map (small inputs) has a
    single value, which GroupNorm rejects at batch size 1.
    """
    return math.gcd(32, max(channels // 2, 1))


def conv_gn_tower(in_channels: int, channels: int, num_convs: int) -> nn.Sequential:
    """``num_convs`` × (3×3 conv, GroupNorm, ReLU), convs initialised N(0, 0.01) as in FCOS."""
    layers: list[nn.Module] = []
    for i in range(num_convs):
        conv = nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1)
        nn.init.normal_(conv.weight, std=0.01)
        nn.init.zeros_(conv.bias)
        layers += [conv, nn.GroupNorm(_num_groups(channels), channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def aligned_bilinear(x: Tensor, factor: int) -> Tensor:
    """AdelaiDet's ``aligned_bilinear`` (the reference for every CondInst upsampling).

    Replicate-pad right/bottom by 1, bilinear to (f·h+1, f·w+1) with ``align_corners=True``,
    replicate-pad left/top by f//2, crop to (f·h, f·w). For f = 2 the row [0, 1] becomes [0, 0, 0.5, 1].
    """
    if factor == 1:
        return x
    h, w = x.shape[-2:]
    x = F.pad(x, (0, 1, 0, 1), mode="replicate")
    x = F.interpolate(x, size=(factor * h + 1, factor * w + 1), mode="bilinear", align_corners=True)
    x = F.pad(x, (factor // 2, 0, factor // 2, 0), mode="replicate")
    return x[..., : factor * h, : factor * w]


def upsample(x: Tensor, factor: int, mode: str = "aligned_bilinear") -> Tensor:
    """×``factor`` bilinear upsampling of ``x [N, C, h, w]`` (``model.upsample``).

    ``aligned_bilinear`` (default) reproduces AdelaiDet, whose output sits a quarter input stride
    (for f = 2) off the feature points. ``pixel_center`` (``align_corners=False``) keeps the points
    ``stride//2 + k*stride`` of :func:`grid_points` in place: output j of stride s/f lands exactly at
    image point (s/f)(j + 1/2). Geometrically cleaner, but not what released weights were trained with.
    """
    check_choice("mode", mode, UPSAMPLE_MODES)
    if mode == "aligned_bilinear":
        return aligned_bilinear(x, factor)
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
