"""FCOS: the shared detection head, target assignment, losses and detection decoding.

The head also emits the CondInst controller output (the dynamic mask-head parameters θ_{x,y}).
Locations and outputs are the flat per-level layout of :mod:`crossvis.modeling.types`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms, clip_boxes_to_image, generalized_box_iou_loss, sigmoid_focal_loss

from crossvis.errors import ArgumentError, check_choice
from crossvis.modeling.distributed import mean_across_ranks, positive_normalizer
from crossvis.modeling.layers import conv_gn_tower
from crossvis.modeling.specs import BOX_LOSSES
from crossvis.modeling.types import HeadOutputs, Positives, PyramidLocations, flatten_levels


def _predictor(in_channels: int, out_channels: int, bias: float = 0.0) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.constant_(conv.bias, bias)
    return conv


class FCOSHead(nn.Module):
    """Head shared over levels: classification tower → logits; box tower → boxes, centerness, controller."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_convs: int,
        num_classes: int,
        num_params: int,
        strides: list[int],
        prior_prob: float,
    ) -> None:
        super().__init__()
        self.cls_tower = conv_gn_tower(in_channels, channels, num_convs)
        self.box_tower = conv_gn_tower(in_channels, channels, num_convs)
        self.cls_logits = _predictor(channels, num_classes, bias=-math.log((1 - prior_prob) / prior_prob))
        self.box_pred = _predictor(channels, 4)
        self.ctr_pred = _predictor(channels, 1)
        self.controller = _predictor(channels, num_params)
        # one learnable scale per level, named ``scales.{l}`` like AdelaiDet's ``scales.{l}.scale``
        self.scales = nn.ParameterList(nn.Parameter(torch.ones(1)) for _ in strides)
        self.strides = list(strides)

    def forward(self, feats: list[Tensor]) -> HeadOutputs:
        """[P3..P7] → dense predictions; boxes = ReLU(scale_l · x) · stride_l (pixels)."""
        cls, box, ctr, params = [], [], [], []
        for level, f in enumerate(feats):
            cls_t, box_t = self.cls_tower(f), self.box_tower(f)
            cls.append(self.cls_logits(cls_t))
            box.append(F.relu(self.box_pred(box_t) * self.scales[level]) * self.strides[level])
            ctr.append(self.ctr_pred(box_t))
            params.append(self.controller(box_t))
        ctr_logits = flatten_levels(ctr)[..., 0]
        return HeadOutputs(flatten_levels(cls), flatten_levels(box), ctr_logits, flatten_levels(params))


def centers_of_mass(masks: Tensor) -> Tensor:
    """``masks [N, H, W]`` → [N, 2] (x, y) in pixel-index coordinates."""
    m = masks.float()
    area = m.sum(dim=(1, 2)).clamp(min=1.0)
    ys = torch.arange(m.shape[1], device=m.device, dtype=torch.float32)
    xs = torch.arange(m.shape[2], device=m.device, dtype=torch.float32)
    cy = (m.sum(dim=2) * ys).sum(dim=1) / area
    cx = (m.sum(dim=1) * xs).sum(dim=1) / area
    return torch.stack([cx, cy], dim=1)


def assign_targets(
    locations: PyramidLocations,
    boxes: Tensor,
    masks: Tensor,
    sizes_of_interest: list[float],
    radius: float,
) -> tuple[Tensor, Tensor]:
    """FCOS assignment of one image: each location gets the smallest gt box that claims it, or none.

    A gt claims a location when (1) the location lies within ``radius`` strides of the mask's
    centre of mass, clipped to the box (centre sampling), and (2) max(l, t, r, b) falls inside the
    level's range from ``sizes_of_interest`` (so each object is learnt at one scale).
    Returns ``matched [L]`` (gt index, −1 = background) and ``reg_targets [L, 4]`` (l, t, r, b).
    """
    num_levels = int(locations.levels.max()) + 1
    if len(sizes_of_interest) != num_levels - 1:
        raise ArgumentError(
            "sizes_of_interest",
            f" has {len(sizes_of_interest)} entries, expected {num_levels - 1} "
            f"(one boundary between each pair of the {num_levels} pyramid levels)",
        )
    num_loc = locations.points.shape[0]
    if boxes.shape[0] == 0:
        return (
            torch.full((num_loc,), -1, dtype=torch.long, device=boxes.device),
            boxes.new_zeros((num_loc, 4)),
        )
    x, y = locations.points[:, 0:1], locations.points[:, 1:2]  # [L, 1]
    ltrb = torch.stack([x - boxes[:, 0], y - boxes[:, 1], boxes[:, 2] - x, boxes[:, 3] - y], dim=2)  # [L, N, 4]

    center = centers_of_mass(masks)  # [N, 2]
    r = locations.strides[:, None] * radius  # [L, 1]
    cx1 = torch.maximum(center[:, 0] - r, boxes[:, 0])
    cy1 = torch.maximum(center[:, 1] - r, boxes[:, 1])
    cx2 = torch.minimum(center[:, 0] + r, boxes[:, 2])
    cy2 = torch.minimum(center[:, 1] + r, boxes[:, 3])
    in_center = torch.stack([x - cx1, y - cy1, cx2 - x, cy2 - y], dim=2).amin(dim=2) > 0  # [L, N]

    bounds = torch.tensor([0.0, *sizes_of_interest, math.inf], device=boxes.device)
    lo, hi = bounds[locations.levels][:, None], bounds[locations.levels + 1][:, None]
    max_reg = ltrb.amax(dim=2)
    in_range = (max_reg >= lo) & (max_reg <= hi)

    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None].expand(num_loc, -1)
    area = area.masked_fill(~(in_center & in_range), math.inf)
    min_area, matched = area.min(dim=1)
    reg_targets = ltrb[torch.arange(num_loc, device=boxes.device), matched]
    matched = matched.masked_fill(min_area == math.inf, -1)
    return matched, reg_targets


