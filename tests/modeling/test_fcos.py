"""FCOS locations, target assignment (hand-made boxes), losses and detection selection."""

from __future__ import annotations

import math

import pytest
import torch

from crossvis.modeling.fcos import (
    FCOSHead,
    assign_targets,
    build_targets,
    centerness_target,
    detection_losses,
    ltrb_giou_loss,
    postprocess_boxes,
    select_detections,
)
from crossvis.modeling.types import HeadOutputs, pyramid_locations

SOI = [64, 128, 256, 512]
STRIDES = [8, 16, 32, 64, 128]


def locations_for(size: int):
    shapes = [(size // s, size // s) for s in (8, 16, 32)]
    shapes += [((shapes[-1][0] + 1) // 2,) * 2, ((shapes[-1][0] + 3) // 4,) * 2]
    return pyramid_locations(shapes, STRIDES, torch.device("cpu"))


def box_and_mask(x1: int, y1: int, x2: int, y2: int, size: int):
    mask = torch.zeros(1, size, size, dtype=torch.bool)
    mask[0, y1:y2, x1:x2] = True
    return torch.tensor([[x1, y1, x2, y2]], dtype=torch.float32), mask


def positives_of(locs, matched, gt: int = 0):
    sel = matched == gt
    return {(int(x), int(y), int(level)) for (x, y), level in zip(locs.points[sel].tolist(), locs.levels[sel].tolist())}


def test_locations_are_half_stride_plus_k_strides():
    locs = pyramid_locations([(2, 3), (1, 2)], [8, 16], torch.device("cpu"))
    assert locs.points.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12], [8, 8], [24, 8]]
    assert locs.levels.tolist() == [0] * 6 + [1] * 2
    assert locs.strides.tolist() == [8.0] * 6 + [16.0] * 2


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        # 24×24 box, centre of mass 111.5: radius 12 → points 108, 116 at P3 (max ltrb 16 ≤ 64)
        ((100, 100, 124, 124), {(x, y, 0) for x in (108, 116) for y in (108, 116)}),
        # 160×160 box, centre 79.5: P4 points 56, 72, 88 within 24 px, max ltrb in [64, 128]
        ((0, 0, 160, 160), {(x, y, 1) for x in (56, 72, 88) for y in (56, 72, 88)}),
        # 320×320 box, centre 159.5: P5 points 112, 144, 176 within 48 px, max ltrb in [128, 256]
        ((0, 0, 320, 320), {(x, y, 2) for x in (112, 144, 176) for y in (112, 144, 176)}),
    ],
)
def test_level_chosen_by_object_size(box, expected):
    locs = locations_for(384)
    boxes, masks = box_and_mask(*box, size=384)
    matched, reg = assign_targets(locs, boxes, masks, SOI, radius=1.5)
    assert positives_of(locs, matched) == expected
    assert (matched >= -1).all() and (matched <= 0).all()


def test_regression_targets_are_distances_to_box_sides():
    locs = locations_for(384)
    boxes, masks = box_and_mask(100, 100, 124, 124, size=384)
    matched, reg = assign_targets(locs, boxes, masks, SOI, radius=1.5)
    index = ((locs.points == torch.tensor([108.0, 116.0])).all(1) & (locs.levels == 0)).nonzero()[0, 0]
    assert reg[index].tolist() == [8.0, 16.0, 16.0, 8.0]


def test_center_sampling_radius():
    locs = locations_for(384)
    boxes, masks = box_and_mask(0, 0, 160, 160, size=384)
    matched, _ = assign_targets(locs, boxes, masks, SOI, radius=0.5)  # 8 px around 79.5 at P4
    assert positives_of(locs, matched) == {(72, 72, 1)}


def test_center_sampling_uses_mask_center_of_mass_clipped_to_box():
    locs = locations_for(384)
    boxes = torch.tensor([[100.0, 100.0, 124.0, 124.0]])
    masks = torch.zeros(1, 384, 384, dtype=torch.bool)
    masks[0, 100:104, 100:104] = True  # centre of mass (101.5, 101.5) in the box's top-left corner
    matched, _ = assign_targets(locs, boxes, masks, SOI, radius=1.5)
    # region (89.5, 113.5) clipped to the box → (100, 113.5): only point 108 at P3
    assert positives_of(locs, matched) == {(108, 108, 0)}


