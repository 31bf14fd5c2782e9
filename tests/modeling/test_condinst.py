"""CondInst pieces: dynamic parameter split, dynamic head vs per-instance F.conv2d, coordinates, dice."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crossvis.modeling.condinst import (
    DynamicMaskHead,
    MaskBranch,
    dice_loss,
    gt_masks_at_stride4,
    mean_dice,
    sample_per_group,
)
from crossvis.modeling.layers import aligned_bilinear, upsample

SOI = [64, 128, 256, 512, 1024]


def test_default_head_has_169_parameters_split_weights_then_biases():
    head = DynamicMaskHead(feat_channels=8, channels=8, num_layers=3, soi=SOI)
    assert head.num_params == 169
    params = torch.arange(169, dtype=torch.float32)[None]
    (w0, w1, w2), (b0, b1, b2) = head.split_params(params)
    assert torch.equal(w0[0], torch.arange(0, 80, dtype=torch.float32).view(8, 10))
    assert torch.equal(w1[0], torch.arange(80, 144, dtype=torch.float32).view(8, 8))
    assert torch.equal(w2[0], torch.arange(144, 152, dtype=torch.float32).view(1, 8))
    assert b0[0].tolist() == list(range(152, 160)) and b1[0].tolist() == list(range(160, 168))
    assert b2[0].tolist() == [168]
    assert DynamicMaskHead(4, 16, 2, SOI).num_params == 6 * 16 + 16 + 16 * 1 + 1
    with pytest.raises(ValueError, match="169"):
        head.split_params(torch.zeros(1, 168))


def test_dynamic_head_matches_per_instance_convolutions():
    torch.manual_seed(0)
    head = DynamicMaskHead(feat_channels=8, channels=8, num_layers=3, soi=SOI)
    p, h, w = 3, 5, 7
    params = torch.randn(p, 169)
    feats, coords = torch.randn(p, 8, h, w), torch.randn(p, 2, h, w)
    out = head(params, feats, coords)
    assert out.shape == (p, 2 * h, 2 * w)
    for i in range(p):
        x = torch.cat([coords[i : i + 1], feats[i : i + 1]], dim=1)
        th = params[i]
        x = F.relu(F.conv2d(x, th[0:80].view(8, 10, 1, 1), th[152:160]))
        x = F.relu(F.conv2d(x, th[80:144].view(8, 8, 1, 1), th[160:168]))
        x = F.conv2d(x, th[144:152].view(1, 8, 1, 1), th[168:169])
        expected = aligned_bilinear(x, 2).sigmoid()[0, 0]  # AdelaiDet upsamples the logits
        assert torch.allclose(out[i], expected, atol=1e-5)


def test_relative_coordinates_by_hand():
    head = DynamicMaskHead(8, 8, 3, SOI)
    rel = head.relative_coords(torch.tensor([[12.0, 20.0]]), torch.tensor([1]), height=2, width=3)
    assert rel.shape == (1, 2, 2, 3)
    # stride-8 pixels at x ∈ {4, 12, 20}, y ∈ {4, 12}; level 1 → soi 128
    assert torch.allclose(rel[0, 0], torch.tensor([[8.0, 0.0, -8.0], [8.0, 0.0, -8.0]]) / 128)
    assert torch.allclose(rel[0, 1], torch.tensor([[16.0, 16.0, 16.0], [8.0, 8.0, 8.0]]) / 128)


def test_predict_uses_the_given_frame_and_point():
    torch.manual_seed(0)
    head = DynamicMaskHead(8, 8, 3, SOI)
    feats = torch.randn(2, 8, 4, 6)
    params = torch.randn(2, 169)
    points, levels = torch.tensor([[12.0, 20.0], [36.0, 4.0]]), torch.tensor([0, 2])
    out = head.predict(params, feats, torch.tensor([1, 0]), points, levels)
    expected = head(params, feats[[1, 0]], head.relative_coords(points, levels, 4, 6))
    assert torch.equal(out, expected)


def test_aligned_bilinear_matches_hand_computed_adelaidet_values():
    # pad → [[0,1,1],[2,3,3],[2,3,3]], align_corners to 5×5, replicate 1 left/top, crop 4×4
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).view(1, 1, 2, 2)
    expected = [[0, 0, 0.5, 1], [0, 0, 0.5, 1], [1, 1, 1.5, 2], [2, 2, 2.5, 3]]
    assert aligned_bilinear(x, 2)[0, 0].tolist() == expected
    assert upsample(x, 2)[0, 0].tolist() == expected  # the default mode
    # f = 4: [0, 4] → pad [0, 4, 4] → 9 samples [0..4, 4, 4, 4, 4] → replicate 2 left → first 8
    row = torch.tensor([0.0, 4.0]).view(1, 1, 1, 2)
    assert aligned_bilinear(row, 4)[0, 0, 0].tolist() == [0, 0, 0, 1, 2, 3, 4, 4]
    assert torch.equal(aligned_bilinear(x, 1), x)
    with pytest.raises(ValueError, match="^mode='nearest': expected one of"):
        upsample(x, 2, "nearest")


def test_pixel_center_upsampling_keeps_points_in_place():
    ramp8 = (torch.arange(6, dtype=torch.float32) * 8 + 4).view(1, 1, 1, 6)  # x of stride-8 points
    up = upsample(ramp8, 2, "pixel_center")[0, 0, 0]
    assert torch.allclose(up[1:-1], torch.arange(1, 11, dtype=torch.float32) * 4 + 2)  # stride-4 points 4j+2
    ramp4 = (torch.arange(5, dtype=torch.float32) * 4 + 2).view(1, 1, 1, 5)
    up = upsample(ramp4, 4, "pixel_center")[0, 0, 0]
    assert torch.allclose(up[2:-2], torch.arange(2, 18, dtype=torch.float32) + 0.5)  # pixel centres


def test_gt_masks_sampled_at_stride4_offset2():
    m = torch.zeros(1, 8, 8, dtype=torch.bool)
    m[0, 2, 6] = True
    m[0, 3, 3] = True  # not on the sampling grid
    s = gt_masks_at_stride4(m)
    assert s.shape == (1, 2, 2) and s.dtype == torch.float32
    assert s[0].tolist() == [[0.0, 1.0], [0.0, 0.0]]


def test_dice_loss_hand_values():
    target = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    assert dice_loss(target.clone(), target).item() == pytest.approx(1 - 4 / (4 + 1e-5), abs=1e-7)
    assert dice_loss(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), target).item() == pytest.approx(1.0)
    # Σxy = 1, Σx² = 1, Σy² = 2 → 1 − 2/3
    assert dice_loss(torch.full((1, 4), 0.5), target).item() == pytest.approx(1 / 3, abs=1e-5)
    preds = torch.stack([target[0], 1 - target[0]])
    per = dice_loss(preds, target.expand(2, -1))
    assert per.shape == (2,)
    assert mean_dice(preds, target.expand(2, -1)).item() == pytest.approx(per.mean().item())
    empty = torch.zeros(0, 4, requires_grad=True)
    loss = mean_dice(empty, torch.zeros(0, 4))
    assert loss.item() == 0.0 and loss.requires_grad


def test_sample_per_group_caps_each_group():
    torch.manual_seed(0)
    group = torch.tensor([0] * 10 + [1] * 3 + [2] * 7)
    keep = sample_per_group(group, 5)
    assert torch.bincount(group[keep]).tolist() == [5, 3, 5]
    assert keep.unique().numel() == keep.numel()
    torch.manual_seed(0)
    assert torch.equal(sample_per_group(group, 5), keep)  # torch RNG makes it reproducible
    assert sorted(sample_per_group(group, 500).tolist()) == list(range(20))
    assert sample_per_group(torch.zeros(0, dtype=torch.long), 5).numel() == 0


def test_mask_branch_output_stride8():
    torch.manual_seed(0)
    branch = MaskBranch(in_channels=16, channels=8, num_convs=2, out_channels=8)
    feats = [torch.rand(2, 16, 8 // 2**i, 12 // 2**i) for i in range(3)] + [torch.rand(2, 16, 1, 2)]
    assert branch(feats).shape == (2, 8, 8, 12)
    # AdelaiDet layout: the 1×1 output conv is the tower's last entry (mask_branch.tower.{num_convs})
    assert isinstance(branch.tower[2], torch.nn.Conv2d) and branch.tower[2].kernel_size == (1, 1)


def test_mask_branch_upsamples_p4_p5_with_the_configured_mode():
    torch.manual_seed(0)
    branch = MaskBranch(in_channels=4, channels=4, num_convs=0, out_channels=4).eval()
    feats = [torch.rand(1, 4, 8, 8), torch.rand(1, 4, 4, 4), torch.rand(1, 4, 2, 2)]
    r = [conv(f) for conv, f in zip(branch.refine, feats)]
    expected = branch.tower(r[0] + aligned_bilinear(r[1], 2) + aligned_bilinear(r[2], 4))
    assert torch.allclose(branch(feats), expected, atol=1e-6)
    branch.upsample_mode = "pixel_center"
    assert not torch.allclose(branch(feats), expected, atol=1e-3)
