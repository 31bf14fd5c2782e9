"""Instance embeddings for online association and their losses (paper Sec. 3.3, Table 7 variants).

``global`` (default): L2-normalised embeddings against M learnable identity proxies (Eq. 11–14).
``pairwise``: MaskTrack R-CNN-style, raw dot products of key-frame embeddings with the reference
frame's instances plus a "new identity" slot (Eq. 9–10). Either can be trained with softmax CE or
sigmoid focal loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from crossvis.errors import check_choice
from crossvis.modeling.distributed import positive_normalizer
from crossvis.modeling.layers import conv_gn_tower
from crossvis.modeling.specs import EMBEDDING_LOSSES, EMBEDDING_TYPES, IDENTITY_NORMALIZERS
from crossvis.modeling.types import Positives, flatten_levels


def cosine_logit_scale(num_classes: Tensor | int) -> Tensor:
    """Fixed scale √2·ln(C−1) for cosine logits over C classes (AdaCos); C−1 clamped to ≥ 2 so it stays > 0."""
    c = torch.as_tensor(num_classes, dtype=torch.float32)
    return math.sqrt(2.0) * torch.log((c - 1).clamp(min=2.0))


class EmbeddingHead(nn.Module):
    """The CrossVIS fork's ``reid`` branch: tower → 1×1 conv → BatchNorm2d, applied to each level's map.

    Names mirror the fork (``reid_tower``, ``reid_pred``, ``reid_pred_bn`` → ``tower``, ``pred``,
    ``pred_bn``); one BatchNorm2d is shared by the levels but normalises each level's map on its own
    (batch statistics per level in training), as the public code does.
    """

    def __init__(self, in_channels: int, channels: int, num_convs: int, dim: int) -> None:
        super().__init__()
        self.tower = conv_gn_tower(in_channels, channels, num_convs)
        self.pred = nn.Conv2d(channels, dim, 1)
        nn.init.normal_(self.pred.weight, std=0.01)
        nn.init.zeros_(self.pred.bias)
        self.pred_bn = nn.BatchNorm2d(dim)

    def forward(self, feats: list[Tensor]) -> Tensor:
        """[P3..P7] → embeddings [N, L, dim] in the location order of the FCOS head."""
        return flatten_levels([self.pred_bn(self.pred(self.tower(f))) for f in feats])


class IdentityLoss(nn.Module):
    """L_id for the four Table-7 variants: {global, pairwise} × {focal, ce}."""

    def __init__(
        self,
        kind: str,
        loss: str,
        dim: int,
        num_identities: int,
        alpha: float,
        gamma: float,
        normalizer: str = "local",
    ) -> None:
        """``normalizer``: ``local`` divides by this process's positives (public code), ``all_reduce`` by
        their mean over the ranks (as the detection losses)."""
        super().__init__()
        check_choice("kind", kind, EMBEDDING_TYPES)
        check_choice("loss", loss, EMBEDDING_LOSSES)
        check_choice("normalizer", normalizer, IDENTITY_NORMALIZERS)
        if kind == "global" and num_identities < 1:
            raise ValueError(f"num_identities={num_identities}: the global embedding needs at least one identity")
        self.kind, self.loss, self.alpha, self.gamma = kind, loss, alpha, gamma
        self.across_ranks = normalizer == "all_reduce"
        if kind == "global":
            self.proxies = nn.Linear(dim, num_identities)  # rows w_1..w_M (Eq. 11)
            nn.init.normal_(self.proxies.weight, std=0.01)
            nn.init.constant_(self.proxies.bias, -math.log(99.0))
            self.register_buffer("scale", cosine_logit_scale(num_identities), persistent=False)

    def forward(self, embeddings: Tensor, positives: Positives) -> Tensor:
        """``embeddings [P, dim]`` at the batch's positive locations (both frames) → scalar loss."""
        if self.kind == "global":
            return self._global(embeddings, positives.identities)
        return self._pairwise(embeddings, positives)

    def _classify(self, logits: Tensor, target: Tensor, valid: Tensor | None, count: int) -> Tensor:
        """Sum of CE or focal over rows / #rows; ``valid`` masks out absent classes."""
        norm = positive_normalizer(count, logits.device, self.across_ranks)
        if self.loss == "ce":
            if valid is not None:
                logits = logits.masked_fill(~valid, float("-inf"))
            return F.cross_entropy(logits, target, reduction="sum") / norm  # Eq. 11–12 (global), Eq. 10 (pair-wise)
        onehot = F.one_hot(target, logits.shape[1]).to(logits.dtype)
        focal = sigmoid_focal_loss(logits, onehot, alpha=self.alpha, gamma=self.gamma, reduction="none")  # Eq. 13–14
        if valid is not None:
            focal = focal * valid
        return focal.sum() / norm

    def _global(self, embeddings: Tensor, identities: Tensor) -> Tensor:
        """M-way classification against the identity proxies: CE = Eq. 11–12, focal = Eq. 13–14."""
        logits = self.proxies(F.normalize(embeddings, dim=1) * self.scale)  # e_iᵀ w_n
        return self._classify(logits, identities, None, embeddings.shape[0])

    def _pairwise(self, embeddings: Tensor, positives: Positives) -> Tensor:
        """Key-frame positives vs the reference frame's instances of the same pair, plus "new" (Eq. 9–10).

        As MaskTrack R-CNN's track head: logits are raw dot products e_iᵀe_n of the unnormalised
        embeddings and the "new identity" slot has logit 0 (the "1 +" of Eq. 9). MaskTrack R-CNN
        embeds each reference instance once (from its ground-truth box RoI); without RoIs, a
        reference instance's embedding e_n is the mean of its positive locations' embeddings in
        the reference frame.
        """
        pair, identity = positives.frame // 2, positives.identities
        is_key = positives.frame % 2 == 0
        ref_keys = torch.stack([pair[~is_key], identity[~is_key]], 1)
        instances, inverse = torch.unique(ref_keys, dim=0, return_inverse=True)
        counts = torch.bincount(inverse, minlength=instances.shape[0]).clamp(min=1)
        ref_sum = embeddings.new_zeros(instances.shape[0], embeddings.shape[1]).index_add(
            0, inverse, embeddings[~is_key]
        )
        ref = ref_sum / counts[:, None].to(embeddings.dtype)
        same_pair = pair[is_key][:, None] == instances[None, :, 0]  # [Q, R]
        dots = embeddings[is_key] @ ref.T  # e_iᵀe_n
        logits = torch.cat([dots.new_zeros(dots.shape[0], 1), dots], dim=1)  # Eq. 9
        valid = torch.cat([same_pair.new_ones(dots.shape[0], 1), same_pair], dim=1)
        match = same_pair & (identity[is_key][:, None] == instances[None, :, 1])
        query, column = torch.nonzero(match, as_tuple=True)  # at most one reference instance per query
        target = torch.zeros(dots.shape[0], dtype=torch.long, device=embeddings.device).index_put((query,), column + 1)
        return self._classify(logits, target, valid, dots.shape[0])  # Eq. 10 (CE) or its focal variant
