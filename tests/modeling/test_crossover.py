"""Crossover loss (Eq. 6, 7, 16): δ = 0 reduces to the within-frame loss; gradients cross frames."""

from __future__ import annotations

import pytest
import torch

from crossvis.modeling.condinst import DynamicMaskHead, dice_loss, mean_dice
from crossvis.modeling.crossover import crossover_loss
from crossvis.modeling.crossvis import CrossVIS
from crossvis.modeling.types import Positives

from helpers import tiny_spec

pytestmark = pytest.mark.filterwarnings("ignore:backbone frozen_bn=true with random")

SOI = [64, 128, 256, 512, 1024]
H, W = 6, 8  # stride-8 mask feature map; masks at stride 4 are 12 × 16


def make_positives(frame, points, levels, gt_index, identities) -> Positives:
    t = torch.tensor
    location = t(list(range(len(frame))))
    return Positives(t(frame), location, t(points, dtype=torch.float32), t(levels), t(gt_index), t(identities))


def random_masks(n: int) -> torch.Tensor:
    return (torch.rand(n, 2 * H, 2 * W) > 0.5).float()


def zero_coordinate_weights(params: torch.Tensor) -> torch.Tensor:
    """Filters that ignore the relative coordinates, so the chosen partner location does not matter."""
    params = params.clone()
    params[:, :80].view(-1, 8, 10)[:, :, :2] = 0
    return params


def test_delta_zero_equals_within_frame_loss_many_positives_per_identity():
    torch.manual_seed(0)
    head = DynamicMaskHead(8, 8, 3, SOI)
    feat0 = torch.randn(1, 8, H, W)
    mask_feats = torch.cat([feat0, feat0])  # identical frames
    gt = random_masks(2)
    gt_masks = torch.cat([gt, gt])  # frame 0: gts 0, 1; frame 1: gts 2, 3 (identical)
    points = [[4.0, 4.0], [12.0, 4.0], [20.0, 12.0], [36.0, 28.0], [44.0, 20.0]]
    levels, ids, gts = [0, 0, 1, 0, 2], [5, 5, 5, 9, 9], [0, 0, 0, 1, 1]
    pos = make_positives([0] * 5 + [1] * 5, points * 2, levels * 2, gts + [g + 2 for g in gts], ids * 2)
    params = zero_coordinate_weights(torch.randn(5, 169)).repeat(2, 1)
    within = mean_dice(head.predict(params, mask_feats, pos.frame, pos.points, pos.levels), gt_masks[pos.gt_index])
    cross = crossover_loss(head, params, pos, pos, mask_feats, gt_masks)
    assert cross.item() == pytest.approx(within.item(), rel=1e-6)


def test_delta_zero_equals_within_frame_loss_one_positive_per_identity():
    torch.manual_seed(1)
    head = DynamicMaskHead(8, 8, 3, SOI)
    feat0 = torch.randn(1, 8, H, W)
    mask_feats = torch.cat([feat0, feat0])
    gt = random_masks(3)
    gt_masks = torch.cat([gt, gt])
    points, levels, ids = [[4.0, 4.0], [28.0, 12.0], [52.0, 36.0]], [0, 1, 2], [0, 1, 2]
    pos = make_positives([0] * 3 + [1] * 3, points * 2, levels * 2, [0, 1, 2, 3, 4, 5], ids * 2)
    params = torch.randn(3, 169).repeat(2, 1)
    within = mean_dice(head.predict(params, mask_feats, pos.frame, pos.points, pos.levels), gt_masks[pos.gt_index])
    assert crossover_loss(head, params, pos, pos, mask_feats, gt_masks).item() == pytest.approx(within.item(), rel=1e-6)


