"""The COCO stage through the composed Hydra config: recipe, embedding switch, pseudo-pairs, joint data, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from crossvis.conf import CONF_DIR
from crossvis.data.coco_datamodule import ConfigError, build_datamodule, check_config
from crossvis.data.datamodule import collate_pairs
from crossvis.data.pseudo_pairs import StillTransform
from crossvis.data.transforms import FrameSample
from crossvis.engine.inference import VideoInference
from crossvis.engine.lightning_module import CrossVISModule
from crossvis.engine.schedule import resolve_schedule
from crossvis.modeling.crossvis import CrossVIS

from helpers import TINY, post_processing, spec_of

pytestmark = pytest.mark.filterwarnings("ignore:backbone frozen_bn=true with random")

SMALL_TRAIN = "data.transform.train_short=[96,128]"


def train_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose("train", overrides=[*TINY, *overrides])


def compose_default_scale() -> float:
    """feature_grad_scale of the video stage's paper-size model (the CrossVIS fork's 0.1x rule)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose("train").model.feature_grad_scale


def test_coco_condinst_recipe() -> None:
    """AdelaiDet MS R-50 1x: 90k iterations, LR 0.01 at 16 images, x0.1 at 60k and 80k, warm-up 1000."""
    cfg = train_cfg("experiment=coco_condinst")
    assert cfg.data.format == "coco" and cfg.trainer.max_steps == -1  # the length is the schedule's
    assert cfg.optim.base_lr == 0.01 and cfg.optim.base_batch_size == 16 and cfg.optim.warmup_iters == 1000
    schedule = resolve_schedule(cfg.optim, global_batch=16)
    assert schedule.total_steps == 90000
    assert [schedule.lr_at(s) for s in (1000, 59999, 60000, 79999, 80000, 89999)] == pytest.approx(
        [0.01, 0.01, 0.001, 0.001, 0.0001, 0.0001]
    )
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        full = compose("train", overrides=["experiment=coco_condinst"])
    data = full.data
    # the paper-size model of the COCO stage: no 0.1x backbone gradient (AdelaiDet's CondInst has none)
    assert full.model.feature_grad_scale == 1.0 and compose_default_scale() == 0.1
    assert list(data.transform.train_short) == list(range(640, 801, 32))
    assert (data.transform.short, data.transform.max_size) == (800, 1333)
    assert not cfg.model.crossover.enabled and not cfg.model.embedding.enabled


def test_embedding_switch_removes_the_branch() -> None:
    """model.embedding.enabled=false: no embedding parameters, no L_id, no embeddings at inference;
    the state dict is the video model's minus exactly the embedding / identity-proxy keys."""
    torch.manual_seed(0)
    coco = CrossVIS(spec_of(train_cfg("experiment=coco_condinst").model), num_classes=4, num_identities=0)
    video = CrossVIS(spec_of(train_cfg().model), num_classes=4, num_identities=10)
    coco_keys, video_keys = set(coco.state_dict()), set(video.state_dict())
    new_in_video = video_keys - coco_keys
    assert coco_keys < video_keys
    assert new_in_video and all(k.startswith(("embedding.", "identity_loss.")) for k in new_in_video)
    assert "identity_loss.proxies.weight" in new_in_video
    assert not any("embedding" in name or "identity" in name for name, _ in coco.named_parameters())

    images = torch.rand(2, 1, 3, 64, 96) * 255
    mask = torch.zeros(1, 64, 96, dtype=torch.bool)
    mask[0, 10:40, 20:60] = True
    target = {
        "masks": mask,
        "boxes": torch.tensor([[20.0, 10.0, 59.0, 39.0]]),
        "labels": torch.tensor([1]),
        "identities": torch.tensor([0]),
    }
    losses = coco.forward_train(images, torch.tensor([[[64, 96]], [[64, 96]]]), [[target], [target]])
    assert "loss_id" not in losses and losses["loss_cross"] == 0 and losses["loss_mask"] > 0
    coco.eval()
    out = coco.forward_infer(images[0, 0], (64, 96), post_processing())
    assert "embeddings" not in out and {"boxes", "masks", "scores", "labels"} <= set(out)
    with pytest.raises(ValueError, match="single images train CondInst only"):
        video.forward_train(images, torch.tensor([[[64, 96]], [[64, 96]]]), [[target], [target]])


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="data=coco trains on single images: set model.crossover.enabled=false"):
        check_config(train_cfg("data=coco"))
    with pytest.raises(ConfigError, match="model.embedding.type=global does not apply to COCO pseudo-pairs"):
        check_config(train_cfg("data=coco", "data.pseudo_pairs.enabled=true"))
    pairwise = train_cfg("data=coco", "data.pseudo_pairs.enabled=true", "model.embedding.type=pairwise")
    assert check_config(pairwise) == "coco"
    assert check_config(train_cfg("data=ytvis19_coco")) == "joint"  # global embedding on the video pairs


