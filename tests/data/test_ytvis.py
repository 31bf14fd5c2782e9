"""Reader: every segmentation encoding, id mappings, and errors naming file and field."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest

from crossvis.data.sampler import FramePairDataset
from crossvis.data.transforms import PairTransform
from crossvis.data.ytvis import VISFileNotFoundError, VISFormatError, load_vis
from crossvis.rle import decode_segmentation

# 3x4 mask; column-major it reads 000 110 100 001 -> runs 3,2,1,1,4,1
MASK = np.array([[0, 1, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=bool)
MASK_COUNTS = [3, 2, 1, 1, 4, 1]


def test_uncompressed_rle_decodes_to_source() -> None:
    assert np.array_equal(decode_segmentation({"size": [3, 4], "counts": MASK_COUNTS}, 3, 4), MASK)


def test_uncompressed_rle_starting_with_foreground() -> None:
    mask = np.zeros((3, 4), bool)
    mask[:2, 0] = True  # column-major: 1 1 0 then zeros -> counts start with an empty 0-run
    assert np.array_equal(decode_segmentation({"size": [3, 4], "counts": [0, 2, 10]}, 3, 4), mask)


def test_compressed_rle_with_string_counts_decodes_to_source() -> None:
    rle = mask_utils.encode(np.asfortranarray(MASK.astype(np.uint8)))
    seg = {"size": [3, 4], "counts": rle["counts"].decode("ascii")}  # as stored in json
    assert np.array_equal(decode_segmentation(seg, 3, 4), MASK)


def test_polygon_rectangle_is_exact() -> None:
    expected = np.zeros((6, 8), bool)
    expected[1:3, 1:4] = True  # corners (1,1)-(4,3) cover pixels x 1..3, y 1..2
    assert np.array_equal(decode_segmentation([[1, 1, 4, 1, 4, 3, 1, 3]], 6, 8), expected)


def test_multi_part_polygon_is_the_union() -> None:
    expected = np.zeros((6, 8), bool)
    expected[1:3, 1:4] = True
    expected[4:6, 5:8] = True
    assert np.array_equal(decode_segmentation([[1, 1, 4, 1, 4, 3, 1, 3], [5, 4, 8, 4, 8, 6, 5, 6]], 6, 8), expected)


def test_rle_with_wrong_size_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"\[3, 4\]"):
        decode_segmentation({"size": [3, 4], "counts": MASK_COUNTS}, 4, 3)


def _dataset_dict() -> dict:
    """Two videos (one without annotations), non-contiguous ids, every encoding, extra keys."""
    return {
        "info": {"note": "extra keys are ignored"},
        "videos": [
            {"id": 40, "width": 4, "height": 3, "length": 3, "file_names": ["b/0.jpg", "b/1.jpg", "b/2.jpg"], "x": 1},
            {"id": 7, "width": 4, "height": 3, "length": 2, "file_names": ["a/0.jpg", "a/5.jpg"]},
            {"id": 90, "width": 4, "height": 3, "length": 1, "file_names": ["c/0.jpg"]},
        ],
        "categories": [{"id": 30, "name": "cat"}, {"id": 4, "name": "dog"}],
        "annotations": [
            {
                "id": 500,
                "video_id": 40,
                "category_id": 30,
                "iscrowd": 0,
                "segmentations": [{"size": [3, 4], "counts": MASK_COUNTS}, None, [[0, 0, 2, 0, 2, 2, 0, 2]]],
            },
            {
                "id": 12,
                "video_id": 7,
                "category_id": 4,
                "iscrowd": 0,
                "areas": [1, None],
                "segmentations": [None, {"size": [3, 4], "counts": "01;"}],  # pixel (0, 0)
                "bboxes": [None, [0.5, 0, 1.5, 1]],
            },
            {
                "id": 77,
                "video_id": 40,
                "category_id": 4,
                "iscrowd": 1,
                "segmentations": [None, {"size": [3, 4], "counts": [12]}, None],
            },
        ],
    }


def _write(tmp_path: Path, obj: dict, name: str = "train.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return path


def test_reader_maps_ids_and_decodes(tmp_path: Path) -> None:
    vis = load_vis(_write(tmp_path, _dataset_dict()), tmp_path / "JPEGImages")
    assert [v.id for v in vis.videos] == [7, 40, 90]  # sorted by id
    assert vis.category_names == ["dog", "cat"]  # sorted by id: 4, 30
    assert vis.category_id_to_label == {4: 0, 30: 1}
    assert [vis.label_to_category_id(i) for i in range(2)] == [4, 30]
    assert vis.num_classes == 2 and vis.num_identities == 3 and vis.has_annotations
    identities = {inst.ann_id: inst.identity for v in vis.videos for inst in v.instances}
    assert identities == {12: 0, 77: 1, 500: 2}  # annotation ids in order -> 0..M-1
    v40 = vis.video_by_id[40]
    first = next(i for i in v40.instances if i.ann_id == 500)
    assert first.label == 1 and first.category_id == 30
    assert np.array_equal(first.mask(0), MASK)
    assert first.mask(1) is None
    square = np.zeros((3, 4), bool)
    square[:2, :2] = True
    assert np.array_equal(first.mask(2), square)
    corner = np.zeros((3, 4), bool)
    corner[0, 0] = True
    assert np.array_equal(vis.video_by_id[7].instances[0].mask(1), corner)
    assert v40.frame_path(1) == tmp_path / "JPEGImages" / "b/1.jpg"
    assert list(v40.annotated_frames()) == [0, 2]  # frame 1 only has a crowd instance
    assert vis.video_by_id[90].instances == []
    assert list(vis.video_by_id[90].annotated_frames()) == []
    assert vis.raw["info"]["note"] == "extra keys are ignored"
    # json bboxes: [x, y, w, h] -> xyxy with x2 = x + w; absent key or null entry -> None
    assert vis.video_by_id[7].instances[0].box(1).tolist() == [0.5, 0.0, 2.0, 1.0]
    assert vis.video_by_id[7].instances[0].box(0) is None and first.box(0) is None


def test_json_boxes_are_clipped_to_the_frame(tmp_path: Path) -> None:
    raw = _dataset_dict()
    raw["annotations"][1]["bboxes"] = [None, [-1, 1, 9, 5]]  # frame is 4 wide, 3 high
    vis = load_vis(_write(tmp_path, raw), tmp_path)
    assert vis.video_by_id[7].instances[0].box(1).tolist() == [0.0, 1.0, 4.0, 3.0]


def test_split_without_annotations(tmp_path: Path) -> None:
    raw = _dataset_dict()
    del raw["annotations"]
    vis = load_vis(_write(tmp_path, raw, "valid.json"), tmp_path)
    assert not vis.has_annotations and vis.num_identities == 0 and len(vis.videos) == 3
    with pytest.raises(VISFormatError, match=r"valid\.json.*'annotations'"):
        load_vis(tmp_path / "valid.json", tmp_path, require_annotations=True)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(VISFileNotFoundError, match=r"nope\.json"):
        load_vis(tmp_path / "nope.json", tmp_path)


def test_malformed_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"videos": [')
    with pytest.raises(VISFormatError, match=r"bad\.json: malformed JSON at line 1"):
        load_vis(path, tmp_path)


def _mutated(mutate) -> dict:
    raw = copy.deepcopy(_dataset_dict())
    mutate(raw)
    return raw


@pytest.mark.parametrize(
    "mutate, pattern",
    [
        (lambda r: r["annotations"][0].update(video_id=41), r"annotation 500 \(video 41\): field 'video_id'.*41"),
        (
            lambda r: r["annotations"][1].update(category_id=5),
            r"annotation 12 \(video 7\): field 'category_id'.*\[4, 30\].*5",
        ),
        (
            lambda r: r["annotations"][1]["segmentations"].append(None),
            r"annotation 12 \(video 7\): field 'segmentations': expected 2 entries \(the video's length\), "
            r"got '3 entries'",
        ),
        (
            lambda r: r["annotations"][0]["segmentations"].__setitem__(0, {"size": [4, 3], "counts": MASK_COUNTS}),
            r"annotation 500 \(video 40\): field 'segmentations\[0\]\.size': expected \[3, 4\].*\[4, 3\]",
        ),
        (
            lambda r: r["annotations"][0]["segmentations"].__setitem__(2, [[0, 0, 2]]),
            r"annotation 500 \(video 40\): field 'segmentations\[2\]'",
        ),
        (lambda r: r["videos"][0].update(length=5), r"video 40: field 'length': expected len\(file_names\) = 3, got 5"),
        (lambda r: r["videos"][1].pop("height"), r"video 7: field 'height'"),
        (lambda r: r["annotations"][1].update(id=500), r"field 'id': expected unique annotation ids"),
        (
            lambda r: r["annotations"][1].update(bboxes=[None]),
            r"annotation 12 \(video 7\): field 'bboxes': expected a list of 2 entries",
        ),
        (
            lambda r: r["annotations"][1].update(bboxes=[None, [0, 0, -1, 1]]),
            r"annotation 12 \(video 7\): field 'bboxes\[1\]': expected null or \[x, y, w, h\]",
        ),
        (lambda r: r["annotations"][1].update(bboxes=[None, [0, 0, 1]]), r"field 'bboxes\[1\]'"),
    ],
)
def test_format_errors_name_file_entry_and_field(tmp_path: Path, mutate, pattern: str) -> None:
    path = _write(tmp_path, _mutated(mutate))
    with pytest.raises(VISFormatError, match=pattern) as info:
        load_vis(path, tmp_path)
    assert str(info.value).startswith(str(path))


def test_missing_frame_when_loading_names_video_and_field(tmp_path: Path) -> None:
    raw = _dataset_dict()
    images = tmp_path / "JPEGImages"
    for video in raw["videos"]:
        for name in video["file_names"]:
            (images / name).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(images / name), np.full((3, 4, 3), 128, np.uint8))
    (images / "a/5.jpg").unlink()
    path = _write(tmp_path, raw)
    pairs = FramePairDataset(
        load_vis(path, images), T=5, transform=PairTransform(short=3, max_size=4, flip_prob=0.0), seed=0
    )
    assert len(pairs) == 3  # video 7 frame 1, video 40 frames 0 and 2
    with pytest.raises(VISFileNotFoundError) as info:
        pairs[0]  # key frame: video 7, frame 1 (the deleted one)
    message = str(info.value)
    assert str(path) in message and "video 7" in message and "'file_names'[1]" in message and "a/5.jpg" in message
