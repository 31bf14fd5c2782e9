"""Pair augmentation: shared flip and scale, SipMask range multi-scale, boxes, dropped empty masks, loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from crossvis.data.transforms import (
    FrameSample,
    PairTransform,
    load_frame_rgb,
    preprocess_for_inference,
    resize_scale,
    resized_shape,
)


@pytest.mark.parametrize(
    "h, w, short, max_size, expected",
    [
        (720, 1280, 360, 640, 0.5),  # both limits agree
        (480, 640, 360, 640, 0.75),  # short side decides
        (300, 1200, 360, 640, 640 / 1200),  # long side would exceed max_size
        (720, 1280, 480, 960, 2 / 3),  # SipMask (960, 480): 480/720 < 960/1280
    ],
)
def test_resize_scale(h: int, w: int, short: int, max_size: int, expected: float) -> None:
    assert resize_scale(h, w, short, max_size) == pytest.approx(expected)


def _oriented_frame(h: int = 40, w: int = 80, shift: int = 0) -> FrameSample:
    """Bright left half, dark right half; one rectangle in the left part (flip is visible)."""
    image = np.full((h, w, 3), 20, np.uint8)
    image[:, : w // 2] = 220
    masks = np.zeros((1, h, w), bool)
    masks[0, 10:20, 4 + shift : 24 + shift] = True
    return FrameSample(image, masks, np.array([2]), np.array([7]))


def _is_flipped(sample: FrameSample) -> bool:
    half = sample.image.shape[1] // 2
    return sample.image[:, :half].mean() < sample.image[:, half:].mean()


def test_pair_shares_flip_and_scale() -> None:
    transform = PairTransform(flip_prob=0.5, multiscale=True, scales=[(80, 40), (160, 80)])
    seen = set()
    for seed in range(40):
        key, ref = transform(_oriented_frame(), _oriented_frame(shift=6), np.random.default_rng(seed))
        assert key.image.shape == ref.image.shape
        flipped = _is_flipped(key)
        assert _is_flipped(ref) == flipped
        for sample in (key, ref):
            mask_x = np.nonzero(sample.masks[0])[1].mean()
            assert (mask_x > sample.image.shape[1] / 2) == flipped  # the mask moved with the image
        seen.add((key.image.shape[:2], flipped))
    assert {flipped for _, flipped in seen} == {False, True}
    assert len({shape for shape, _ in seen}) > 2  # scales from the range, not only its two ends


@pytest.mark.parametrize(
    "boxes, expected",
    [
        # no json box: the mask's box with x2 = x + w, i.e. [5, 10, 30, 20], transformed
        (None, {0.0: [2.5, 5, 15, 10], 1.0: [65, 5, 77.5, 10]}),
        # a json box that differs from the mask is what gets transformed (scale 0.5; flip x -> 80 - x)
        ([[4, 8, 34, 24]], {0.0: [2, 4, 17, 12], 1.0: [63, 4, 78, 12]}),
    ],
)
def test_boxes_follow_resize_and_flip(boxes, expected) -> None:
    image = np.zeros((100, 160, 3), np.uint8)
    masks = np.zeros((1, 100, 160), bool)
    masks[0, 10:20, 5:30] = True
    frame = FrameSample(image, masks, np.array([1]), np.array([0]), None if boxes is None else np.array(boxes))
    for flip_prob, box in expected.items():
        key, ref = PairTransform(short=50, max_size=80, flip_prob=flip_prob)(frame, frame, np.random.default_rng(0))
        for sample in (key, ref):
            target = sample.to_target()
            assert target["boxes"].dtype == torch.float32
            assert target["boxes"].tolist()[0] == pytest.approx(box, abs=1e-4)
            assert target["labels"].tolist() == [1] and target["identities"].tolist() == [0]


def test_mask_boxes_stay_with_their_masks_on_random_shapes() -> None:
    rng = np.random.default_rng(1)
    h, w = 60, 90
    yy, xx = np.mgrid[:h, :w]
    centres = rng.uniform([10, 10], [50, 80], size=(4, 2))
    masks = np.stack([(yy - cy) ** 2 + (xx - cx) ** 2 < 64 for cy, cx in centres])
    frame = FrameSample(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), masks, np.arange(4), np.arange(4))
    transform = PairTransform(short=45, max_size=100, flip_prob=0.5)
    for seed in range(5):
        for sample in transform(frame, frame, np.random.default_rng(seed)):
            for mask, box in zip(sample.masks, sample.to_target()["boxes"].tolist()):
                ys, xs = np.nonzero(mask)
                # nearest-neighbour masks vs exactly scaled boxes: within one output pixel
                assert box == pytest.approx([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], abs=1.0)


@pytest.mark.parametrize(
    "h, w, side",
    [
        (100, 100, "short"),  # square: short/100 < long/100 always, the short side (360..480) decides
        (50, 400, "long"),  # 1:8: long/400 < short/50 always, the long side (649..960) decides
    ],
)
def test_multiscale_draws_the_whole_sipmask_range(h: int, w: int, side: str) -> None:
    """mmdet v1 random_scale mode='range': long uniform over 649..960, short over 360..480."""
    transform = PairTransform(multiscale=True, scales=[(649, 360), (960, 480)], flip_prob=0.5)
    frame = FrameSample(
        np.zeros((h, w, 3), np.uint8), np.zeros((0, h, w), bool), np.zeros(0, np.int64), np.zeros(0, np.int64)
    )
    rng = np.random.default_rng(0)
    sizes = []
    for _ in range(300):
        key, ref = transform(frame, frame, rng)
        assert key.image.shape == ref.image.shape  # one draw per pair
        sizes.append(min(key.image.shape[:2]) if side == "short" else max(key.image.shape[:2]))
    lo, hi = (360, 480) if side == "short" else (649, 960)
    assert lo <= min(sizes) and max(sizes) <= hi
    assert len(set(sizes)) > (60 if side == "short" else 150)  # not just the two endpoints
    assert min(sizes) < lo + 0.05 * (hi - lo) and max(sizes) > hi - 0.05 * (hi - lo)


def test_multiscale_needs_two_scales() -> None:
    with pytest.raises(ValueError, match="data.transform.scales"):
        PairTransform(multiscale=True, scales=[(649, 360)])


def test_instances_with_vanished_masks_are_dropped_per_frame() -> None:
    image = np.zeros((40, 80, 3), np.uint8)
    masks = np.zeros((2, 40, 80), bool)
    masks[0, 10:20, 10:30] = True
    masks[1, 4, 4] = True  # a single pixel on an even row: Pillow's nearest-neighbour halving keeps odd rows
    key = FrameSample(image, masks, np.array([0, 1]), np.array([10, 11]))
    ref = FrameSample(image, masks[:1], np.array([0]), np.array([10]))
    out_key, out_ref = PairTransform(short=20, max_size=40, flip_prob=0.0)(key, ref, np.random.default_rng(0))
    assert out_key.identities.tolist() == [10] and out_key.masks.shape == (1, 20, 40)
    assert out_ref.identities.tolist() == [10]


def test_pair_without_instances() -> None:
    none = np.zeros(0, np.int64)
    empty = FrameSample(np.zeros((40, 80, 3), np.uint8), np.zeros((0, 40, 80), bool), none, none)
    key, _ = PairTransform(short=20, max_size=40)(empty, empty, np.random.default_rng(0))
    target = key.to_target()
    assert target["masks"].shape == (0, 20, 40) and target["boxes"].shape == (0, 4)


def test_load_frame_rgb_and_errors(tmp_path: Path) -> None:
    import cv2

    bgr = np.zeros((4, 6, 3), np.uint8)
    bgr[..., 2] = 255  # red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    rgb = load_frame_rgb(tmp_path / "red.png")
    assert rgb.shape == (4, 6, 3) and rgb[0, 0].tolist() == [255, 0, 0]
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        load_frame_rgb(tmp_path / "missing.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.jpg"):
        load_frame_rgb(tmp_path / "broken.jpg")


def test_resized_shape_rounds_half_up_like_detectron2() -> None:
    # ResizeShortestEdge.get_output_shape: 2x5 at short 1 → 1 x 2.5 → int(2.5 + 0.5) = 3 (round() gives 2)
    assert resized_shape(2, 5, 1, 100) == (1, 3)
    assert resized_shape(5, 2, 1, 100) == (3, 1)
    # capped by max_size: 300x1200 at (360, 640) → 360x1440 → ×640/1440 → 160 x 640
    assert resized_shape(300, 1200, 360, 640) == (160, 640)


def test_inference_resize_is_pillows_antialiased_bilinear() -> None:
    # detectron2's ResizeTransform (PIL bilinear): shrinking 4 → 2 columns, output 0 centred at 1.0 with
    # support 2 reads columns 0, 1, 2 with triangle weights 0.75, 0.75, 0.25 (/1.75): [0, 0, 70, 70] → 10;
    # output 1 reads columns 1, 2, 3 with 0.25, 0.75, 0.75 → 60. cv2.INTER_LINEAR would give [0, 70].
    image = np.tile(np.array([0, 0, 70, 70], np.uint8)[None, :, None], (4, 1, 3))
    out = preprocess_for_inference(image, 2, 2)
    assert out.shape == (3, 2, 2)
    assert torch.equal(out, torch.tensor([10.0, 60.0]).expand(3, 2, 2))


def test_preprocess_for_inference() -> None:
    image = np.full((720, 1280, 3), 7, np.uint8)
    out = preprocess_for_inference(image, 360, 640)
    assert out.shape == (3, 360, 640) and out.dtype == torch.float32
    assert torch.all(out == 7.0)  # 0..255 range, not normalised


@pytest.mark.parametrize("flip_prob", [0.0, 1.0])
def test_training_resize_uses_detectron2s_kernels_then_flips(flip_prob: float) -> None:
    """The training pair goes through the inference resize (Pillow BILINEAR, see the test above: [10, 60])
    and masks through Pillow NEAREST, then the flip. Shrinking columns [0, 1, 1, 0] of a mask to 2,
    Pillow's NEAREST samples the source pixel under each output centre, floor((x + 0.5) * 2) = 1, 3 →
    [1, 0]; cv2's INTER_NEAREST samples floor(x * 2) = 0, 2 → [0, 1]."""
    image = np.tile(np.array([0, 0, 70, 70], np.uint8)[None, :, None], (4, 1, 3))
    masks = np.tile(np.array([False, True, True, False])[None, None, :], (1, 4, 1))
    frame = FrameSample(image, masks, np.array([1]), np.array([0]), np.array([[1.0, 0, 3, 4]]))
    key, ref = PairTransform(short=2, max_size=2, flip_prob=flip_prob)(frame, frame, np.random.default_rng(0))
    image_row, mask_row = [10, 60], [True, False]
    if flip_prob:
        image_row, mask_row = image_row[::-1], mask_row[::-1]
    for sample in (key, ref):
        assert sample.image[:, :, 0].tolist() == [image_row] * 2
        assert sample.masks[0].tolist() == [mask_row] * 2
        assert sample.boxes.tolist() == [[0.5, 0, 1.5, 2]]  # [1, 0, 3, 4] x 0.5; flipped: 2 - x → the same box
