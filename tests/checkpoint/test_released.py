"""Foreign checkpoints: AdelaiDet CondInst / CrossVIS-fork key tables, formats, strict init, converter, evaluate."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from crossvis.checkpoint.loading import load_module
from crossvis.checkpoint.released import (
    CONDINST,
    CROSSVIS_FORK,
    CheckpointError,
    backbone_for,
    init_model,
    map_detectron2_key,
    plan_init,
    read_weights,
)
from crossvis.cli.convert import main as convert_main
from crossvis.conf import CONF_DIR
from crossvis.data.ytvis import load_vis
from crossvis.modeling.crossvis import CrossVIS

from adelaidet_keys import R101_BLOCKS, condinst_keys, crossvis_extras
from helpers import last_json_line, run_module, spec_of


def d2_model_cfg(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR / "model"), version_base=None):
        return compose("default", overrides=["backbone=resnet50_d2", *overrides])


def make_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Tensor i filled with i (distinct, cheap to build); counters as int64."""
    return {
        k: torch.zeros(s, dtype=torch.long) if k.endswith("num_batches_tracked") else torch.full(s, float(i))
        for i, (k, s) in enumerate(shapes.items())
    }


def random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded weights of sane scale (convs N(0, 1/fan_in), norms identity) that detect things.

    Class-logit bias 0 and box bias 1 (boxes about a stride per side), so inference keeps detections.
    """
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros(shape, dtype=torch.long)
        elif len(shape) >= 2:
            fan_in = int(torch.tensor(shape[1:]).prod())
            state[key] = torch.randn(shape, generator=gen) / fan_in**0.5
        else:  # norm weight / running_var / FCOS scale 1, every bias and mean 0
            one = key.endswith((".weight", "running_var", ".scale")) or key.endswith("bbox_pred.bias")
            state[key] = torch.full(shape, 1.0 if one else 0.0)
    return state


@pytest.fixture(scope="module")
def condinst_state() -> dict[str, torch.Tensor]:
    return make_state(condinst_keys(num_classes=80))


@pytest.fixture(scope="module")
def crossvis_state() -> dict[str, torch.Tensor]:
    return make_state({**condinst_keys(num_classes=40), **crossvis_extras(3774)})


@pytest.fixture(scope="module")
def model_80() -> CrossVIS:
    return CrossVIS(spec_of(d2_model_cfg()), num_classes=80, num_identities=5)


def test_every_adelaidet_key_has_a_model_counterpart_of_the_same_shape(condinst_state, model_80, tmp_path):
    path = tmp_path / "condinst_r50.pth"
    torch.save({"model": condinst_state, "iteration": 90000}, path)
    source = read_weights(path)
    assert source.origin == CONDINST and backbone_for(source) == "resnet50_d2"
    plan = plan_init(source, model_80.state_dict())
    assert plan.unmatched == []
    assert sorted(plan.unused) == ["mask_head._iter", "mask_head.sizes_of_interest"]  # buffers rebuilt from config
    assert len(plan.loaded) == len(condinst_state) - 2
    embedding = [k for k in model_80.state_dict() if k.startswith("embedding.") and "num_batches" not in k]
    assert plan.reinitialised == {
        **{k: "CondInst checkpoint has no embedding branch" for k in embedding},
        "identity_loss.proxies.weight": "CondInst checkpoint has no embedding branch",
        "identity_loss.proxies.bias": "CondInst checkpoint has no embedding branch",
    }
    # spot checks of the table against the published key names
    assert map_detectron2_key("backbone.bottom_up.res2.0.shortcut.norm.running_var") == (
        "features.backbone.body.layer1.0.downsample.1.running_var"
    )
    assert (
        map_detectron2_key("backbone.bottom_up.res5.2.conv3.norm.weight")
        == "features.backbone.body.layer4.2.bn3.weight"
    )
    assert map_detectron2_key("proposal_generator.fcos_head.scales.4.scale") == "head.scales.4"
    assert map_detectron2_key("mask_branch.tower.4.bias") == "mask_branch.tower.4.bias"
    assert map_detectron2_key("backbone.fpn_output5.weight") == "features.fpn.output.2.weight"


def test_crossvis_fork_checkpoint_loads_completely_and_reports_reinits(crossvis_state, tmp_path):
    path = tmp_path / "crossvis_r50.pth"
    torch.save(crossvis_state, path)  # bare state dict
    source = read_weights(path)
    assert source.origin == CROSSVIS_FORK
    model = CrossVIS(spec_of(d2_model_cfg()), num_classes=40, num_identities=3774)
    reinit, unused = init_model(model, path)
    assert reinit == [] and sorted(unused) == ["mask_head._iter", "mask_head.sizes_of_interest"]
    state = model.state_dict()
    for key, value in source.tensors.items():
        assert torch.equal(state[key], value), key
    assert torch.equal(model.identity_loss.proxies.weight, crossvis_state["cls.weight"])
    assert torch.equal(
        model.embedding.pred_bn.running_var, crossvis_state["proposal_generator.fcos_head.reid_pred_bn.running_var"]
    )

    other = CrossVIS(spec_of(d2_model_cfg()), num_classes=3, num_identities=10)
    reinit, _ = init_model(other, path)
    assert sorted(reinit) == [
        "head.cls_logits.bias",
        "head.cls_logits.weight",
        "identity_loss.proxies.bias",
        "identity_loss.proxies.weight",
    ]
    plan = plan_init(source, other.state_dict())
    assert plan.reinitialised["head.cls_logits.weight"] == "class count 40→3"
    assert plan.reinitialised["identity_loss.proxies.bias"] == "identity count 3774→10"


def test_detectron2_pkl_with_numpy_arrays(condinst_state, model_80, tmp_path):
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in condinst_state.items()}, "__author__": "AdelaiDet"}, f)
    source = read_weights(path)
    assert source.origin == CONDINST
    assert torch.equal(source.tensors["head.controller.bias"], condinst_state["controller.bias"])
    assert plan_init(source, model_80.state_dict()).unmatched == []


def test_strict_init_fails_listing_unmatched_keys_and_can_be_relaxed(condinst_state, tmp_path):
    broken = dict(condinst_state)
    del broken["backbone.bottom_up.res4.5.conv2.weight"]
    broken["backbone.fpn_lateral3.weight"] = torch.zeros(256, 256, 1, 1)  # wrong shape (C3 has 512 channels)
    path = tmp_path / "broken.pth"
    model = CrossVIS(spec_of(d2_model_cfg()), num_classes=80, num_identities=5)
    broken["proposal_generator.fcos_head.cls_tower.12.weight"] = torch.zeros(256, 256, 3, 3)  # a fifth tower conv
    torch.save({"model": broken}, path)
    with pytest.raises(CheckpointError) as error:
        init_model(model, path)
    message = str(error.value)
    assert str(path) in message and "2 model tensors have no same-shape counterpart and 1 file tensors" in message
    assert (
        "proposal_generator.fcos_head.cls_tower.12.weight (256, 256, 3, 3): in file, no place in the model" in message
    )
    assert "features.backbone.body.layer3.5.conv2.weight (256, 256, 3, 3): not in file" in message
    assert (
        "features.fpn.lateral.0.weight (256, 512, 1, 1): file has (256, 256, 1, 1) (backbone.fpn_lateral3.weight)"
        in message
    )
    assert isinstance(error.value, ValueError) and len(error.value.keys) == 3

    relaxed = CrossVIS(spec_of(d2_model_cfg()), num_classes=80, num_identities=5)
    with pytest.warns(UserWarning, match="layer3.5.conv2.weight"):
        init_model(relaxed, path, strict=False)  # model.init_strict=false
    assert torch.equal(relaxed.head.controller.weight, condinst_state["controller.weight"])


def test_detectron2_checkpoint_needs_the_detectron2_backbone(condinst_state, tmp_path):
    path = tmp_path / "condinst.pth"
    torch.save({"model": condinst_state}, path)
    with initialize_config_dir(config_dir=str(CONF_DIR / "model"), version_base=None):
        cfg = compose("default", overrides=["backbone.pretrained=false"])
    model = CrossVIS(spec_of(cfg), num_classes=80, num_identities=5)
    with pytest.raises(CheckpointError, match="use model/backbone=resnet50_d2"):
        init_model(model, path)


def test_unrecognised_files_fail_clearly(tmp_path):
    caffe2 = tmp_path / "R-50.pkl"
    with open(caffe2, "wb") as f:
        pickle.dump({"blobs": {"res2_0_branch2a_w": torch.zeros(1).numpy()}}, f)
    with pytest.raises(CheckpointError, match="unrecognised key layout"):
        read_weights(caffe2)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read as a checkpoint"):
        read_weights(text)


def test_converter_round_trip_loads_every_tensor(condinst_state, tmp_path, capsys):
    src, dst = tmp_path / "condinst_r50.pth", tmp_path / "converted.pth"
    torch.save({"model": condinst_state}, src)
    # in-process (the CLI's own main) to keep the 130 MB state dict out of another interpreter
    assert convert_main([str(src), str(dst), "--num-classes", "40", "--num-identities", "7"]) == 0
    report = last_json_line(capsys.readouterr().out)
    assert report["source"] == "condinst" and report["backbone"] == "resnet50_d2"
    assert report["unmatched"] == [] and sorted(report["unused"]) == ["mask_head._iter", "mask_head.sizes_of_interest"]
    assert report["reinitialised"]["head.cls_logits.weight"] == "class count 80→40"
    assert report["loaded"] == len(condinst_state) - 2 - 2  # minus the buffers and the 80-class logits

    model = CrossVIS(spec_of(d2_model_cfg()), num_classes=80, num_identities=7)
    reinit, unused = init_model(model, dst)  # the converted file keeps its origin: the embedding is an expected re-init
    assert all(k.startswith(("embedding.", "identity_loss.")) for k in reinit) and unused == []
    state = model.state_dict()
    converted = read_weights(dst)
    assert converted.origin == CONDINST and len(converted.tensors) == len(condinst_state) - 2
    for key, value in converted.tensors.items():
        assert torch.equal(state[key], value), key

    bad = run_module("crossvis.cli.convert", str(tmp_path / "missing.pth"), str(tmp_path / "out.pth"), check=False)
    assert bad.returncode == 1 and "no such checkpoint file" in bad.stderr and not (tmp_path / "out.pth").exists()
    broken = dict(condinst_state)
    del broken["controller.bias"]
    torch.save(broken, src)
    assert convert_main([str(src), str(tmp_path / "out.pth")]) == 1
    assert "head.controller.bias (169,): not in file" in capsys.readouterr().err and not (tmp_path / "out.pth").exists()


def test_evaluate_builds_released_crossvis_checkpoints_from_the_data_split(
    crossvis_state, synthetic_root, tmp_path, capsys
):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        data = compose("evaluate", overrides=["checkpoint=x", f"data.root={synthetic_root}"]).data
    split = load_vis(data.val.json, data.val.images)  # the evaluated split names the categories
    categories = json.loads((synthetic_root / "valid_gt.json").read_text())["categories"]
    n = len(categories)
    shapes = {**condinst_keys(num_classes=n), **crossvis_extras(50)}
    path = tmp_path / "crossvis_released.pth"
    torch.save({"model": make_state(shapes)}, path)
    module = load_module(path, "cpu", data, split.categories)
    assert capsys.readouterr().out.strip() == (  # what the loader reports: nothing unmatched
        f"Loaded {path} (crossvis_fork): no model tensor unmatched, 0 re-initialised; "
        "file keys unused: mask_head.sizes_of_interest, mask_head._iter"
    )
    assert module.model.num_classes == n and module.model.identity_loss.proxies.out_features == 50
    assert module.cfg.model.backbone.stride_in_1x1
    # the test-time resize is the evaluated data's (conf/inference/default.yaml follows data.transform)
    assert (module.cfg.inference.short, module.cfg.inference.max_size) == (
        data.transform.short,
        data.transform.max_size,
    )
    assert module.category_ids == sorted(c["id"] for c in categories)
    assert module.category_names == [c["name"] for c in sorted(categories, key=lambda c: c["id"])]
    assert not module.training

    wrong = tmp_path / "crossvis_80.pth"
    torch.save({"model": make_state({**condinst_keys(num_classes=80), **crossvis_extras(50)})}, wrong)
    with pytest.raises(CheckpointError, match=f"has 80 classes .* has {n} categories"):
        load_module(wrong, "cpu", data, split.categories)


def test_released_checkpoint_without_a_data_split_runs_at_the_authors_test_size(crossvis_state, tmp_path):
    # crossvis.cli.demo has no data config: frames must be resized as the public CrossVIS configs test
    # (INPUT.MIN_SIZE_TEST 360, MAX_SIZE_TEST 640), not at conf/train.yaml's default data (synthetic, 192/320).
    path = tmp_path / "crossvis_released.pth"
    torch.save({"model": crossvis_state}, path)
    cfg = load_module(path).cfg
    assert (cfg.data.transform.short, cfg.data.transform.max_size) == (360, 640)
    assert (cfg.inference.short, cfg.inference.max_size) == (360, 640)  # the test-time resize follows


def test_resnet101_checkpoint_selects_and_fills_the_r101_backbone(tmp_path):
    path = tmp_path / "CondInst_MS_R_101_3x.pth"
    torch.save({"model": make_state(condinst_keys(num_classes=80, blocks=R101_BLOCKS))}, path)
    source = read_weights(path)
    assert backbone_for(source) == "resnet101_d2"
    with initialize_config_dir(config_dir=str(CONF_DIR / "model"), version_base=None):
        cfg = compose("default", overrides=["backbone=resnet101_d2"])
    plan = plan_init(source, CrossVIS(spec_of(cfg), num_classes=80, num_identities=5).state_dict())
    assert plan.unmatched == [] and len(plan.loaded) == len(source.tensors)
    r50 = CrossVIS(spec_of(d2_model_cfg()), num_classes=80, num_identities=5)
    expected = r"for resnet101_d2 .*backbone.name=resnet50, stride_in_1x1=true; use model/backbone=resnet101_d2"
    with pytest.raises(CheckpointError, match=expected):
        init_model(r50, path)
    # the plan alone sees a deeper backbone as file tensors without a place, not as a silent partial load
    surplus = plan_init(source, r50.state_dict()).surplus
    # res4.6..22: 17 blocks × (3 convs + 3 FrozenBN × 4), no shortcut
    assert len(surplus) == 17 * 15 and "features.backbone.body.layer3.22.conv3.weight" in surplus


@pytest.mark.slow  # ~30 s: two R-50 entry points; the loading itself is tested in-process above
def test_released_crossvis_checkpoint_runs_through_evaluate_and_demo(synthetic_root, tmp_path):
    """The authors' CrossVIS R-50 format runs through both entry points, no key unmatched."""
    categories = json.loads((synthetic_root / "valid_gt.json").read_text())["categories"]
    path = tmp_path / "CrossVIS_R_50_1x.pth"
    torch.save({"model": random_state({**condinst_keys(num_classes=len(categories)), **crossvis_extras(3774)})}, path)
    loaded = (
        f"Loaded {path} (crossvis_fork): no model tensor unmatched, 0 re-initialised; "
        "file keys unused: mask_head.sizes_of_interest, mask_head._iter"
    )
    run_dir = tmp_path / "eval"
    evaluate = run_module(
        "crossvis.cli.evaluate",
        f"checkpoint={path}",
        f"data.root={synthetic_root}",
        "data.transform.short=64",
        "data.transform.max_size=112",
        "threads=1",
        f"hydra.run.dir={run_dir}",
    )
    assert loaded in evaluate.stdout
    assert set(last_json_line(evaluate.stdout)) >= {"AP", "AR10"}
    assert json.loads((run_dir / "results.json").read_text())  # random weights, but tracks all the same

    frames = tmp_path / "frames"  # one frame: the demo runs the released model at 360 x 640
    video = sorted((synthetic_root / "valid" / "JPEGImages").iterdir())[0]
    frames.mkdir()
    shutil.copy(sorted(video.iterdir())[0], frames)
    demo = run_module(
        "crossvis.cli.demo", f"input={frames}", f"checkpoint={path}", f"output={tmp_path / 'out.mp4'}", "threads=1"
    )
    assert loaded in demo.stdout
    assert (tmp_path / "out.mp4").stat().st_size > 0 and json.loads((tmp_path / "out.json").read_text())
