"""COCO instances reader, synthetic COCO writer and ``crossvis.data.check`` on COCO jsons."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from crossvis.data.check import main as check_main
from crossvis.data.coco import is_coco_json, load_coco
from crossvis.data.ytvis import VISFormatError

TRAIN = ("annotations/instances_train2017.json", "train2017")


def _raw(root: Path) -> dict:
    return json.loads((root / TRAIN[0]).read_text())


def test_synthetic_coco_layout_and_encodings(synthetic_coco_root: Path) -> None:
    raw = _raw(synthetic_coco_root)
    assert is_coco_json(raw)
    kinds = Counter(
        ("crowd-" if a["iscrowd"] else "")
        + ("polygon" if isinstance(a["segmentation"], list) else "rle-" + type(a["segmentation"]["counts"]).__name__)
        for a in raw["annotations"]
    )
    assert kinds["polygon"] > 0 and kinds["rle-str"] > 0 and kinds["crowd-rle-list"] > 0  # COCO's three encodings
    assert {(im["height"], im["width"]) for im in raw["images"]} == {(128, 224), (224, 128)}
    for im in raw["images"]:
        assert (synthetic_coco_root / TRAIN[1] / im["file_name"]).is_file()


def test_reader_masks_match_pycocotools_and_crowds_are_not_targets(synthetic_coco_root: Path) -> None:
    coco = load_coco(synthetic_coco_root / TRAIN[0], synthetic_coco_root / TRAIN[1], require_annotations=True)
    raw = _raw(synthetic_coco_root)
    reference = COCO(str(synthetic_coco_root / TRAIN[0]))
    crowd_images = {a["image_id"] for a in raw["annotations"] if a["iscrowd"]}
    assert crowd_images
    sorted_ids = sorted(a["id"] for a in raw["annotations"])
    for image in coco.images:
        anns = [a for a in raw["annotations"] if a["image_id"] == image.id and not a["iscrowd"]]
        sample = image.sample()
        assert len(sample.masks) == len(anns)  # crowd regions left out
        for mask, identity, ann in zip(sample.masks, sample.identities, sorted(anns, key=lambda a: a["id"])):
            np.testing.assert_array_equal(mask, reference.annToMask(ann).astype(bool))
            assert identity == sorted_ids.index(ann["id"])
    category_ids = sorted(c["id"] for c in raw["categories"])
    labels = {inst.label for im in coco.images for inst in im.instances}
    assert labels <= set(range(len(category_ids)))
    assert coco.label_to_category_id(1) == category_ids[1]
    # images whose annotations are all crowds (or that have none) are not training images
    expected = {a["image_id"] for a in raw["annotations"] if not a["iscrowd"]}
    assert {im.id for im in coco.training_images()} == expected


def test_label_map_drops_unmapped_categories(synthetic_coco_root: Path) -> None:
    coco = load_coco(synthetic_coco_root / TRAIN[0], synthetic_coco_root / TRAIN[1], label_of={1: 0, 17: 1})
    raw = _raw(synthetic_coco_root)
    kept = [a for a in raw["annotations"] if a["category_id"] in (1, 17)]
    instances = [inst for im in coco.images for inst in im.instances]
    assert sorted(inst.ann_id for inst in instances) == sorted(a["id"] for a in kept)
    assert {inst.label for inst in instances if inst.category_id == 17} == {1}


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(raw))
    return path


def test_reader_errors_name_file_and_field(synthetic_coco_root: Path, tmp_path: Path) -> None:
    raw = _raw(synthetic_coco_root)
    bad = json.loads(json.dumps(raw))
    bad["annotations"][0]["image_id"] = 999999
    with pytest.raises(VISFormatError, match=r"instances\.json: annotation \d+ \(image 999999\): field 'image_id'"):
        load_coco(_write(tmp_path, bad), tmp_path)
    bad = json.loads(json.dumps(raw))
    rle = next(a for a in bad["annotations"] if isinstance(a["segmentation"], dict))
    rle["segmentation"]["size"] = [1, 1]
    with pytest.raises(VISFormatError, match=r"field 'segmentation\.size': expected \[\d+, \d+\]"):
        load_coco(_write(tmp_path, bad), tmp_path)
    bad = json.loads(json.dumps(raw))
    del bad["images"][0]["file_name"]
    with pytest.raises(VISFormatError, match=r"image \d+: field 'file_name'"):
        load_coco(_write(tmp_path, bad), tmp_path)


def test_degenerate_polygons_are_dropped_and_counted(synthetic_coco_root: Path, tmp_path: Path) -> None:
    raw = _raw(synthetic_coco_root)
    raw["annotations"][0]["segmentation"] = [[1, 1, 5, 5]]  # two points: no area (detectron2 drops it)
    with pytest.warns(UserWarning, match="1 annotations without a valid polygon"):
        coco = load_coco(_write(tmp_path, raw), tmp_path)
    assert coco.dropped_annotations == 1
    assert raw["annotations"][0]["id"] not in {inst.ann_id for im in coco.images for inst in im.instances}


def test_check_accepts_coco(synthetic_coco_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``python -m crossvis.data.check`` (its ``main``) detects the COCO format by the ``images`` key."""
    assert check_main([str(synthetic_coco_root / TRAIN[0]), str(synthetic_coco_root / TRAIN[1])]) == 0
    result = capsys.readouterr()
    raw = _raw(synthetic_coco_root)
    names = {c["id"]: c["name"] for c in raw["categories"]}
    plain = [a for a in raw["annotations"] if not a["iscrowd"]]
    per_category = Counter(names[a["category_id"]] for a in plain)
    assert json.loads(result.out.strip().splitlines()[-1]) == {
        "images": len(raw["images"]),
        "training_images": len({a["image_id"] for a in plain}),
        "instances": len(plain),
        "crowd": len(raw["annotations"]) - len(plain),
        "dropped": 0,
        "categories": {name: per_category.get(name, 0) for name in names.values()},
    }
    # a missing image file fails naming json, image and field
    images = tmp_path / "images"
    shutil.copytree(synthetic_coco_root / TRAIN[1], images)
    first = raw["images"][0]
    (images / first["file_name"]).unlink()
    with pytest.raises(SystemExit) as exit_info:  # the user-error contract: one message, exit code 1
        check_main([str(synthetic_coco_root / TRAIN[0]), str(images)])
    assert exit_info.value.code == 1
    stderr = capsys.readouterr().err
    assert f"image {first['id']}: field 'file_name'" in stderr and "instances_train2017.json" in stderr
