"""Identity embeddings: the four Table-7 variants, checked against hand-computed losses."""

from __future__ import annotations

import math

import pytest
import torch

from crossvis.modeling.embedding import EmbeddingHead, IdentityLoss, cosine_logit_scale
from crossvis.modeling.types import Positives

ALPHA, GAMMA = 0.25, 2.0


def positives(frame: list[int], identities: list[int]) -> Positives:
    n = len(frame)
    z = torch.zeros(n, dtype=torch.long)
    frame_t, ids = torch.tensor(frame, dtype=torch.long), torch.tensor(identities, dtype=torch.long)
    return Positives(frame_t, z, torch.zeros(n, 2), z, z, ids)


def focal_by_hand(logit: float, positive: bool) -> float:
    p = 1 / (1 + math.exp(-logit))
    if positive:
        return -ALPHA * (1 - p) ** GAMMA * math.log(p)
    return -(1 - ALPHA) * p**GAMMA * math.log(1 - p)


def test_cosine_logit_scale():
    assert cosine_logit_scale(3774).item() == pytest.approx(math.sqrt(2) * math.log(3773))
    assert cosine_logit_scale(2).item() == pytest.approx(math.sqrt(2) * math.log(2))  # guarded: ln(1) = 0
    assert cosine_logit_scale(1).item() > 0


def test_proxies_initialisation():
    torch.manual_seed(0)
    loss = IdentityLoss("global", "focal", dim=256, num_identities=3000, alpha=ALPHA, gamma=GAMMA)
    assert loss.proxies.weight.shape == (3000, 256)
    assert loss.proxies.weight.std().item() == pytest.approx(0.01, rel=0.02)
    assert torch.allclose(loss.proxies.bias, torch.full((3000,), -math.log(99)))


@pytest.mark.parametrize("kind", ["focal", "ce"])
def test_global_loss_by_hand(kind):
    loss_fn = IdentityLoss("global", kind, dim=2, num_identities=3, alpha=ALPHA, gamma=GAMMA)
    with torch.no_grad():
        loss_fn.proxies.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
        loss_fn.proxies.bias.fill_(-1.0)
    emb = torch.tensor([[3.0, 4.0], [0.0, -2.0]])  # directions (0.6, 0.8) and (0, −1)
    pos = positives([0, 1], [1, 2])
    s = math.sqrt(2) * math.log(2)  # M = 3
    logits = [[s * 0.6 - 1, s * 0.8 - 1, -s * 0.6 - 1], [-1.0, -s - 1, -1.0]]
    targets = [1, 2]
    if kind == "focal":
        expected = sum(focal_by_hand(z, j == t) for row, t in zip(logits, targets) for j, z in enumerate(row)) / 2
    else:
        expected = sum(-row[t] + math.log(sum(math.exp(z) for z in row)) for row, t in zip(logits, targets)) / 2
    assert loss_fn(emb, pos).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("kind", ["focal", "ce"])
def test_pairwise_loss_by_hand(kind):
    """Eq. 9: logits are raw dot products e_iᵀe_n (no normalisation, no scale), 0 for "new"."""
    loss_fn = IdentityLoss("pairwise", kind, dim=2, num_identities=0, alpha=ALPHA, gamma=GAMMA)
    assert not list(loss_fn.parameters())
    # pair 0: key ids 1, 2; reference id 1 (two positives), id 5. pair 1: key id 7, reference id 7.
    emb = torch.tensor(
        [
            [1.0, 0.0],
            [0.0, 1.0],  # frame 0 (key of pair 0)
            [2.0, 0.0],
            [0.0, 2.0],
            [-1.0, 0.0],  # frame 1: id 1 at (2,0) and (0,2) → mean (1,1); id 5 at (-1,0)
            [0.0, 3.0],  # frame 2 (key of pair 1)
            [0.0, -1.0],  # frame 3
        ]
    )
    pos = positives([0, 0, 1, 1, 1, 2, 3], [1, 2, 1, 1, 5, 7, 7])
    rows = [  # logits over [new, refs of the same pair], target index
        ([0.0, 1.0, -1.0], 1),  # key id 1 (1,0): ·(1,1) = 1, ·(-1,0) = -1 → reference id 1
        ([0.0, 1.0, 0.0], 0),  # key id 2 (0,1): ·(1,1) = 1, ·(-1,0) = 0 → new identity
        ([0.0, -3.0], 1),  # key id 7 (0,3): ·(0,-1) = -3 → reference id 7
    ]

    def by_hand(factor: float) -> float:
        scaled = [([factor * z for z in row], t) for row, t in rows]
        if kind == "ce":
            return sum(-row[t] + math.log(sum(math.exp(z) for z in row)) for row, t in scaled) / 3
        return sum(focal_by_hand(z, j == t) for row, t in scaled for j, z in enumerate(row)) / 3

    assert loss_fn(emb, pos).item() == pytest.approx(by_hand(1.0), rel=1e-5)
    # Unnormalised: doubling the embeddings multiplies every dot product by 4.
    assert loss_fn(2 * emb, pos).item() == pytest.approx(by_hand(4.0), rel=1e-5)


