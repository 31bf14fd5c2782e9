"""PackedList: the index loader workers read, one numpy buffer instead of Python objects."""

from __future__ import annotations

import numpy as np
import pytest

from crossvis.data.packed import PackedList
from crossvis.data.sampler import FramePairDataset
from crossvis.data.transforms import PairTransform
from crossvis.data.ytvis import load_vis


def test_items_come_back_equal_and_private() -> None:
    items = [{"id": 3, "counts": [5, 7, 9]}, None, [1.5, "x"]]
    packed = PackedList(items)
    assert len(packed) == 3 and [packed[i] for i in range(3)] == items and packed[-1] == items[-1]
    packed[0]["counts"].append(11)  # a copy: the buffer keeps the original
    assert packed[0] == items[0] and packed.nbytes > 0
    with pytest.raises(IndexError, match="out of range"):
        packed[3]


def test_pair_dataset_keeps_no_python_index_for_workers_to_copy(synthetic_root) -> None:
    vis = load_vis(synthetic_root / "train.json", synthetic_root / "train" / "JPEGImages", require_annotations=True)
    pairs = FramePairDataset(vis, 20, PairTransform(), seed=0)
    kinds = {name: type(value) for name, value in vars(pairs).items()}
    assert set(kinds.values()) <= {np.ndarray, PackedList, PairTransform, float, int}, kinds
    assert [pairs.videos[i].id for i in range(len(vis.videos))] == [v.id for v in vis.videos]
    expected = [(vi, int(t)) for vi, v in enumerate(vis.videos) for t in v.annotated_frames()]
    assert [pairs.key(i) for i in range(len(pairs))] == expected
