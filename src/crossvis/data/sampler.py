"""Training frame pairs: a key frame t and a reference frame t+δ of the same video.

Key frames are the frames with at least one non-crowd instance; one epoch visits each once, so
the pair dataset is map-style with one item per key frame (a distributed sampler shards it).
The reference is uniform over the other annotated frames j of the video with 0 < |t-j| <= T
(paper Table 6 varies T; T = inf means any frame), falling back to the key frame itself.

Randomness (reference choice, scale, flip) comes from a generator seeded with
(seed, epoch, index), so an item is reproducible and changes from epoch to epoch; ``seed`` is the
run's top-level ``seed`` (the data module passes it here and to the shuffling sampler), so one
number fixes a run's data as well as its weights. The epoch
travels inside the index: :class:`EpochSampler` yields ``(index, epoch)``, which keeps
persistent data-loader workers (whose dataset copies never see ``set_epoch``) in step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from crossvis.data.index import FrameIndex
from crossvis.data.transforms import PairTransform
from crossvis.data.ytvis import VISDataset
from crossvis.errors import ArgumentError


def parse_max_offset(T: int | float | str) -> float:
    """Accept T as a positive int, ``float('inf')`` or the string ``"inf"`` (as Hydra passes it)."""
    try:
        value = math.nan if isinstance(T, bool) else float(T)
    except (TypeError, ValueError):
        value = math.nan
    if not (value >= 1 and (math.isinf(value) or value.is_integer())):
        raise ArgumentError("T", f": expected a positive integer or 'inf', got {T!r}")
    return value


def reference_candidates(annotated: np.ndarray, key: int, T: float) -> np.ndarray:
    """Annotated frames j (sorted array) with 0 < |key - j| <= T."""
    lo = np.searchsorted(annotated, key - T, side="left")
    hi = np.searchsorted(annotated, key + T, side="right")
    window = annotated[lo:hi]
    return window[window != key]


def choose_reference(annotated: np.ndarray, key: int, T: float, rng: np.random.Generator) -> int:
    """Uniform reference frame; the key frame itself when no other annotated frame is within T."""
    candidates = reference_candidates(annotated, key, T)
    return int(rng.choice(candidates)) if len(candidates) else key


class FramePairDataset(Dataset):
    """One (key, reference) pair per annotated key frame; items are dicts (see ``datamodule``).

    Items are read from a :class:`FrameIndex` of numpy arrays, not from the json's objects, so loader
    workers do not copy the dataset index page by page over an epoch.
    """

    def __init__(self, vis: VISDataset, T: int | float | str, transform: PairTransform, seed: int) -> None:
        self.T = parse_max_offset(T)
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0
        self.index = FrameIndex.build(vis)
        annotated = [v.annotated_frames() for v in vis.videos]
        counts = np.array([len(frames) for frames in annotated], dtype=np.int64)
        # Key frame i is frame key_frames[i] of video key_videos[i]; a video's annotated frames are
        # key_frames[starts[v]:starts[v + 1]].
        self.key_frames = np.concatenate(annotated).astype(np.int64) if annotated else np.zeros(0, np.int64)
        self.key_videos = np.repeat(np.arange(len(annotated), dtype=np.int64), counts)
        self.starts = np.concatenate([[0], np.cumsum(counts)])

    def __len__(self) -> int:
        return len(self.key_frames)

    def key(self, index: int) -> tuple[int, int]:
        """(video index, key frame) of item ``index``."""
        return int(self.key_videos[index]), int(self.key_frames[index])

    def annotated(self, video_index: int) -> np.ndarray:
        """The sorted annotated frames of video ``video_index``."""
        return self.key_frames[self.starts[video_index] : self.starts[video_index + 1]]

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for plain integer indices."""
        self.epoch = int(epoch)

    def pair(self, index: int, epoch: int) -> tuple[int, int, np.random.Generator]:
        """(video index, reference frame, generator for the augmentation) of item ``index``."""
        rng = np.random.default_rng((self.seed, epoch, index))
        vi, key = self.key(index)
        return vi, choose_reference(self.annotated(vi), key, self.T, rng), rng

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        index, epoch = item if isinstance(item, tuple) else (item, self.epoch)
        vi, ref, rng = self.pair(index, epoch)
        key = self.key(index)[1]
        key_sample, ref_sample = self.transform(self.index.sample(vi, key), self.index.sample(vi, ref), rng)
        images = np.stack([key_sample.image, ref_sample.image]).transpose(0, 3, 1, 2)
        return {
            "images": torch.from_numpy(np.ascontiguousarray(images)),  # uint8 (2, 3, h, w)
            "targets": [key_sample.to_target(), ref_sample.to_target()],
            "meta": {"video_id": int(self.index.video_ids[vi]), "frames": (key, ref)},
        }


class EpochSampler(DistributedSampler):
    """Shuffled (and, with several replicas, sharded) indices tagged with the current epoch.

    Being a ``DistributedSampler``, Lightning keeps it under DDP and calls ``set_epoch`` on it
    every epoch; the epoch then reaches the dataset inside each index. The order is a pure function
    of (seed, epoch), so a resumed run only needs the epoch and how far into it training got
    (:meth:`resume_at`).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._resume: tuple[int, int] | None = None

    def resume_at(self, epoch: int, consumed: int) -> None:
        """Make the next pass epoch ``epoch`` without its first ``consumed`` indices (of this replica)."""
        self.set_epoch(epoch)
        self._resume = (int(epoch), int(consumed))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        skip = self._resume[1] if self._resume is not None and self._resume[0] == epoch else 0
        self._resume = None  # once: the following epochs are whole
        return ((int(i), epoch) for i in list(super().__iter__())[skip:])