def test_location_inside_two_boxes_goes_to_smaller():
    locs = locations_for(384)
    small, small_mask = box_and_mask(100, 100, 124, 124, size=384)
    big, big_mask = box_and_mask(96, 96, 132, 132, size=384)  # centre 113.5: points 108, 116, 124
    matched, reg = assign_targets(locs, torch.cat([big, small]), torch.cat([big_mask, small_mask]), SOI, 1.5)
    inner = {(x, y, 0) for x in (108, 116) for y in (108, 116)}
    assert positives_of(locs, matched, gt=1) == inner
    assert positives_of(locs, matched, gt=0) == {(x, y, 0) for x in (108, 116, 124) for y in (108, 116, 124)} - inner
    index = ((locs.points == torch.tensor([124.0, 108.0])).all(1) & (locs.levels == 0)).nonzero()[0, 0]
    assert reg[index].tolist() == [28.0, 12.0, 8.0, 24.0]


def test_no_ground_truth_means_all_background():
    locs = locations_for(64)
    matched, reg = assign_targets(locs, torch.zeros(0, 4), torch.zeros(0, 64, 64, dtype=torch.bool), SOI, 1.5)
    assert (matched == -1).all() and reg.shape == (locs.points.shape[0], 4)


def test_build_targets_labels_and_global_gt_index():
    locs = locations_for(384)
    b0, m0 = box_and_mask(100, 100, 124, 124, size=384)
    b1, m1 = box_and_mask(0, 0, 160, 160, size=384)
    empty = dict(
        boxes=torch.zeros(0, 4),
        masks=torch.zeros(0, 384, 384, dtype=torch.bool),
        labels=torch.zeros(0, dtype=torch.long),
        identities=torch.zeros(0, dtype=torch.long),
    )
    frames = [
        dict(boxes=b0, masks=m0, labels=torch.tensor([2]), identities=torch.tensor([7])),
        empty,
        dict(
            boxes=torch.cat([b0, b1]),
            masks=torch.cat([m0, m1]),
            labels=torch.tensor([1, 0]),
            identities=torch.tensor([7, 4]),
        ),
    ]
    labels, reg, pos = build_targets(locs, frames, num_classes=3, sizes_of_interest=SOI, radius=1.5)
    assert labels.shape == (3, locs.points.shape[0]) and reg.shape == (3, locs.points.shape[0], 4)
    assert (labels[1] == 3).all()
    assert (labels[0] == 2).sum() == 4 and (labels[0] < 3).sum() == 4
    assert (labels[2] == 1).sum() == 4 and (labels[2] == 0).sum() == 9
    assert pos.frame.tolist().count(0) == 4 and pos.frame.tolist().count(2) == 13
    assert set(pos.gt_index[pos.frame == 0].tolist()) == {0}
    assert set(pos.gt_index[pos.frame == 2].tolist()) == {1, 2}
    assert (pos.identities == torch.tensor([7, 7, 4])[pos.gt_index]).all()
    assert torch.equal(pos.points, locs.points[pos.location]) and torch.equal(pos.levels, locs.levels[pos.location])


def test_centerness_target_by_hand():
    ltrb = torch.tensor([[8.0, 8.0, 16.0, 16.0], [10.0, 5.0, 10.0, 20.0]])
    assert torch.allclose(centerness_target(ltrb), torch.tensor([0.5, math.sqrt(0.25)]))


