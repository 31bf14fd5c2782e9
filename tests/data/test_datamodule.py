"""VISDataModule on a freshly generated synthetic set: the documented batch structure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from crossvis.conf import CONF_DIR
from crossvis.data.datamodule import VISDataModule, holdout_video_ids
from crossvis.errors import ConfigError

from helpers import group_option


def _run_cfg(root: Path, *overrides: str):
    """The composed run config (conf/train.yaml), as ``python -m crossvis.cli.train`` sees it."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(
            "train",
            overrides=[
                "data=synthetic",
                f"data.root={root}",
                "data.num_workers=0",
                "data.batch_size=3",
                "data.transform.short=100",
                *overrides,
            ],
        )


def _first_batch(cfg) -> dict:
    dm = VISDataModule.from_run_config(cfg)
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def _cfg(root: Path, **overrides):
    cfg = group_option("data", "synthetic")
    cfg.root = str(root)
    cfg.num_workers = 0
    cfg.batch_size = 3
    cfg.transform.short = 100  # 128x224 -> 100x175, padded to 128x192
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return cfg


@pytest.mark.parametrize("name", ["ytvis19", "ytvis21", "ovis", "synthetic"])
def test_configs_have_the_contract_keys(name: str) -> None:
    cfg = group_option("data", name)
    cfg.root = "/data/x"
    assert cfg.name == name
    assert cfg.train.json.startswith("/data/x/") and cfg.train.images.startswith("/data/x/")
    assert cfg.val.json.startswith("/data/x/") and cfg.val.images.startswith("/data/x/")
    for key in (
        "sampler.T",
        "transform.short",
        "transform.max_size",
        "transform.flip_prob",
        "transform.multiscale",
        "batch_size",
        "num_workers",
        "validate_on",
        "holdout_every",
    ):
        assert OmegaConf.select(cfg, key, throw_on_missing=True) is not None, key
    assert "seed" not in cfg  # the run's top-level seed drives the data (VISDataModule.from_run_config)


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


def test_holdout_video_ids_every_kth_in_id_order() -> None:
    assert holdout_video_ids([30, 3, 12, 7, 5], 2) == [3, 7, 30]  # sorted 3, 5, 7, 12, 30 -> positions 0, 2, 4
    assert holdout_video_ids(list(range(1, 2239)), 10)[:3] == [1, 11, 21]
    assert len(holdout_video_ids(list(range(1, 2239)), 10)) == 224  # ~10 % of YouTube-VIS 2019 train
    with pytest.raises(ValueError, match="data.holdout_every"):
        holdout_video_ids([1, 2, 3], 1)
    with pytest.raises(ValueError, match="all 1 training videos"):
        holdout_video_ids([4], 10)


def test_holdout_split_is_fixed_disjoint_and_recorded(synthetic_root: Path, tmp_path: Path) -> None:
    raw = json.loads((synthetic_root / "train.json").read_text())
    ids = sorted(v["id"] for v in raw["videos"])
    held = ids[::2]
    dm = VISDataModule(_cfg(synthetic_root, validate_on="holdout", holdout_every=2))
    dm.setup()
    assert dm.holdout_ids == held
    gt = dm.val_ground_truth
    assert [v["id"] for v in gt["videos"]] == held and gt["categories"] == raw["categories"]
    assert sorted(a["id"] for a in gt["annotations"]) == sorted(
        a["id"] for a in raw["annotations"] if a["video_id"] in held
    )
    train_ids = [v.id for v in dm.train_vis.videos]
    assert train_ids == [i for i in ids if i not in held] and not set(train_ids) & set(held)
    pairs = dm.train_dataset
    assert {int(pairs.index.video_ids[vi]) for vi in pairs.key_videos} <= set(train_ids)
    assert dm.train_vis.num_identities == sum(a["video_id"] not in held for a in raw["annotations"])
    assert dm.num_identities == len(raw["annotations"])  # M (the proxies) from the whole training json
    dm.write_split(tmp_path / "holdout_split.json")
    record = json.loads((tmp_path / "holdout_split.json").read_text())
    assert record["held_out_video_ids"] == held and record["train_video_ids"] == train_ids
    again = VISDataModule(_cfg(synthetic_root, validate_on="holdout", holdout_every=2))
    again.setup()
    again.write_split(tmp_path / "holdout_split.json")  # deterministic: the same split, accepted
    other = VISDataModule(_cfg(synthetic_root, validate_on="holdout", holdout_every=3))
    other.setup()
    with pytest.raises(ValueError, match="holdout_split.json"):
        other.write_split(tmp_path / "holdout_split.json")
    with pytest.raises(ValueError, match="data.validate_on"):
        VISDataModule(_cfg(synthetic_root, validate_on="test")).setup()


def test_one_seed_drives_the_data(synthetic_root: Path) -> None:
    """Top-level ``seed`` (the composed run config) fixes pairs, augmentation and shuffling."""
    first = _first_batch(_run_cfg(synthetic_root, "seed=5"))
    same = _first_batch(_run_cfg(synthetic_root, "seed=5"))
    other = _first_batch(_run_cfg(synthetic_root, "seed=6"))
    assert first["meta"] == same["meta"] and torch.equal(first["images"], same["images"])
    assert first["meta"] != other["meta"]


def test_multiscale_range_comes_from_the_data_config(synthetic_root: Path) -> None:
    cfg = _run_cfg(synthetic_root, "data.transform.multiscale=true", "data.transform.scales=[[224,128],[300,160]]")
    dm = VISDataModule.from_run_config(cfg)
    dm.setup()
    transform = dm.train_dataset.transform
    assert (transform.long_range, transform.short_range) == ((224, 300), (128, 160))
    shapes = {tuple(dm.train_dataset[(i, 0)]["images"].shape) for i in range(len(dm.train_dataset))}
    assert len(shapes) > 2 and all(s[0] == 2 for s in shapes)  # pairs of equal-size frames, many sizes


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


def test_bad_sampling_interval_is_a_config_error_naming_the_key(synthetic_root: Path) -> None:
    """The sampler names its argument (T); the data module, built from the config, names data.sampler.T."""
    dm = VISDataModule.from_run_config(_run_cfg(synthetic_root, "data.sampler.T=0"))
    with pytest.raises(ConfigError, match=r"^data\.sampler\.T: expected a positive integer or 'inf', got 0"):
        dm.setup("fit")