def _square_sample() -> FrameSample:
    image = np.full((100, 160, 3), 90, np.uint8)
    masks = np.zeros((2, 100, 160), bool)
    masks[0, 30:60, 40:80] = True
    masks[1, 10:25, 100:150] = True
    image[masks[0]] = 200
    return FrameSample(image, masks, np.array([1, 2]), np.array([5, 9]))


def test_pseudo_pair_views() -> None:
    """Two views of one image, same size, same identities; jitter off → both equal the resized image."""
    sample = _square_sample()
    same = StillTransform([50], 1000, flip_prob=0.0, views=2, scale=0.0, shift=0.0)(sample, np.random.default_rng(0))
    assert len(same) == 2 and same[0].image.shape == (50, 80, 3)
    np.testing.assert_array_equal(same[0].masks, same[1].masks)
    views = StillTransform([100], 1000, flip_prob=0.0, views=2, scale=0.2, shift=0.1)(sample, np.random.default_rng(1))
    assert views[0].image.shape == views[1].image.shape == (100, 160, 3)
    assert not np.array_equal(views[0].masks, views[1].masks)  # moved between the views
    for view in views:
        assert set(view.identities) <= {5, 9} and 5 in view.identities
        assert dict(zip(view.identities, view.labels)) == {i: {5: 1, 9: 2}[i] for i in view.identities}
    single = StillTransform([50], 1000, flip_prob=0.0)(sample, np.random.default_rng(0))
    assert len(single) == 1


@pytest.fixture(scope="module")
def joint_cfg(synthetic_root: Path, synthetic_coco_root: Path):
    roots = [f"data.root={synthetic_root}", f"data.coco.root={synthetic_coco_root}"]
    return lambda *o: train_cfg("data=synthetic_coco", *roots, *o)


def test_joint_data_mixes_sources_and_maps_categories(joint_cfg) -> None:
    dm = build_datamodule(joint_cfg())
    dm.setup("fit")
    counts = dm.train_dataset.counts
    assert counts["video"] == len(dm.train_dataset.video) and counts["coco"] == counts["video"]  # fraction 0.5
    assert len(dm.train_dataset) == 2 * counts["video"]
    # COCO ids 1, 3, 17 map onto the video ids 2, 5, 8 = labels 0, 1, 2; ringed_cross (44) is dropped
    coco_items = [dm.train_dataset[(counts["video"] + j, 0)] for j in range(counts["coco"])]
    labels = torch.cat([t["labels"] for item in coco_items for t in item["targets"]])
    assert set(labels.tolist()) == {0, 1, 2}
    assert all(item["meta"]["source"] == "coco" for item in coco_items)
    assert all(t["identity_loss"] is False for item in coco_items for t in item["targets"])
    assert dm.num_identities == dm.train_vis.num_identities  # the video identities only
    quarter = build_datamodule(joint_cfg("data.coco.fraction=0.25"))
    quarter.setup("fit")
    assert quarter.train_dataset.counts["coco"] == round(counts["video"] / 3)


def test_identity_loss_on_video_pairs_only(joint_cfg) -> None:
    """A batch of COCO pseudo-pairs trains crossover but gives no identity loss; video pairs do."""
    cfg = joint_cfg("model.embedding.type=pairwise")
    dm = build_datamodule(cfg)
    dm.setup("fit")
    torch.manual_seed(0)
    model = CrossVIS(spec_of(cfg.model), dm.num_classes, dm.num_identities)
    n_video = dm.train_dataset.counts["video"]
    coco_batch = collate_pairs([dm.train_dataset[(n_video + j, 0)] for j in range(2)])
    video_batch = collate_pairs([dm.train_dataset[(j, 0)] for j in range(2)])
    coco_losses = model.forward_train(coco_batch["images"], coco_batch["image_sizes"], coco_batch["targets"])
    assert coco_losses["loss_id"] == 0 and coco_losses["loss_cross"] > 0
    unflagged = [[{k: v for k, v in t.items() if k != "identity_loss"} for t in pair] for pair in coco_batch["targets"]]
    assert model.forward_train(coco_batch["images"], coco_batch["image_sizes"], unflagged)["loss_id"] > 0
    video_losses = model.forward_train(video_batch["images"], video_batch["image_sizes"], video_batch["targets"])
    assert video_losses["loss_id"] > 0


def test_joint_category_map_errors(joint_cfg) -> None:
    with pytest.raises(ConfigError, match=r"data.coco.category_map: value 3 \(for COCO 1\) is not a category id of"):
        build_datamodule(joint_cfg("data.coco.category_map={1: 3}")).setup("fit")
    with pytest.raises(ConfigError, match="data.coco.category_map: key 2 is not a category id of"):
        build_datamodule(joint_cfg("++data.coco.category_map={2: 2}")).setup("fit")


def test_video_inference_needs_the_embedding_branch() -> None:
    cfg = train_cfg("experiment=coco_condinst", "logger=none")
    module = CrossVISModule(cfg, 4, 0, ["a", "b", "c", "d"], [1, 2, 3, 4])
    with pytest.raises(ConfigError, match="video inference tracks with embeddings"):
        VideoInference.from_config(module.cfg.inference, module.model, module.category_ids)
