"""FrameIndex: the training items read from numpy arrays equal the ones read from the json's objects."""

from __future__ import annotations

import numpy as np

from crossvis.data.index import FrameIndex
from crossvis.data.sampler import FramePairDataset
from crossvis.data.transforms import PairTransform, load_frame_rgb
from crossvis.data.ytvis import load_vis


def test_every_frame_sample_matches_the_json_objects(synthetic_root) -> None:
    # train.json mixes polygons, uncompressed and compressed RLE; some tracks have json boxes, some not.
    vis = load_vis(synthetic_root / "train.json", synthetic_root / "train" / "JPEGImages", require_annotations=True)
    index = FrameIndex.build(vis)
    for v, video in enumerate(vis.videos):
        for t in range(video.length):
            sample = index.sample(v, t)
            present = [(inst, inst.mask(t)) for inst in video.instances if not inst.iscrowd]
            present = [(inst, mask) for inst, mask in present if mask is not None]
            assert np.array_equal(sample.image, load_frame_rgb(video.frame_path(t)))
            assert sample.labels.tolist() == [inst.label for inst, _ in present]
            assert sample.identities.tolist() == [inst.identity for inst, _ in present]
            assert all(np.array_equal(m, mask) for m, (_, mask) in zip(sample.masks, present))
            for box, (inst, mask) in zip(sample.boxes, present):
                json_box = inst.box(t)
                ys, xs = np.nonzero(mask)
                expected = json_box if json_box is not None else [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
                assert np.allclose(box, expected)


def test_the_pair_dataset_keeps_only_arrays_for_workers_to_read(synthetic_root) -> None:
    vis = load_vis(synthetic_root / "train.json", synthetic_root / "train" / "JPEGImages", require_annotations=True)
    pairs = FramePairDataset(vis, 20, PairTransform(), seed=0)
    assert {type(v) for v in vars(pairs).values()} <= {np.ndarray, FrameIndex, PairTransform, float, int}
    index_fields = {type(v) for v in vars(pairs.index).values()}
    assert index_fields <= {np.ndarray, str}, index_fields  # no Python lists or dicts of the json