def build_targets(
    locations: PyramidLocations,
    targets: list[dict[str, Tensor]],
    num_classes: int,
    sizes_of_interest: list[float],
    radius: float,
) -> tuple[Tensor, Tensor, Positives]:
    """Assign every frame of the flattened batch (loop over frames only).

    Returns ``labels [F, L]`` (``num_classes`` = background), ``reg_targets [F, L, 4]`` and the
    :class:`Positives`, whose ``gt_index`` counts instances over the frames in order.
    """
    labels, regs, matches = [], [], []
    offset = 0
    for t in targets:
        matched, reg = assign_targets(locations, t["boxes"], t["masks"], sizes_of_interest, radius)
        labels.append(F.pad(t["labels"], (0, 1), value=num_classes)[matched])  # −1 picks the background pad
        regs.append(reg)
        matches.append(torch.where(matched >= 0, matched + offset, -1))
        offset += t["boxes"].shape[0]
    matched_all = torch.stack(matches)
    frame, location = torch.nonzero(matched_all >= 0, as_tuple=True)
    gt_index = matched_all[frame, location]
    identities = torch.cat([t["identities"] for t in targets])[gt_index]
    positives = Positives(frame, location, locations.points[location], locations.levels[location], gt_index, identities)
    return torch.stack(labels), torch.stack(regs), positives


def ltrb_to_boxes(points: Tensor, ltrb: Tensor) -> Tensor:
    """(l, t, r, b) distances around ``points`` → xyxy boxes."""
    return torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], dim=-1)


def centerness_target(ltrb: Tensor) -> Tensor:
    """FCOS centerness sqrt(min(l,r)/max(l,r) · min(t,b)/max(t,b))."""
    lr, tb = ltrb[..., [0, 2]], ltrb[..., [1, 3]]
    ratio = (lr.amin(-1) / lr.amax(-1).clamp(min=1e-6)) * (tb.amin(-1) / tb.amax(-1).clamp(min=1e-6))
    return ratio.clamp(min=0).sqrt()


def ltrb_giou_loss(pred: Tensor, target: Tensor) -> Tensor:
    """AdelaiDet's box loss ``1 − giou`` per location on (l, t, r, b) distances ``[P, 4]``.

    ``iou = (I + 1) / (U + 1)`` and ``giou = iou − (C − U) / C`` (the enclosing term without the
    +1), exactly ``adet.utils.comm.compute_ious``; AdelaiDet feeds it stride-normalised distances.
    """
    pred_area = (pred[:, 0] + pred[:, 2]) * (pred[:, 1] + pred[:, 3])
    target_area = (target[:, 0] + target[:, 2]) * (target[:, 1] + target[:, 3])
    low, high = torch.minimum(pred, target), torch.maximum(pred, target)
    intersection = (low[:, 0] + low[:, 2]) * (low[:, 1] + low[:, 3])
    enclosing = (high[:, 0] + high[:, 2]) * (high[:, 1] + high[:, 3])
    union = pred_area + target_area - intersection
    iou = (intersection + 1.0) / (union + 1.0)
    return 1.0 - (iou - (enclosing - union) / enclosing)


