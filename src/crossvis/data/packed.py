"""Read-only lists kept in one numpy byte buffer: what data-loader workers read without copying it.

A forked loader worker shares its parent's memory copy-on-write, but reading a Python object
writes its reference count: a worker that walks the dataset index as lists of dicts and lists
(the json's videos, tracks and RLE counts) copies every page it touches, and over an epoch holds
its own copy of the index (gigabytes at 8 GPUs x 4 workers on YouTube-VIS). A :class:`PackedList`
keeps each item pickled in one shared ``uint8`` array; reading item ``i`` unpickles a private copy
and writes to no shared page (detectron2 serialises its dataset list for the same reason).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from typing import Any

import numpy as np


class PackedList:
    """``items`` pickled into one buffer; ``packed[i]`` is a fresh copy of item ``i``."""

    def __init__(self, items: Iterable[Any]) -> None:
        blobs = [pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL) for item in items]
        self._offsets = np.cumsum([0, *map(len, blobs)], dtype=np.int64)
        self._buffer = np.frombuffer(b"".join(blobs), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int) -> Any:
        if not -len(self) <= index < len(self):
            raise IndexError(f"PackedList index {index} out of range ({len(self)} items)")
        index %= len(self)
        return pickle.loads(self._buffer[self._offsets[index] : self._offsets[index + 1]].data)

    @property
    def nbytes(self) -> int:
        """Size of the buffer and the offsets, in bytes."""
        return self._buffer.nbytes + self._offsets.nbytes
