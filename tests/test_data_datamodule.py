"""VISDataModule on a freshly generated synthetic set: the documented batch structure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from crossvis.data.datamodule import VISDataModule
from crossvis.data.ytvis import VISFormatError

CONF = Path(__file__).resolve().parents[1] / "conf" / "data"


def _cfg(root: Path, **overrides):
    cfg = OmegaConf.load(CONF / "synthetic.yaml")
    cfg.root = str(root)
    cfg.num_workers = 0
    cfg.batch_size = 3
    cfg.transform.short = 100  # 128x224 -> 100x175, padded to 128x192
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return cfg


@pytest.mark.parametrize("name", ["ytvis19", "ytvis21", "ovis", "synthetic"])
def test_configs_have_the_contract_keys(name: str) -> None:
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    cfg.root = "/data/x"
    assert cfg.name == name
    assert cfg.train.json.startswith("/data/x/") and cfg.train.images.startswith("/data/x/")
    assert cfg.val.json.startswith("/data/x/") and cfg.val.images.startswith("/data/x/")
    for key in ("holdout_videos", "sampler.T", "transform.short", "transform.max_size", "transform.flip_prob",
                "transform.multiscale", "batch_size", "num_workers", "seed"):
        assert OmegaConf.select(cfg, key, throw_on_missing=True) is not None, key


def test_train_batch_structure(synthetic_root: Path) -> None:
    dm = VISDataModule(_cfg(synthetic_root))
    dm.setup("fit")
    raw = json.loads((synthetic_root / "train.json").read_text())
    assert dm.num_classes == 4 and dm.num_identities == len(raw["annotations"])
    assert dm.category_names == ["striped_ellipse", "checkered_rectangle", "dotted_triangle", "ringed_cross"]
    assert [dm.label_to_category_id(i) for i in range(4)] == [2, 5, 8, 11]
    batch = next(iter(dm.train_dataloader()))
    images = batch["images"]
    assert images.dtype == torch.float32 and images.shape == (3, 2, 3, 128, 192)
    assert images.max() > 1.0  # 0..255, not normalised
    assert torch.all(images[..., 100:, :] == 0) and torch.all(images[..., 175:] == 0)  # bottom/right padding
    assert batch["image_sizes"].dtype == torch.long
    assert batch["image_sizes"].tolist() == [[[100, 175]] * 2] * 3
    video_ids = {v["id"] for v in raw["videos"]}
    assert len(batch["targets"]) == 3 and len(batch["meta"]) == 3
    for pair, meta in zip(batch["targets"], batch["meta"]):
        assert meta["video_id"] in video_ids and len(meta["frames"]) == 2
        assert len(pair) == 2 and len(pair[0]["labels"]) >= 1  # key frames are annotated
        for target in pair:
            n = len(target["labels"])
            assert target["masks"].dtype == torch.bool and target["masks"].shape == (n, 128, 192)
            assert not target["masks"][:, 100:].any() and not target["masks"][:, :, 175:].any()
            assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (n, 4)
            assert target["labels"].dtype == torch.long and target["identities"].dtype == torch.long
            assert ((target["labels"] >= 0) & (target["labels"] < 4)).all()
            assert ((target["identities"] >= 0) & (target["identities"] < dm.num_identities)).all()
            assert target["masks"].flatten(1).any(dim=1).all()  # no empty masks


def test_validation_items_and_ground_truth(synthetic_root: Path) -> None:
    dm = VISDataModule(_cfg(synthetic_root))
    dm.setup()
    assert dm.val_ground_truth is not None and "annotations" in dm.val_ground_truth
    items = list(dm.val_dataloader())
    assert [item["video_id"] for item in items] == [v.id for v in dm.val_dataset.videos] and len(items) == 2
    item = items[0]
    assert (item["height"], item["width"]) == (128, 224) and len(item["frame_paths"]) == 8
    assert all(Path(p).is_file() for p in item["frame_paths"])


def test_val_json_without_annotations_has_no_ground_truth(synthetic_root: Path) -> None:
    dm = VISDataModule(_cfg(synthetic_root, **{"val.json": str(synthetic_root / "valid.json")}))
    dm.setup()
    assert dm.val_ground_truth is None and len(dm.val_dataset.videos) == 2


def test_holdout_carves_the_last_training_videos(synthetic_root: Path) -> None:
    raw = json.loads((synthetic_root / "train.json").read_text())
    ids = sorted(v["id"] for v in raw["videos"])
    dm = VISDataModule(_cfg(synthetic_root, holdout_videos=2))
    dm.setup()
    gt = dm.val_ground_truth
    assert [v["id"] for v in gt["videos"]] == ids[-2:]
    assert gt["categories"] == raw["categories"]
    held_anns = sorted(a["id"] for a in raw["annotations"] if a["video_id"] in ids[-2:])
    assert sorted(a["id"] for a in gt["annotations"]) == held_anns
    assert [v.id for v in dm.train_vis.videos] == ids[:-2]
    assert dm.num_identities == sum(a["video_id"] in ids[:-2] for a in raw["annotations"])
    with pytest.raises(VISFormatError, match="holdout_videos"):
        VISDataModule(_cfg(synthetic_root, holdout_videos=6)).setup()


def test_worker_processes_see_the_epoch(synthetic_root: Path) -> None:
    """Persistent workers produce the same pairs as the main process, epoch after epoch."""
    metas = {}
    for workers in (0, 1):
        dm = VISDataModule(_cfg(synthetic_root, num_workers=workers, batch_size=8))
        dm.setup()
        loader = dm.train_dataloader()
        runs = []
        for epoch in range(2):
            loader.sampler.set_epoch(epoch)  # what Lightning does every epoch
            runs.append([m for batch in loader for m in batch["meta"]])
        metas[workers] = runs
    assert metas[0] == metas[1]
    assert metas[0][0] != metas[0][1]
