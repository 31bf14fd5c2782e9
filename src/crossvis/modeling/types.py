"""Data types shared by the model's parts and the pyramid location grids they index.

Everything is laid out per image as one flat list of locations, level after level ([N, L, ·]).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class PyramidLocations:
    """Image-plane points of every pyramid location (all levels, flattened row-major, level after level)."""

    points: Tensor  # [L, 2] (x, y) pixels
    levels: Tensor  # [L] long level index (0 = P3)
    strides: Tensor  # [L] float stride of the location's level


@dataclass
class HeadOutputs:
    """Dense FCOS/controller predictions for a batch of images, flattened over levels."""

    cls_logits: Tensor  # [N, L, C]
    box_reg: Tensor  # [N, L, 4] (l, t, r, b) distances in pixels
    ctr_logits: Tensor  # [N, L]
    params: Tensor  # [N, L, K] dynamic mask-head parameters


@dataclass
class Positives:
    """Positive locations of a batch of frames, with what the mask/crossover/identity losses need."""

    frame: Tensor  # [P] frame index in the flattened 2B batch (frame 2b = key, 2b+1 = reference)
    location: Tensor  # [P] index into the flattened pyramid locations
    points: Tensor  # [P, 2] (x, y) pixels
    levels: Tensor  # [P] level index
    gt_index: Tensor  # [P] index into the batch's concatenated ground-truth instances
    identities: Tensor  # [P] identity in 0..M-1

    def subset(self, index: Tensor) -> Positives:
        """Positives restricted to ``index`` (a long index or a bool mask)."""
        return Positives(*(getattr(self, f)[index] for f in self.__dataclass_fields__))


def grid_points(height: int, width: int, stride: int, device: torch.device) -> Tensor:
    """Points ``stride//2 + k*stride`` of an (height, width) feature map, row-major, as [H*W, 2] (x, y)."""
    ys = torch.arange(height, device=device, dtype=torch.float32) * stride + stride // 2
    xs = torch.arange(width, device=device, dtype=torch.float32) * stride + stride // 2
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def pyramid_locations(shapes: list[tuple[int, int]], strides: list[int], device: torch.device) -> PyramidLocations:
    """Locations of all pyramid levels in the flattening order used by :class:`HeadOutputs`."""
    points = [grid_points(h, w, s, device) for (h, w), s in zip(shapes, strides)]
    # Sizes as traced shapes (torch.full), not torch.tensor constants: ONNX export keeps H, W dynamic.
    levels = torch.cat([torch.full(p.shape[:1], i, dtype=torch.long, device=device) for i, p in enumerate(points)])
    stride_t = torch.cat([torch.full(p.shape[:1], float(s), device=device) for p, s in zip(points, strides)])
    return PyramidLocations(torch.cat(points), levels, stride_t)


def flatten_levels(maps: list[Tensor]) -> Tensor:
    """[N, C, H_l, W_l] per level → [N, ΣH_lW_l, C]."""
    return torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)
