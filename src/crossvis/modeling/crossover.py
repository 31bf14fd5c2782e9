"""Crossover learning (paper Sec. 3.2): an instance's filters from one frame must segment it in the other.

Training-only: inference never imports this module, so crossover costs nothing at test time.
"""

from __future__ import annotations

import torch
from torch import Tensor

from crossvis.modeling.condinst import DynamicMaskHead, dice_loss, sample_per_group
from crossvis.modeling.types import Positives


def crossover_loss(
    mask_head: DynamicMaskHead,
    params: Tensor,
    queries: Positives,
    candidates: Positives,
    mask_feats: Tensor,
    gt_masks: Tensor,
) -> Tensor:
    """L_cross: mean over the two directions t → t+δ and t+δ → t of the crossover dice loss.

    Each query positive (with filters ``params``) whose identity has positives in the partner frame
    (frame index XOR 1: key 2b ↔ reference 2b+1) is applied to the partner frame's mask features,
    at the point/level of one random ``candidates`` positive of that identity there, and scored
    against the partner frame's mask. Nothing is detached: the gradient reaches both frames.
    """
    partner = queries.frame ^ 1
    same = (partner[:, None] == candidates.frame[None]) & (queries.identities[:, None] == candidates.identities[None])
    query_idx, cand_idx = torch.nonzero(same, as_tuple=True)
    chosen = sample_per_group(query_idx, 1)  # one random positive of the same identity in the other frame
    query_idx, target = query_idx[chosen], candidates.subset(cand_idx[chosen])
    # Eq. 6 (θ(t) on frame t+δ, key queries) and Eq. 7 (θ(t+δ) on frame t, reference queries)
    masks = mask_head.predict(params[query_idx], mask_feats, target.frame, target.points, target.levels)
    dice = dice_loss(masks, gt_masks[target.gt_index])
    direction = queries.frame[query_idx] % 2
    counts = torch.bincount(direction, minlength=2)
    per_direction = dice.new_zeros(2).index_add(0, direction, dice) / counts.clamp(min=1)
    return per_direction.sum() / (counts > 0).sum().clamp(min=1)  # Eq. 16
