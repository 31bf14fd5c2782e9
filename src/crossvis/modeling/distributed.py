"""Loss normalisers shared across ranks, so every GPU divides by the same number of positives."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def mean_across_ranks(value: Tensor) -> Tensor:
    """Mean of ``value`` over all ranks (identity when torch.distributed is not initialised)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / dist.get_world_size()


def positive_normalizer(count: int | Tensor, device: torch.device, across_ranks: bool = True) -> Tensor:
    """Number of positives, averaged over ranks unless ``across_ranks`` is false (this rank's own
    count), at least 1 (so empty batches give a zero loss)."""
    total = torch.as_tensor(count, dtype=torch.float32, device=device)
    return (mean_across_ranks(total) if across_ranks else total).clamp(min=1.0)