def test_detection_losses_by_hand():
    locs = pyramid_locations([(1, 2)], [8], torch.device("cpu"))
    labels = torch.tensor([[1, 2]])  # 2 classes: location 0 positive (class 1), location 1 background
    reg_targets = torch.tensor([[[4.0, 4.0, 4.0, 4.0], [0.0, 0.0, 0.0, 0.0]]])
    out = HeadOutputs(
        cls_logits=torch.zeros(1, 2, 2),
        box_reg=torch.tensor([[[4.0, 4.0, 4.0, 4.0], [1.0, 1.0, 1.0, 1.0]]]),
        ctr_logits=torch.zeros(1, 2),
        params=torch.zeros(1, 2, 1),
    )
    losses = detection_losses(out, locs, labels, reg_targets, alpha=0.25, gamma=2.0)
    # focal at p = 0.5: positive 0.25·0.25·ln2, each negative 0.75·0.25·ln2; 1 positive, 3 negatives
    expected_cls = (0.25 * 0.25 + 3 * 0.75 * 0.25) * math.log(2)
    assert losses["loss_cls"].item() == pytest.approx(expected_cls, rel=1e-5)
    assert losses["loss_box"].item() == pytest.approx(0.0, abs=1e-6)  # perfect box
    assert losses["loss_ctr"].item() == pytest.approx(math.log(2), rel=1e-5)  # BCE(0.5, target 1)


def test_iou_loss_plus_one_on_stride_units_by_hand():
    # pred (l,t,r,b) = (1,2,1,1): area 2·3 = 6; target (2,1,1,1): area 3·2 = 6; intersection min → (1,1,1,1):
    # 2·2 = 4; enclosing max → (2,2,1,1): 3·3 = 9; union 8; iou = (4+1)/(8+1); giou = iou − (9−8)/9
    pred, target = torch.tensor([[1.0, 2.0, 1.0, 1.0]]), torch.tensor([[2.0, 1.0, 1.0, 1.0]])
    expected = 1 - (5 / 9 - 1 / 9)
    assert ltrb_giou_loss(pred, target).item() == pytest.approx(expected, rel=1e-6)
    assert ltrb_giou_loss(target, target).item() == pytest.approx(0.0, abs=1e-7)

    locs = pyramid_locations([(1, 2)], [8], torch.device("cpu"))
    labels = torch.tensor([[0, 1]])  # 1 class: location 0 positive
    reg_targets = torch.tensor([[[16.0, 8.0, 8.0, 8.0], [0.0, 0.0, 0.0, 0.0]]])  # target × stride 8 (pixels)
    pred_px = torch.tensor([[[8.0, 16.0, 8.0, 8.0], [1.0] * 4]])
    out = HeadOutputs(torch.zeros(1, 2, 1), pred_px, torch.zeros(1, 2), torch.zeros(1, 2, 1))
    loss = detection_losses(out, locs, labels, reg_targets, 0.25, 2.0)["loss_box"]
    assert loss.item() == pytest.approx(expected, rel=1e-5)  # single positive: Σ(1−giou)·ctr / Σctr = 1 − giou
    # torchvision's GIoU on the pixel boxes (option giou_pixels): I = 256, U = 512, C = 576, no +1
    pixels = detection_losses(out, locs, labels, reg_targets, 0.25, 2.0, box_loss="giou_pixels")["loss_box"]
    assert pixels.item() == pytest.approx(1 - (256 / 512 - 64 / 576), rel=1e-5)
    with pytest.raises(ValueError, match="^box_loss='l1': expected one of"):
        detection_losses(out, locs, labels, reg_targets, 0.25, 2.0, box_loss="l1")


def test_nms_runs_on_unclipped_boxes_then_clip_and_drop_empty():
    locs = pyramid_locations([(1, 4)], [8], torch.device("cpu"))  # points x = 4, 12, 20, 28 (image width 24)
    cls = torch.full((4, 2), -10.0)
    cls[0, 0], cls[1, 0], cls[3, 1] = 10.0, 9.0, 8.0
    ctr = torch.full((4,), 10.0)
    # loc 0 → [0, 0, 24, 8]; loc 1 → [0, 0, 48, 8] crosses the border (IoU 0.5 with loc 0 unclipped, 1 clipped);
    # loc 3 → [26, 0, 34, 8] lies in the padding, empty once clipped
    box = torch.tensor([[4.0, 4, 20, 4], [12, 4, 36, 4], [1, 1, 1, 1], [2, 4, 6, 4]])
    det = select_detections(cls, box, ctr, locs, 0.05, 1000, 0.6, 100)
    assert det["location"].tolist() == [0, 1, 3]  # NMS before clipping keeps loc 1
    assert det["boxes"][1].tolist() == [0.0, 0.0, 48.0, 8.0]  # returned unclipped
    boxes, nonempty = postprocess_boxes(det["boxes"], (2.0, 0.5), (4, 48))  # scale to the original size
    assert boxes.tolist() == [[0.0, 0.0, 48.0, 4.0], [0.0, 0.0, 48.0, 4.0], [48.0, 0.0, 48.0, 4.0]]
    assert nonempty.tolist() == [True, True, False]


