"""Inference precision (``model.inference.precision``) and memory layout (``model.inference.channels_last``).

``precision``: 32 (default, plain float32), ``bf16`` or 16 run the network under
``torch.autocast`` with that dtype (bf16 also runs on CPU); the outputs are handed back as
float32, and the mask paste always runs in float32. ``channels_last`` converts the model's 4-D
weights to ``torch.channels_last`` at its first inference call (convolutions then run NHWC,
usually faster with cuDNN/oneDNN under mixed precision; the model stays converted, which changes
no result beyond float rounding).
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import Tensor, nn

from crossvis.errors import ArgumentError

AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


def autocast_dtype(precision: int | str) -> torch.dtype | None:
    """The autocast dtype of ``model.inference.precision`` (None for plain float32)."""
    key = str(precision)
    if key not in AUTOCAST_DTYPES:
        raise ArgumentError("precision", f": expected one of 32, bf16, 16, got {precision!r}")
    return AUTOCAST_DTYPES[key]


def with_inference_precision(forward_infer: Callable[..., dict[str, Tensor]]) -> Callable[..., dict[str, Tensor]]:
    """Decorate a model's ``forward_infer(self, image, ...)`` with the ``self.cfg.inference`` precision and layout."""

    @functools.wraps(forward_infer)
    def wrapper(self: nn.Module, image: Tensor, *args, **kwargs) -> dict[str, Tensor]:
        cfg = self.cfg.inference
        dtype = autocast_dtype(cfg.get("precision", 32))
        if cfg.get("channels_last", False) and not getattr(self, "_channels_last", False):
            self.to(memory_format=torch.channels_last)
            self._channels_last = True
        with torch.autocast(image.device.type, dtype=dtype, enabled=dtype is not None):
            out = forward_infer(self, image, *args, **kwargs)
        return {k: v.float() if v.is_floating_point() else v for k, v in out.items()}

    return wrapper
