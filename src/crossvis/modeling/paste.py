"""Mask paste: per-detection mask probabilities at input resolution → binary masks at the frame's size.

Semantics: bilinear resize with ``F.interpolate(..., align_corners=False)``'s sampling positions
and weights (AdelaiDet's last inference step), then ``> threshold``. It is computed as two
separable passes (rows, then columns) of plain multiplies and adds, which makes two shortcuts
exact:

* **Only where a mask can be on.** Every output value is a convex combination of at most 2×2
  source values, so it can exceed the threshold only if one of them does. Each mask is
  resized inside the output window whose sources hold such a value (with a 1e-6 relative margin
  for float rounding); everything outside stays False. Every value inside the window is the
  same float, bit for bit, as in a full-frame resize (element-wise ops do not depend on where
  the window starts), so the result equals thresholding the full-frame resize.
* **No full-resolution float copies, RLE-ready layout.** Only a window of one mask is ever held
  as float; the binary result is written straight into a buffer stored column-major per mask
  (``[K, W, H]`` memory, returned as a ``[K, H, W]`` view), the order pycocotools encodes, so RLE
  needs no transposing copy (:func:`crossvis.rle.encode_masks`).

Versus ``F.interpolate`` the weights are the same but the rounding is not (its kernel may fuse
multiply-adds), so a pixel whose probability lies within ~1e-6 of the threshold can differ
(tested in tests/test_paste.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from crossvis.timing import stage

ROUNDING_MARGIN = 1e-6  # relative; covers the float error of two convex 2-tap passes


@dataclass
class AxisSampling:
    """Bilinear sampling of one axis (``align_corners=False``): output o = w0[o]·src[i0[o]] + w1[o]·src[i1[o]]."""

    i0: Tensor  # [out] long, non-decreasing
    i1: Tensor  # [out] long, i0 or i0 + 1
    w0: Tensor  # [out] float32
    w1: Tensor  # [out] float32

    @classmethod
    def create(cls, in_size: int, out_size: int, device: torch.device) -> AxisSampling:
        # float32 arithmetic in PyTorch's order (scale = in / out), so the weights match its own
        scale = torch.tensor(in_size, dtype=torch.float32) / out_size
        src = (scale * (torch.arange(out_size, dtype=torch.float32) + 0.5) - 0.5).clamp(min=0.0)
        i0 = src.long().clamp(max=in_size - 1)
        i1 = (i0 + 1).clamp(max=in_size - 1)
        w1 = (src - i0).clamp(0.0, 1.0)
        return cls(*(t.to(device) for t in (i0, i1, 1.0 - w1, w1)))

    def window(self, lo: int, hi: int) -> tuple[int, int]:
        """Output range [start, stop) whose samples read a source index in [lo, hi]."""
        start = int(torch.searchsorted(self.i1, torch.tensor(lo, device=self.i1.device)))
        stop = int(torch.searchsorted(self.i0, torch.tensor(hi, device=self.i0.device), right=True))
        return start, stop


def resize_window(
    mask: Tensor, rows: AxisSampling, cols: AxisSampling, ys: slice, xs: slice, scratch: list[Tensor] | None = None
) -> Tensor:
    """Bilinear resize of ``mask [h, w]`` restricted to output rows ``ys`` × columns ``xs``, as [len(xs), len(ys)].

    The result is transposed (column-major), the layout pycocotools wants. ``scratch``: four flat
    float buffers reused across calls (two of ≥ len(ys)·w, two of ≥ len(ys)·len(xs) elements),
    which spares allocating (and page-faulting) full-frame temporaries for every mask.
    """
    i0, i1, w0, w1 = (t[ys] for t in (rows.i0, rows.i1, rows.w0, rows.w1))
    j0, j1, v0, v1 = (t[xs] for t in (cols.i0, cols.i1, cols.w0, cols.w1))
    r_lo, c_lo = int(i0[0]), int(j0[0])
    sub = mask[r_lo : int(i1[-1]) + 1, c_lo : int(j1[-1]) + 1]
    n_rows, n_cols, sub_w = len(i0), len(j0), sub.shape[1]
    if scratch is None:
        scratch = [mask.new_empty(n) for n in (n_rows * sub_w,) * 2 + (n_rows * n_cols,) * 2]
    a, b = (buf[: n_rows * sub_w].view(n_rows, sub_w) for buf in scratch[:2])
    c, d = (buf[: n_rows * n_cols].view(n_cols, n_rows) for buf in scratch[2:])
    torch.index_select(sub, 0, i0 - r_lo, out=a).mul_(w0[:, None])  # along y: [R, w_sub]
    torch.index_select(sub, 0, i1 - r_lo, out=b).mul_(w1[:, None])
    along_y = b.view(sub_w, n_rows).copy_(a.add_(b).t())  # transposed: [w_sub, R]
    torch.index_select(along_y, 0, j0 - c_lo, out=c).mul_(v0[:, None])  # along x: [C, R]
    torch.index_select(along_y, 0, j1 - c_lo, out=d).mul_(v1[:, None])
    return c.add_(d)


def paste_masks(masks: Tensor, out_size: tuple[int, int], threshold: float) -> Tensor:
    """``masks [K, h, w]`` probabilities → bool ``[K, H, W]`` (= bilinear resize to ``out_size`` > threshold).

    The returned tensor is a transposed view of a contiguous ``[K, W, H]`` buffer.
    """
    with stage("mask paste"):
        masks = masks.float()
        k, h, w = masks.shape
        out_h, out_w = int(out_size[0]), int(out_size[1])
        out = torch.empty((k, out_w, out_h), dtype=torch.bool, device=masks.device)
        if k == 0:
            return out.transpose(1, 2)
        rows = AxisSampling.create(h, out_h, masks.device)
        cols = AxisSampling.create(w, out_w, masks.device)
        scratch = [masks.new_empty(n) for n in (out_h * w,) * 2 + (out_h * out_w,) * 2]
        can_be_on = threshold * (1.0 - ROUNDING_MARGIN)
        row_on, col_on = (masks.amax(2) > can_be_on).tolist(), (masks.amax(1) > can_be_on).tolist()
        for i in range(k):
            if not any(row_on[i]):
                out[i].zero_()
                continue
            r_lo, r_hi = row_on[i].index(True), h - 1 - row_on[i][::-1].index(True)
            c_lo, c_hi = col_on[i].index(True), w - 1 - col_on[i][::-1].index(True)
            (y0, y1), (x0, x1) = rows.window(r_lo, r_hi), cols.window(c_lo, c_hi)
            if (y0, y1, x0, x1) != (0, out_h, 0, out_w):
                out[i].zero_()
            if y0 < y1 and x0 < x1:  # downsampling can skip every candidate source row/column
                window = resize_window(masks[i], rows, cols, slice(y0, y1), slice(x0, x1), scratch)
                torch.gt(window, threshold, out=out[i, x0:x1, y0:y1])
        return out.transpose(1, 2)
