"""Synthetic writer: exact masks in every encoding, hard VIS content, determinism, atomic output."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from crossvis.data.synthetic import STYLES, main, rasterize, render_video, uncompressed_rle, write_synthetic
from crossvis.rle import decode_segmentation


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


@pytest.mark.parametrize("style", ["classic", "clutter"])
def test_more_valid_videos_extend_the_valid_split_and_keep_the_training_set(tmp_path: Path, style: str) -> None:
    """A larger valid set for a steadier AP: same training videos, the first valid videos unchanged."""
    args = dict(videos=2, frames=3, height=64, width=96, seed=5, style=style)
    small = write_synthetic(tmp_path / "small", val_videos=1, **args)
    large = write_synthetic(tmp_path / "large", val_videos=3, **args)
    assert (small / "train.json").read_bytes() == (large / "train.json").read_bytes()
    train_frames = sorted(p.relative_to(small) for p in (small / "train").rglob("*.jpg"))
    assert train_frames and all((small / f).read_bytes() == (large / f).read_bytes() for f in train_frames)
    gt_small, gt_large = (json.loads((d / "valid_gt.json").read_text()) for d in (small, large))
    assert len(gt_large["videos"]) == 3 and gt_large["videos"][0] == gt_small["videos"][0]
    first = gt_small["videos"][0]["id"]
    assert [a for a in gt_large["annotations"] if a["video_id"] == first] == gt_small["annotations"]
    valid_frames = sorted(p.relative_to(small) for p in (small / "valid").rglob("*.jpg"))
    assert all((small / f).read_bytes() == (large / f).read_bytes() for f in valid_frames)


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


# SHA-256 of the default design's output, recorded with the writer as it was before ``--style`` existed.
CLASSIC_RENDER_SHA = "c1a689d710ea15def1e27e2027d618faffd7b0cd181a522e76d3991ca9d8758f"
CLASSIC_JSON_SHA = "7c7a5963628b0c1d775b0d1bf2e456d7b033739526154ea87c1132b165601a92"


def test_default_style_output_is_unchanged(tmp_path: Path) -> None:
    h = hashlib.sha256()
    for k in range(3):
        images, instances = render_video(np.random.default_rng([3, k]), 4, 64, 96)
        for image in images:
            h.update(image.tobytes())
        for inst in instances:
            h.update(inst["masks"].tobytes())
            h.update(str(inst["kind"]).encode())
    assert h.hexdigest() == CLASSIC_RENDER_SHA
    out = write_synthetic(tmp_path / "d", videos=2, frames=3, seed=3, height=64, width=96, val_videos=1)
    h = hashlib.sha256()
    for name in ("train.json", "valid.json", "valid_gt.json"):
        h.update((out / name).read_bytes())
    assert h.hexdigest() == CLASSIC_JSON_SHA


def _light_colour_spread(style: str) -> float:
    """Mean over categories of the spread (std, RGB) of an instance's light colour across 6 videos."""
    colours: dict[int, list[np.ndarray]] = {}
    for k in range(6):
        images, instances = render_video(np.random.default_rng([0, k]), 8, 128, 224, style)
        for inst in instances:
            t = int(np.argmax(inst["masks"].sum(axis=(1, 2))))
            pixels = images[t][inst["masks"][t]].astype(float)
            luma = pixels.sum(axis=1)
            colours.setdefault(inst["kind"], []).append(pixels[luma > np.median(luma)].mean(axis=0))
    return float(np.mean([np.std(c, axis=0).mean() for c in colours.values()]))


def test_clutter_style_content(tmp_path: Path) -> None:
    frames, height, width = 8, 128, 224
    twin_overlaps, backgrounds = 0, []
    for k in range(6):
        images, instances = render_video(np.random.default_rng([0, k]), frames, height, width, "clutter")
        kinds = [inst["kind"] for inst in instances]
        twin = max(set(kinds), key=kinds.count)
        a, b = (inst for inst in instances if inst["kind"] == twin)
        full = [[rasterize(p, height, width) for p in inst["polygons"]] for inst in (a, b)]
        twin_overlaps += any((fa & fb).any() for fa, fb in zip(*full))  # the two same-category instances cross
        covered = np.any([inst["masks"][0] for inst in instances], axis=0)
        backgrounds.append(images[0][~covered].astype(float).std(axis=0).mean())
    assert twin_overlaps == 6
    assert np.mean(backgrounds) > 30  # colourful noise with distractors, not a muted backdrop
    # colours are drawn per instance, not per category
    assert _light_colour_spread("clutter") > 2 * _light_colour_spread("classic")
    out = write_synthetic(
        tmp_path / "c", videos=2, frames=3, seed=0, height=64, width=96, val_videos=1, style="clutter"
    )
    raw = json.loads((out / "train.json").read_text())
    assert [(c["id"], c["name"]) for c in raw["categories"]] == [c[:2] for c in STYLES["clutter"].categories]
    assert {a["category_id"] for a in raw["annotations"]} <= {c[0] for c in STYLES["clutter"].categories}


def test_style_option_and_unknown_style(tmp_path: Path) -> None:
    args = ["--videos", "1", "--frames", "2", "--height", "64", "--width", "96", "--val-videos", "1"]
    main(["--out", str(tmp_path / "c"), "--style", "clutter", *args])
    main(["--out", str(tmp_path / "d"), *args])
    assert json.loads((tmp_path / "c" / "train.json").read_text())["categories"][0]["name"] == "grid_hexagon"
    assert json.loads((tmp_path / "d" / "train.json").read_text())["categories"][0]["name"] == "striped_ellipse"
    with pytest.raises(ValueError, match="style='plain'"):
        write_synthetic(tmp_path / "e", videos=1, frames=2, height=64, width=96, style="plain")
