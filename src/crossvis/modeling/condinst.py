"""CondInst masks: the shared mask branch, the dynamic mask head (one function for every use) and dice."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossvis.modeling.layers import upsample
from crossvis.modeling.types import grid_points

MASK_FEATURE_STRIDE = 8


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class MaskBranch(nn.Module):
    """Instance-agnostic mask features F_mask at stride 8 from P3–P5 (shared by all instances).

    Layout as AdelaiDet's (``refine.{0,1,2}``, ``tower.{0..n-1}`` conv+BN+ReLU, ``tower.{n}`` the
    1×1 output conv), so CondInst checkpoints load under the same names.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_convs: int,
        out_channels: int,
        upsample_mode: str = "aligned_bilinear",
    ) -> None:
        super().__init__()
        self.refine = nn.ModuleList(_conv_bn_relu(in_channels, channels) for _ in range(3))
        out = nn.Conv2d(channels, out_channels, 1)
        nn.init.kaiming_uniform_(out.weight, a=1)
        nn.init.zeros_(out.bias)
        self.tower = nn.Sequential(*(_conv_bn_relu(channels, channels) for _ in range(num_convs)), out)
        self.upsample_mode = upsample_mode

    def forward(self, feats: list[Tensor]) -> Tensor:
        """[P3, P4, P5, ...] → [N, out_channels, H3, W3]."""
        x = self.refine[0](feats[0])
        for conv, f in zip(self.refine[1:], feats[1:3]):
            y = conv(f)
            x = x + upsample(y, x.shape[-1] // y.shape[-1], self.upsample_mode)
        return self.tower(x)


class DynamicMaskHead(nn.Module):
    """MaskHead(F̃; θ): 1×1 convs whose weights are per-instance controller outputs θ (no own weights)."""

    def __init__(
        self,
        feat_channels: int,
        channels: int,
        num_layers: int,
        soi: list[float],
        upsample_mode: str = "aligned_bilinear",
    ) -> None:
        super().__init__()
        self.upsample_mode = upsample_mode
        dims = [feat_channels + 2] + [channels] * (num_layers - 1) + [1]
        self.layer_shapes: list[tuple[int, int]] = list(zip(dims[1:], dims[:-1]))  # (out, in) per layer
        self.num_params = sum(o * i for o, i in self.layer_shapes) + sum(o for o, _ in self.layer_shapes)
        self.register_buffer("soi", torch.tensor(soi, dtype=torch.float32), persistent=False)

    def split_params(self, params: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """θ [P, K] → per-layer weights [P, out, in] then per-layer biases [P, out] (all weights first)."""
        if params.shape[-1] != self.num_params:
            raise ValueError(
                f"dynamic mask head expects {self.num_params} parameters per instance, got {params.shape[-1]}"
            )
        sizes = [o * i for o, i in self.layer_shapes] + [o for o, _ in self.layer_shapes]
        chunks = params.split(sizes, dim=1)
        n = len(self.layer_shapes)
        weights = [w.reshape(params.shape[0], o, i) for w, (o, i) in zip(chunks[:n], self.layer_shapes)]
        return weights, list(chunks[n:])

    def forward(self, params: Tensor, mask_feats: Tensor, rel_coords: Tensor) -> Tensor:
        """θ [P, K], F_mask [P, C, H, W], O [P, 2, H, W] → mask probabilities [P, 2H, 2W] at stride 4.

        All P instances run at once as batched matrix products (a grouped 1×1 conv).
        """
        p, c, h, w = mask_feats.shape
        # Explicit sizes, no -1: ONNX Runtime cannot infer a -1 next to zero instances.
        x = torch.cat([rel_coords, mask_feats], dim=1).reshape(p, c + 2, h * w)  # Eq. 1: F̃ = Concat(O, F_mask)
        weights, biases = self.split_params(params)
        for i, (weight, bias) in enumerate(zip(weights, biases)):  # Eq. 2: MaskHead(F̃; θ)
            x = torch.baddbmm(bias[:, :, None], weight, x)
            if i < len(weights) - 1:
                x = F.relu(x)
        return upsample(x.view(p, 1, h, w), 2, self.upsample_mode)[:, 0].sigmoid()

    def relative_coords(self, points: Tensor, levels: Tensor, height: int, width: int) -> Tensor:
        """O_{x,y}: (instance point − pixel point) / soi[level] over the stride-8 grid → [P, 2, H, W]."""
        pixels = grid_points(height, width, MASK_FEATURE_STRIDE, points.device)  # [HW, 2]
        rel = (points[:, None, :] - pixels[None]) / self.soi[levels][:, None, None]
        return rel.transpose(1, 2).reshape(points.shape[0], 2, height, width)

    def predict(self, params: Tensor, mask_feats: Tensor, frame: Tensor, points: Tensor, levels: Tensor) -> Tensor:
        """Masks of instances whose filters ``params`` are applied to frame ``frame`` at ``points``/``levels``.

        ``mask_feats [F, C, H, W]`` holds every frame; the within-frame loss, the crossover and
        inference differ only in which frame and which point they pass.
        """
        h, w = mask_feats.shape[-2:]
        return self(params, mask_feats[frame], self.relative_coords(points, levels, h, w))


def gt_masks_at_stride4(masks: Tensor) -> Tensor:
    """Ground-truth masks [N, H, W] sampled at stride 4, offset 2 (the centres of the stride-4 outputs)."""
    return masks[:, 2::4, 2::4].float()


def dice_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Per-instance dice loss 1 − 2Σxy / (Σx² + Σy² + 1e-5) over [P, ...] → [P]."""
    pred, target = pred.flatten(1), target.flatten(1)
    return 1.0 - 2.0 * (pred * target).sum(1) / ((pred**2).sum(1) + (target**2).sum(1) + 1e-5)  # Eq. 8


def mean_dice(pred: Tensor, target: Tensor) -> Tensor:
    """Mean dice loss over instances; 0 (still attached to the graph) when there are none."""
    return dice_loss(pred, target).sum() / max(pred.shape[0], 1)


def sample_per_group(group: Tensor, max_per_group: int) -> Tensor:
    """Indices of at most ``max_per_group`` random entries (torch RNG) of each value of ``group``.

    Bounds the mask-head memory (≤ 500 positives per frame) and picks the crossover partners.
    """
    order = torch.randperm(group.numel(), device=group.device)
    order = order[torch.sort(group[order], stable=True).indices]  # grouped, random within a group
    _, counts = torch.unique_consecutive(group[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(group.numel(), device=group.device) - torch.repeat_interleave(starts, counts)
    return order[rank < max_per_group]
