"""Mask paste and RLE encoding: the fast path gives exactly the straightforward path's masks and RLEs."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from crossvis.modeling.paste import AxisSampling, paste_masks, resize_window
from crossvis.rle import encode_masks

from helpers import post_processing, tiny_spec

# (input h, w) → (output H, W): integer ×2 as at 360p → 720p, non-integer up, and down.
SIZES = [((36, 64), (72, 128)), ((36, 64), (50, 91)), ((40, 60), (17, 23))]


def blob_masks(k: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Probabilities of k compact blobs (most of each frame far below 0.5), one empty mask, one all-on."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    centres = torch.rand(k, 2, generator=g) * torch.tensor([h, w])
    radii = 2 + torch.rand(k, generator=g) * min(h, w) / 4
    dist = ((ys - centres[:, 0, None, None]) ** 2 + (xs - centres[:, 1, None, None]) ** 2).sqrt()
    masks = torch.sigmoid((radii[:, None, None] - dist) * 0.7)
    masks[0] = 0.1  # nothing can be on
    masks[1] = 0.9  # everything is on
    return masks


def full_frame(masks: torch.Tensor, out_size: tuple[int, int], threshold: float) -> torch.Tensor:
    """The straightforward path: the same bilinear arithmetic over the whole frame of every mask, then threshold."""
    (h, w), (oh, ow) = masks.shape[-2:], out_size
    rows, cols = AxisSampling.create(h, oh, masks.device), AxisSampling.create(w, ow, masks.device)
    return torch.stack([resize_window(m, rows, cols, slice(0, oh), slice(0, ow)).t() for m in masks]) > threshold


@pytest.mark.parametrize(("in_size", "out_size"), SIZES)
def test_windowed_paste_equals_full_frame_paste(in_size, out_size):
    masks = blob_masks(12, *in_size)
    pasted = paste_masks(masks, out_size, 0.5)
    assert pasted.dtype == torch.bool and pasted.shape == (12, *out_size)
    assert torch.equal(pasted, full_frame(masks, out_size, 0.5))
    assert not pasted[0].any() and pasted[1].all()


@pytest.mark.parametrize(("in_size", "out_size"), SIZES)
def test_paste_matches_interpolate_up_to_rounding_at_the_threshold(in_size, out_size):
    """Same sampling as F.interpolate(align_corners=False); only near-threshold pixels may round differently."""
    masks = blob_masks(12, *in_size, seed=1)
    reference = F.interpolate(masks[:, None], size=out_size, mode="bilinear", align_corners=False)[:, 0]
    pasted = paste_masks(masks, out_size, 0.5)
    differs = pasted != (reference > 0.5)
    assert ((reference[differs] - 0.5).abs() < 1e-5).all()
    assert differs.sum() <= 2  # rounding ties are rare, not a systematic shift


def test_paste_hand_computed_row():
    """One row [0, 1] of width 2 resized to width 4 (align_corners=False): 0, 0.25, 0.75, 1."""
    masks = torch.tensor([[[0.0, 1.0]]])
    assert paste_masks(masks, (1, 4), 0.5).tolist() == [[[False, False, True, True]]]
    assert paste_masks(masks, (1, 4), 0.2).tolist() == [[[False, True, True, True]]]


def test_paste_output_is_column_major_and_empty_input():
    pasted = paste_masks(blob_masks(3, 20, 30), (40, 60), 0.5)
    assert pasted.stride() == (40 * 60, 1, 40)  # each mask stored column by column, as pycocotools reads it
    assert paste_masks(torch.zeros(0, 20, 30), (40, 60), 0.5).shape == (0, 40, 60)


def test_paste_accepts_low_precision_input():
    masks = blob_masks(4, 36, 64)
    assert torch.equal(
        paste_masks(masks.bfloat16(), (72, 128), 0.5), paste_masks(masks.bfloat16().float(), (72, 128), 0.5)
    )


def straightforward_rles(masks: np.ndarray, indices: list[int]) -> list[dict]:
    """The previous encoding: gather, transpose and copy the masks into one Fortran uint8 stack."""
    rles = mask_utils.encode(np.asfortranarray(masks[indices].transpose(1, 2, 0), dtype=np.uint8))
    return [{"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles]


def test_encode_masks_equals_stacked_encoding_for_any_layout():
    pasted = paste_masks(blob_masks(6, 36, 64), (72, 128), 0.5).numpy()
    contiguous = np.ascontiguousarray(pasted)
    indices = [5, 0, 2, 3]
    expected = straightforward_rles(contiguous, indices)
    assert encode_masks(pasted, indices) == expected
    assert encode_masks(contiguous, indices) == expected
    assert mask_utils.decode(expected[0]).astype(bool).tolist() == contiguous[5].tolist()


def test_encode_masks_rejects_non_boolean_masks():
    with pytest.raises(ValueError, match="bool"):
        encode_masks(np.zeros((1, 4, 4), dtype=np.uint8), [0])


def previous_paste(masks: torch.Tensor, out_size: tuple[int, int], threshold: float) -> torch.Tensor:
    """The code before the fast path: F.interpolate of every mask over the whole frame, then threshold."""
    return F.interpolate(masks[:, None].float(), size=out_size, mode="bilinear", align_corners=False)[:, 0] > threshold


@pytest.mark.parametrize("reference_paste", [full_frame, previous_paste], ids=["same-arithmetic", "F.interpolate"])
def test_online_path_gives_the_same_rles_and_tracks_as_the_straightforward_path(monkeypatch, reference_paste):
    """Seeded tiny model, 100 detections per frame: fast paste + in-place RLE vs full-frame paste + stacked copy.

    Against the same arithmetic the equality is guaranteed; against F.interpolate (other rounding)
    it holds on this input, where no probability falls within rounding error of the threshold.
    """

    import crossvis.modeling.crossvis as crossvis_module
    import crossvis.tracking.crossvis as tracking_module
    from crossvis.engine.inference import VideoInference
    from crossvis.modeling.crossvis import CrossVIS

    torch.manual_seed(0)
    model = CrossVIS(tiny_spec("backbone.frozen_bn=false"), num_classes=3, num_identities=10).eval()
    post = post_processing(score_threshold=0.0)
    model.head.controller.weight.data.mul_(10)  # random dynamic filters then give masks with boundaries
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (90, 150, 3), dtype=np.uint8) for _ in range(3)]

    def run() -> list[dict]:
        frame_model = functools.partial(model.forward_infer, post=post)
        return VideoInference(model, frame_model, 64, 112, {}, [1, 2, 3]).run_frames(7, frames)

    fast = run()
    partial = [
        s
        for entry in fast
        for s in entry["segmentations"]
        if s is not None and 0 < mask_utils.area({"size": s["size"], "counts": s["counts"].encode()}) < 90 * 150
    ]
    assert len(partial) > 20  # the comparison covers real mask boundaries, not only empty or full masks
    monkeypatch.setattr(
        crossvis_module, "paste_masks", lambda m, size, t: reference_paste(m.float(), size, t).contiguous()
    )
    monkeypatch.setattr(tracking_module, "encode_masks", straightforward_rles)
    assert run() == fast