def test_mean_of_the_two_directions_by_hand():
    torch.manual_seed(2)
    head = DynamicMaskHead(8, 8, 3, SOI)
    mask_feats = torch.randn(2, 8, H, W)
    gt_masks = random_masks(2)  # gt 0 in frame 0, gt 1 in frame 1 (same identity 3)
    pos = make_positives([0, 0, 1], [[4.0, 4.0], [20.0, 12.0], [44.0, 36.0]], [0, 0, 1], [0, 0, 1], [3, 3, 3])
    params = zero_coordinate_weights(torch.randn(3, 169))
    coords = torch.zeros(1, 2, H, W)  # ignored by these filters
    forward = [dice_loss(head(params[i : i + 1], mask_feats[1:2], coords), gt_masks[1:2]) for i in (0, 1)]
    backward = dice_loss(head(params[2:3], mask_feats[0:1], coords), gt_masks[0:1])
    expected = 0.5 * ((forward[0] + forward[1]) / 2 + backward)
    loss = crossover_loss(head, params, pos, pos, mask_feats, gt_masks)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_gradient_from_reference_targets_reaches_key_frame_filters():
    torch.manual_seed(3)
    head = DynamicMaskHead(8, 8, 3, SOI)
    mask_feats = torch.randn(2, 8, H, W)  # δ ≠ 0: the two frames differ
    points = [[4.0, 4.0], [20.0, 12.0], [44.0, 36.0], [52.0, 28.0]]
    pos = make_positives([0, 0, 1, 1], points, [0, 0, 1, 0], [0, 0, 1, 1], [3, 3, 3, 3])
    params = torch.randn(4, 169) * 0.5
    gt_masks = random_masks(2)

    def key_frame_grad(gt: torch.Tensor) -> torch.Tensor:
        theta = params.clone().requires_grad_(True)
        torch.manual_seed(0)  # same random partners each time
        loss = crossover_loss(head, theta, pos, pos, mask_feats, gt)
        return torch.autograd.grad(loss, theta)[0][:2]  # rows of frame t's filters

    grad = key_frame_grad(gt_masks)
    assert grad.abs().sum() > 0
    changed_ref = gt_masks.clone()
    changed_ref[1] = 1 - changed_ref[1]
    assert not torch.allclose(key_frame_grad(changed_ref), grad)  # frame t+δ's target drives θ(t)
    changed_key = gt_masks.clone()
    changed_key[0] = 1 - changed_key[0]
    assert torch.allclose(key_frame_grad(changed_key), grad)  # frame t's target only reaches θ(t+δ)

    feats = mask_feats.clone().requires_grad_(True)
    loss = crossover_loss(head, params, pos, pos, feats, gt_masks)
    assert torch.autograd.grad(loss, feats)[0].abs().sum(dim=(1, 2, 3)).gt(0).all()  # nothing detached


def test_identity_missing_in_partner_frame_gives_zero():
    head = DynamicMaskHead(8, 8, 3, SOI)
    params = torch.randn(2, 169, requires_grad=True)
    pos = make_positives([0, 1], [[4.0, 4.0], [12.0, 4.0]], [0, 0], [0, 1], [1, 2])  # different identities
    loss = crossover_loss(head, params, pos, pos, torch.randn(2, 8, H, W), random_masks(2))
    assert loss.item() == 0.0
    loss.backward()
    assert params.grad.abs().sum() == 0


def test_model_with_identical_frames_has_cross_equal_to_mask_loss():
    """δ = 0 through the whole model: 6×6 boxes get exactly one positive each (P3 point 12 or 36).

    One 64×64 pair: per position, P7's train-mode BatchNorm would see one value per channel.
    """
    torch.manual_seed(0)
    model = CrossVIS(tiny_spec("bn_batches=joint"), num_classes=2, num_identities=4)
    image = torch.rand(1, 1, 3, 64, 64) * 255
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 10:16, 10:16] = True
    masks[1, 34:40, 34:40] = True
    frame = dict(
        masks=masks,
        boxes=torch.tensor([[10.0, 10, 16, 16], [34, 34, 40, 40]]),
        labels=torch.tensor([0, 1]),
        identities=torch.tensor([2, 3]),
    )
    losses = model.forward_train(image.expand(1, 2, 3, 64, 64), torch.tensor([[[64, 64], [64, 64]]]), [[frame, frame]])
    assert losses["loss_cross"].item() == pytest.approx(losses["loss_mask"].item(), rel=1e-5)
    assert losses["loss_mask"].item() > 0
    other = torch.cat([image, torch.rand(1, 1, 3, 64, 64) * 255], dim=1)  # δ ≠ 0: the pair differs
    losses = model.forward_train(other, torch.tensor([[[64, 64], [64, 64]]]), [[frame, frame]])
    assert losses["loss_cross"].item() != pytest.approx(losses["loss_mask"].item(), rel=1e-5)
