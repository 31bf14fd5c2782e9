"""Synthetic writer: exact masks in every encoding, hard VIS content, determinism, atomic output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from crossvis.data.synthetic import main, rasterize, render_video, uncompressed_rle, write_synthetic
from crossvis.data.ytvis import decode_segmentation


def _kind(seg) -> str:
    if seg is None:
        return "null"
    return "polygon" if isinstance(seg, list) else type(seg["counts"]).__name__


def test_uncompressed_rle_counts() -> None:
    mask = np.array([[0, 1, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=bool)
    assert uncompressed_rle(mask) == {"size": [3, 4], "counts": [3, 2, 1, 1, 4, 1]}
    assert uncompressed_rle(mask[::-1, ::-1])["counts"][0] == 0  # foreground first -> empty 0-run


def test_every_encoding_decodes_to_the_drawn_masks(synthetic_root: Path) -> None:
    raw = json.loads((synthetic_root / "train.json").read_text())
    kinds = {_kind(s) for a in raw["annotations"] for s in a["segmentations"]}
    assert kinds == {"null", "str", "list", "polygon"}
    for k, video in enumerate(raw["videos"]):
        _, instances = render_video(np.random.default_rng([0, k]), 8, 128, 224)  # the writer's generator
        anns = [a for a in raw["annotations"] if a["video_id"] == video["id"]]
        assert len(anns) == len(instances)
        for ann, inst in zip(anns, instances):
            for seg, drawn in zip(ann["segmentations"], inst["masks"]):
                if seg is None:
                    assert not drawn.any()
                else:
                    assert np.array_equal(decode_segmentation(seg, 128, 224), drawn)


def test_content_exercises_vis_difficulties(synthetic_root: Path) -> None:
    raw = json.loads((synthetic_root / "train.json").read_text())
    assert [c["id"] for c in raw["categories"]] == [2, 5, 8, 11]
    assert [v["id"] for v in raw["videos"]] != list(range(len(raw["videos"])))
    for video in raw["videos"]:
        cats = [a["category_id"] for a in raw["annotations"] if a["video_id"] == video["id"]]
        assert len(cats) > len(set(cats))  # two instances of one category
    absent = [[s is None for s in a["segmentations"]] for a in raw["annotations"]]
    assert any(a[0] and not all(a) for a in absent)  # enters the frame
    assert any(a[-1] and not all(a) for a in absent)  # leaves the frame
    sides = [max(b[2], b[3]) for a in raw["annotations"] for b in a["bboxes"] if b]
    assert np.median(sides) >= 24
    occluded = 0
    for k in range(len(raw["videos"])):
        _, instances = render_video(np.random.default_rng([0, k]), 8, 128, 224)
        for t in range(8):
            visible = np.stack([inst["masks"][t] for inst in instances])
            assert visible.sum(axis=0).max() <= 1  # visible masks never overlap
            full = np.stack([rasterize(inst["polygons"][t], 128, 224) for inst in instances])
            occluded += int((full & ~visible).any(axis=(1, 2)).sum())
    assert occluded > 0


def test_deterministic_per_seed(tmp_path: Path) -> None:
    args = dict(videos=2, frames=3, height=64, width=96, val_videos=1)
    a = write_synthetic(tmp_path / "a", seed=5, **args)
    b = write_synthetic(tmp_path / "b", seed=5, **args)
    c = write_synthetic(tmp_path / "c", seed=6, **args)
    for name in ("train.json", "valid.json", "valid_gt.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    frames = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert len(frames) == 3 * 3
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in frames)
    assert (a / "train.json").read_bytes() != (c / "train.json").read_bytes()
    valid = json.loads((a / "valid.json").read_text())
    assert "annotations" not in valid
    assert json.loads((a / "valid_gt.json").read_text())["videos"] == valid["videos"]


def test_output_is_written_atomically(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    main(["--out", str(out), "--videos", "1", "--frames", "2", "--height", "64", "--width", "96", "--val-videos", "1"])
    before = (out / "train.json").read_bytes()
    with pytest.raises(FileExistsError, match="ds"):
        write_synthetic(out, videos=1, frames=2, height=64, width=96, seed=1)
    assert (out / "train.json").read_bytes() == before
    write_synthetic(out, videos=1, frames=2, height=64, width=96, seed=1, overwrite=True)
    assert (out / "train.json").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temporary directories left


def test_interrupted_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import crossvis.data.synthetic as synthetic

    calls = []

    def failing_imwrite(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return True

    monkeypatch.setattr(synthetic.cv2, "imwrite", failing_imwrite)
    with pytest.raises(KeyboardInterrupt):
        write_synthetic(tmp_path / "ds", videos=2, frames=3, height=64, width=96)
    assert list(tmp_path.iterdir()) == []