def test_invalid_variant_names_the_field():
    with pytest.raises(ValueError, match="^kind='local': expected one of"):
        IdentityLoss("local", "focal", 8, 3, ALPHA, GAMMA)
    with pytest.raises(ValueError, match="^loss='triplet': expected one of"):
        IdentityLoss("global", "triplet", 8, 3, ALPHA, GAMMA)


@pytest.mark.parametrize("kind", ["global", "pairwise"])
@pytest.mark.parametrize("loss", ["focal", "ce"])
def test_all_variants_train(kind, loss):
    torch.manual_seed(0)
    head = EmbeddingHead(in_channels=16, channels=16, num_convs=1, dim=8)
    loss_fn = IdentityLoss(kind, loss, dim=8, num_identities=6, alpha=ALPHA, gamma=GAMMA)
    feats = [torch.rand(4, 16, 4, 4), torch.rand(4, 16, 2, 2)]
    dense = head(feats)
    assert dense.shape == (4, 20, 8)
    frame = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3])
    z = torch.zeros(8, dtype=torch.long)
    location, ids = torch.tensor([0, 5, 3, 7, 19, 2, 4, 17]), torch.tensor([0, 1, 0, 0, 2, 3, 3, 4])
    pos = Positives(frame, location, torch.zeros(8, 2), z, z, ids)
    params = list(head.parameters()) + list(loss_fn.parameters())
    value = loss_fn(dense[pos.frame, pos.location], pos)
    assert torch.isfinite(value) and value.item() > 0
    value.backward()
    assert head.tower[0].weight.grad.abs().sum() > 0
    opt = torch.optim.SGD(params, lr=0.1)
    opt.step()
    empty = loss_fn(dense[:0, 0], positives([], []))
    assert empty.item() == 0.0


def test_embedding_head_normalises_each_level_on_its_own():
    torch.manual_seed(0)
    head = EmbeddingHead(in_channels=16, channels=16, num_convs=1, dim=8).train()
    assert head.pred.kernel_size == (1, 1) and head.pred.bias.eq(0).all()
    assert 0.005 < head.pred.weight.std().item() < 0.015  # N(0, 0.01) as the CrossVIS fork's reid_pred
    feats = [torch.rand(4, 16, 4, 4), torch.rand(4, 16, 2, 2) * 5 + 3]  # levels with different statistics
    dense = head(feats)
    for level in (dense[:, :16], dense[:, 16:]):  # BatchNorm2d per level map: each level is centred
        assert torch.allclose(level.mean(dim=(0, 1)), torch.zeros(8), atol=1e-5)


@pytest.mark.parametrize("normalizer, expected_norm", [("local", 4.0), ("all_reduce", 12.0)])
def test_identity_loss_normaliser_local_or_across_ranks(monkeypatch, normalizer, expected_norm):
    """Public code: L_id over this process's positives; ``all_reduce``: over their mean across ranks.

    Ranks are simulated by a mean over ranks three times this rank's count.
    """
    import crossvis.modeling.distributed as distributed

    monkeypatch.setattr(distributed, "mean_across_ranks", lambda value: value * 3)
    torch.manual_seed(0)
    loss = IdentityLoss("global", "ce", 8, 5, ALPHA, GAMMA, normalizer)
    embeddings, pos = torch.randn(4, 8), positives([0, 0, 1, 1], [0, 1, 0, 1])
    logits = loss.proxies(torch.nn.functional.normalize(embeddings, dim=1) * loss.scale)
    summed = torch.nn.functional.cross_entropy(logits, pos.identities, reduction="sum")
    assert loss(embeddings, pos).item() == pytest.approx(summed.item() / expected_norm, rel=1e-6)
    with pytest.raises(ValueError, match="^normalizer="):
        IdentityLoss("global", "ce", 8, 5, ALPHA, GAMMA, "rank")