def detection_losses(
    outputs: HeadOutputs,
    locations: PyramidLocations,
    labels: Tensor,
    reg_targets: Tensor,
    alpha: float,
    gamma: float,
    box_loss: str = "iou_plus1",
) -> dict[str, Tensor]:
    """L_det: focal classification / #pos, centerness-weighted GIoU / Σcenterness, centerness BCE / #pos.

    ``box_loss``: ``iou_plus1`` (default, AdelaiDet: :func:`ltrb_giou_loss` on distances in stride
    units) or ``giou_pixels`` (torchvision's exact GIoU on pixel boxes, no +1 smoothing, which
    otherwise matters for boxes of a few stride units).
    """
    num_classes = outputs.cls_logits.shape[-1]
    check_choice("box_loss", box_loss, BOX_LOSSES)
    pos = labels < num_classes
    num_pos = positive_normalizer(pos.sum(), labels.device)
    onehot = F.one_hot(labels, num_classes + 1)[..., :num_classes].to(outputs.cls_logits.dtype)
    loss_cls = sigmoid_focal_loss(outputs.cls_logits, onehot, alpha=alpha, gamma=gamma, reduction="sum") / num_pos

    target_ltrb = reg_targets[pos]
    ctr_target = centerness_target(target_ltrb)
    ctr_norm = mean_across_ranks(ctr_target.sum().detach()).clamp(min=1e-6)
    if box_loss == "iou_plus1":
        strides = locations.strides.expand(labels.shape[0], -1)[pos][:, None]
        per_box = ltrb_giou_loss(outputs.box_reg[pos] / strides, target_ltrb / strides)  # stride 2^k: exact
    else:
        points = locations.points.expand(labels.shape[0], -1, -1)[pos]
        per_box = generalized_box_iou_loss(
            ltrb_to_boxes(points, outputs.box_reg[pos]), ltrb_to_boxes(points, target_ltrb), reduction="none"
        )
    loss_box = (per_box * ctr_target).sum() / ctr_norm
    loss_ctr = F.binary_cross_entropy_with_logits(outputs.ctr_logits[pos], ctr_target, reduction="sum") / num_pos
    return {"loss_cls": loss_cls, "loss_box": loss_box, "loss_ctr": loss_ctr}


def select_detections(
    cls_logits: Tensor,
    box_reg: Tensor,
    ctr_logits: Tensor,
    locations: PyramidLocations,
    score_threshold: float,
    pre_nms_topk: int,
    nms_threshold: float,
    max_detections: int,
) -> dict[str, Tensor]:
    """One image's detections as AdelaiDet's ``FCOSOutputs.predict_proposals``.

    cls·ctr > threshold, top-k per level, class-aware NMS on the *unclipped* boxes, then every
    detection scoring at least the ``max_detections``-th largest score (``kthvalue``'s rule; ties may
    keep a few more). No value leaves the tensors, so the function exports to ONNX
    (``torchvision.ops.batched_nms`` becomes NonMaxSuppression). Clipping and removing empty boxes happen after rescaling (:func:`postprocess_boxes`).
    Returns ``location [K]`` (index into the pyramid), ``boxes [K, 4]``, ``labels [K]`` and
    ``scores [K]`` = sqrt(cls · ctr), in NMS order (descending score).
    """
    probs = cls_logits.sigmoid() * ctr_logits.sigmoid()[:, None]  # [L, C]
    num_classes = probs.shape[1]
    keep_loc, keep_cls, keep_score = [], [], []
    for level in range(int(locations.levels.max()) + 1):
        level_loc = torch.nonzero(locations.levels == level)[:, 0]
        level_probs = probs[level_loc].flatten()
        # The top pre_nms_topk of the level, then those above the threshold: the same set as the top-k
        # of the candidates above it, with a fixed k (padding) so the graph exports with any frame size.
        padded = torch.cat([level_probs, level_probs.new_full((pre_nms_topk,), -math.inf)])
        top_probs, candidates = padded.topk(pre_nms_topk)
        candidates = candidates[top_probs > score_threshold]
        keep_loc.append(level_loc[candidates // num_classes])
        keep_cls.append(candidates % num_classes)
        keep_score.append(level_probs[candidates].sqrt())
    location, labels, det_scores = torch.cat(keep_loc), torch.cat(keep_cls), torch.cat(keep_score)
    boxes = ltrb_to_boxes(locations.points[location], box_reg[location])
    keep = batched_nms(boxes, det_scores, labels, nms_threshold)
    if max_detections > 0:  # NMS sorts by score: the k-th kept score, or -inf when fewer are kept
        kth = torch.cat([det_scores[keep], det_scores.new_full((max_detections,), -math.inf)])[max_detections - 1]
        keep = keep[det_scores[keep] >= kth]
    return {"location": location[keep], "boxes": boxes[keep], "labels": labels[keep], "scores": det_scores[keep]}


def postprocess_boxes(boxes: Tensor, scale: tuple[float, float], size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """``CondInst.postprocess``: scale boxes by (sx, sy), clip to ``size`` (h, w), flag non-empty ones.

    Returns the clipped boxes and a bool mask of boxes with positive width and height
    (detectron2's ``Boxes.nonempty``; torchvision's ``remove_small_boxes(…, 0)`` would keep empty ones).
    """
    sx, sy = scale
    boxes = clip_boxes_to_image(boxes * boxes.new_tensor([sx, sy, sx, sy]), size)
    nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes, nonempty
