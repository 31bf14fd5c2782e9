"""Frame-pair sampling: reference window bounds, fall-back, determinism and the epoch sampler."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from crossvis.data.index import FrameIndex
from crossvis.data.sampler import (
    EpochSampler,
    FramePairDataset,
    choose_reference,
    parse_max_offset,
    reference_candidates,
)
from crossvis.data.transforms import PairTransform
from crossvis.data.ytvis import load_vis, vis_from_dict

ANNOTATED = np.array([0, 2, 3, 7, 20])


@pytest.mark.parametrize(
    "key, T, expected",
    [
        (3, 1, [2]),
        (3, 5, [0, 2, 7]),
        (3, math.inf, [0, 2, 7, 20]),
        (7, 1, []),
        (7, 5, [2, 3]),
        (20, 13, [7]),
        (0, 2, [2]),
    ],
)
def test_reference_candidates_window(key: int, T: float, expected: list[int]) -> None:
    assert reference_candidates(ANNOTATED, key, T).tolist() == expected


def test_no_candidate_falls_back_to_key_frame() -> None:
    rng = np.random.default_rng(0)
    assert choose_reference(np.array([0]), 0, math.inf, rng) == 0  # one-frame video
    assert choose_reference(ANNOTATED, 7, 1, rng) == 7


def test_reference_is_uniform_over_candidates() -> None:
    counts = Counter(choose_reference(ANNOTATED, 3, 5, np.random.default_rng(s)) for s in range(3000))
    assert set(counts) == {0, 2, 7}
    assert all(abs(n / 3000 - 1 / 3) < 0.04 for n in counts.values())


@pytest.mark.parametrize("T, expected", [(1, 1.0), (20, 20.0), ("inf", math.inf), (math.inf, math.inf), ("5", 5.0)])
def test_parse_max_offset_accepts_hydra_values(T, expected: float) -> None:
    assert parse_max_offset(T) == expected


@pytest.mark.parametrize("T", [0, -3, 2.5, "abc", None, True])
def test_parse_max_offset_rejects(T) -> None:
    with pytest.raises(ValueError, match="^T: expected a positive integer or 'inf'"):  # its own argument
        parse_max_offset(T)


def _pairs_over(root: Path, T) -> FramePairDataset:
    vis = load_vis(root / "train.json", root / "train" / "JPEGImages")
    return FramePairDataset(vis, T, PairTransform(short=64, max_size=112), seed=3)


def _annotated_frames_from_json(root: Path) -> dict[int, set[int]]:
    raw = json.loads((root / "train.json").read_text())
    frames: dict[int, set[int]] = {v["id"]: set() for v in raw["videos"]}
    for ann in raw["annotations"]:
        if not ann["iscrowd"]:
            frames[ann["video_id"]] |= {t for t, s in enumerate(ann["segmentations"]) if s is not None}
    return frames


@pytest.mark.parametrize("T", [1, 5, "inf"])
def test_pairs_respect_T_on_synthetic(synthetic_root: Path, T) -> None:
    pairs = _pairs_over(synthetic_root, T)
    annotated = _annotated_frames_from_json(synthetic_root)
    assert len(pairs) == sum(len(f) for f in annotated.values())  # one pair per annotated key frame
    limit = parse_max_offset(T)
    offsets = []
    for epoch in range(3):
        for index in range(len(pairs)):
            vi, ref, _ = pairs.pair(index, epoch)
            video_id = int(pairs.index.video_ids[vi])
            key = pairs.key(index)[1]
            assert key in annotated[video_id] and ref in annotated[video_id]
            others = {j for j in annotated[video_id] if 0 < abs(j - key) <= limit}
            assert (ref in others) if others else ref == key
            offsets.append(abs(ref - key))
    assert max(offsets) <= limit
    if T == "inf":
        assert max(offsets) > 5  # the window really is unbounded (8-frame videos)


def test_pairs_deterministic_per_seed_and_vary_by_epoch(synthetic_root: Path) -> None:
    a, b = _pairs_over(synthetic_root, "inf"), _pairs_over(synthetic_root, "inf")
    first = a[(4, 0)]
    again = b[(4, 0)]
    assert first["meta"] == again["meta"]
    assert torch.equal(first["images"], again["images"])
    refs = lambda ds, epoch: [ds.pair(i, epoch)[1] for i in range(len(ds))]  # noqa: E731
    assert refs(a, 0) == refs(b, 0)
    assert refs(a, 0) != refs(a, 1)
    b.set_epoch(1)
    assert b[4]["meta"] == a[(4, 1)]["meta"]


def test_epoch_sampler_tags_epoch_and_shards() -> None:
    dataset = list(range(10))
    shards = [EpochSampler(dataset, num_replicas=2, rank=r, shuffle=True, seed=1) for r in range(2)]
    for s in shards:
        s.set_epoch(4)
    items = [list(s) for s in shards]
    assert all(epoch == 4 for shard in items for _, epoch in shard)
    assert sorted(i for shard in items for i, _ in shard) == list(range(10))
    single = EpochSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=1)
    order0 = [i for i, _ in single]
    single.set_epoch(1)
    assert [i for i, _ in single] != order0


@pytest.mark.parametrize("replicas", [1, 2])
def test_epoch_sampler_resumes_where_an_epoch_stopped_and_only_once(replicas: int) -> None:
    make = lambda: [EpochSampler(list(range(11)), replicas, rank, shuffle=True, seed=3) for rank in range(replicas)]  # noqa: E731
    straight, resumed = make(), make()
    for a, b in zip(straight, resumed):
        a.set_epoch(2)
        whole = list(a)
        b.resume_at(2, 4)
        assert list(b) == whole[4:]  # the rest of epoch 2, tagged with epoch 2
        assert list(b) == whole  # the next pass is whole again
        b.resume_at(2, 4)
        b.set_epoch(3)  # Lightning moved on to another epoch: nothing to skip there
        a.set_epoch(3)
        assert list(b) == list(a)


def test_one_frame_video_pairs_with_itself() -> None:
    raw = {
        "videos": [{"id": 3, "width": 4, "height": 3, "length": 1, "file_names": ["x/0.jpg"]}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [
            {"id": 9, "video_id": 3, "category_id": 1, "iscrowd": 0, "segmentations": [[[0, 0, 2, 0, 2, 2]]]}
        ],
    }
    pairs = FramePairDataset(vis_from_dict(raw, "mem.json", "."), 1, PairTransform(), seed=0)
    assert len(pairs) == 1 and pairs.pair(0, 0)[:2] == (0, 0)


def test_frame_boxes_come_from_json_bboxes_else_masks(synthetic_root: Path, tmp_path: Path) -> None:
    """The public code's boxes: json ``bboxes`` (x, y, w, h -> x2 = x + w); masks where there is none."""
    raw = json.loads((synthetic_root / "train.json").read_text())
    video_id = raw["videos"][0]["id"]
    anns = [a for a in raw["annotations"] if a["video_id"] == video_id]
    t = next(
        t
        for t in range(len(anns[0]["segmentations"]))
        if anns[0]["segmentations"][t] is not None and anns[1]["segmentations"][t] is not None
    )
    anns[0]["bboxes"][t] = [10, 20, 30, 40]  # differs from its mask on purpose
    del anns[1]["bboxes"]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(raw))
    vis = load_vis(path, synthetic_root / "train" / "JPEGImages")
    video = vis.video_by_id[video_id]
    sample = FrameIndex.build(vis).sample(vis.videos.index(video), t)
    boxes = dict(zip(sample.identities.tolist(), sample.boxes.tolist()))
    by_ann = {inst.ann_id: inst for inst in video.instances}
    assert boxes[by_ann[anns[0]["id"]].identity] == [10, 20, 40, 60]
    ys, xs = np.nonzero(by_ann[anns[1]["id"]].mask(t))
    assert boxes[by_ann[anns[1]["id"]].identity] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_key_frames_are_arrays_in_video_order(synthetic_root: Path) -> None:
    vis = load_vis(synthetic_root / "train.json", synthetic_root / "train" / "JPEGImages", require_annotations=True)
    pairs = FramePairDataset(vis, 20, PairTransform(), seed=0)
    assert isinstance(pairs.key_frames, np.ndarray) and isinstance(pairs.key_videos, np.ndarray)
    expected = [(vi, int(t)) for vi, v in enumerate(vis.videos) for t in v.annotated_frames()]
    assert [pairs.key(i) for i in range(len(pairs))] == expected
    assert all(list(pairs.annotated(vi)) == list(v.annotated_frames()) for vi, v in enumerate(vis.videos))
