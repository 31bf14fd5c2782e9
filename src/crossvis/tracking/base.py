"""What every online tracker offers: one video per instance, one frame's detections at a time."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Union

import numpy as np

# label -> dataset category id: a mapping, a list indexed by label, or a function
CategoryLookup = Union[Mapping[int, int], Sequence[int], Callable[[int], int]]


def category_of(lookup: CategoryLookup) -> Callable[[int], int]:
    """``lookup`` as a function of the label."""
    return lookup.__getitem__ if isinstance(lookup, (Mapping, Sequence)) else lookup


class Tracker(ABC):
    """Links per-frame detections of one video to tracks as the frames arrive, then gives the video's
    official result entries (one per track, an RLE or None for every frame seen)."""

    @property
    @abstractmethod
    def num_frames(self) -> int:
        """Frames seen so far: the length of every result's segmentations."""

    @property
    @abstractmethod
    def num_tracks(self) -> int:
        """Tracks started so far."""

    @abstractmethod
    def update(self, frame_index: int, detections: Mapping[str, Any]) -> np.ndarray:
        """Link one frame's detections; returns each detection's track index, -1 where it was dropped."""

    @abstractmethod
    def video_results(self, video_id: int, label_to_category_id: CategoryLookup) -> list[dict]:
        """Official result entries of the video, one per track."""