def test_top_detections_keep_ties_at_the_kth_score():
    locs = pyramid_locations([(1, 4)], [8], torch.device("cpu"))
    cls = torch.full((4, 4), -10.0)
    cls[0, 0], cls[1, 1], cls[2, 2], cls[3, 3] = 3.0, 2.0, 2.0, 1.0  # one class each: NMS keeps all
    det = select_detections(cls, torch.full((4, 4), 2.0), torch.full((4,), 10.0), locs, 0.05, 1000, 0.6, 2)
    assert det["location"].tolist() == [0, 1, 2]  # scores ≥ the 2nd largest: the tie at 2.0 stays
    det = select_detections(cls, torch.full((4, 4), 2.0), torch.full((4,), 10.0), locs, 0.05, 1000, 0.6, 3)
    assert det["location"].tolist() == [0, 1, 2]


def test_head_shapes_and_box_scale():
    torch.manual_seed(0)
    head = FCOSHead(16, 16, 2, num_classes=3, num_params=169, strides=[8, 16], prior_prob=0.01)
    out = head([torch.rand(2, 16, 4, 6), torch.rand(2, 16, 2, 3)])
    assert out.cls_logits.shape == (2, 30, 3) and out.box_reg.shape == (2, 30, 4)
    assert out.ctr_logits.shape == (2, 30) and out.params.shape == (2, 30, 169)
    assert torch.allclose(head.cls_logits.bias, torch.full((3,), -math.log(99)))
    assert (out.box_reg >= 0).all()
    assert head.cls_tower[1].num_groups == 8  # narrow tower → fewer groups, 2 channels each
    assert FCOSHead(256, 256, 1, 3, 169, [8], 0.01).cls_tower[1].num_groups == 32


def test_select_detections_threshold_and_class_aware_nms():
    locs = pyramid_locations([(1, 4)], [8], torch.device("cpu"))  # points x = 4, 12, 20, 28
    big = 10.0
    cls = torch.full((4, 2), -big)
    cls[0, 0] = cls[1, 0] = cls[2, 1] = big  # locs 0 and 1 class 0, loc 2 class 1, loc 3 nothing
    ctr = torch.tensor([big, 0.0, big - 1, big])  # loc 1: score ≈ sqrt(0.5)
    box = torch.tensor([[4.0, 4, 20, 4], [12, 4, 12, 4], [20, 4, 4, 4], [1, 1, 1, 1]])
    det = select_detections(cls, box, ctr, locs, 0.05, 1000, 0.6, 100)
    # boxes 0, 1, 2 are all [0, 0, 24, 8]: NMS drops loc 1 (same class), keeps loc 2
    assert det["location"].tolist() == [0, 2]
    assert det["labels"].tolist() == [0, 1]
    assert det["boxes"].tolist() == [[0.0, 0.0, 24.0, 8.0], [0.0, 0.0, 24.0, 8.0]]
    s = torch.sigmoid(torch.tensor([big, big - 1]))
    assert torch.allclose(det["scores"], (torch.sigmoid(torch.tensor(big)) * s).sqrt(), atol=1e-6)

    det = select_detections(cls, box, ctr, locs, 0.05, 1, 0.6, 100)  # top-1 per level
    assert det["location"].tolist() == [0]

    det = select_detections(cls, box, ctr, locs, 0.99995, 1000, 0.6, 100)  # nothing passes
    assert det["boxes"].shape == (0, 4) and det["labels"].dtype == torch.long
