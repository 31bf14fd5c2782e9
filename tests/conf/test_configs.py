"""Every config composes and resolves, in-process (composition only, no model is built):
every entry point, and for training every ``experiment=`` × every data / model / backbone option,
every logger / trainer option."""

from __future__ import annotations

import itertools

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from crossvis.conf import CONF_DIR
from crossvis.engine.runtime import Runtime
from crossvis.errors import ConfigError


def _options(group: str) -> list[str]:
    """The options of a config group: its yaml files, without the bases (`_name.yaml`)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml") if not p.stem.startswith("_"))


EXPERIMENTS = [None, *_options("experiment")]
DATA, MODELS, BACKBONES = _options("data"), _options("model"), _options("model/backbone")
LOGGERS, TRAINERS = _options("logger"), _options("trainer")
# The required values of the entry points that have no default (``???``).
REQUIRED = {
    "evaluate": ["checkpoint=c.ckpt"],
    "demo": ["input=v.mp4", "checkpoint=c.ckpt", "output=o.mp4"],
    "cpu_train": ["data.root=d"],
    "export": ["checkpoint=c.ckpt", "output=m.onnx"],
}
# The paper tables' required COCO CondInst checkpoints (conf/experiment/table*.yaml: coco_init).
TABLE1_INIT = {"resnet50": "r50.pth", "resnet101": "r101.pth", "dla34": "dla34.ckpt"}
COCO_INIT = {"table1": [f"coco_init.{name}={path}" for name, path in TABLE1_INIT.items()]}
ENTRY_POINTS = ["train", "evaluate", "demo", "quickstart", "cpu_train", "benchmark", "peer", "export"]


@pytest.fixture(scope="module")
def composer():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):

        def run(name: str, *overrides: str):
            cfg = compose(name, overrides=[*REQUIRED.get(name, []), *overrides], return_hydra_config=True)
            with open_dict(cfg):
                cfg.hydra.runtime.output_dir = "outputs/run"  # set by Hydra when an app starts
            HydraConfig.instance().set_config(cfg)
            with open_dict(cfg):
                del cfg["hydra"]
            OmegaConf.resolve(cfg)  # every interpolation resolves (${hydra:...} ones included)
            assert not OmegaConf.missing_keys(cfg), (name, overrides, OmegaConf.missing_keys(cfg))
            return cfg

        yield run
    HydraConfig.instance().cfg = None  # leave no Hydra run config behind for other tests


def test_the_option_lists_are_not_empty() -> None:
    assert len(EXPERIMENTS) > 7 and len(DATA) >= 9 and MODELS == ["cpu", "default"] and len(BACKBONES) >= 6


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_every_entry_point_composes(composer, entry_point: str) -> None:
    composer(entry_point)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_with_every_data_model_and_backbone_option(composer, experiment: str | None) -> None:
    """Each experiment with each option of each group (the other groups at their defaults)."""
    extra = [f"experiment={experiment}"] if experiment else []
    if experiment and experiment.startswith("table"):
        extra += COCO_INIT.get(experiment, ["coco_init=coco.pth"])
    options = [
        *(f"data={d}" for d in DATA),
        *(f"model={m}" for m in MODELS),
        *(f"model/backbone={b}" for b in BACKBONES),
    ]
    for option in options:
        name = option.split("=")[1].removesuffix("_d2")
        opt_out = experiment == "table1" and option.startswith("model") and name not in TABLE1_INIT
        cfg = composer("train", *extra, option, *(["model.init_from=null"] if opt_out else []))
        assert cfg.table == (experiment if experiment and experiment.startswith("table") else None)
        assert cfg.inference.short == cfg.data.transform.short  # the test-time resize follows the data by default
        if option.startswith("model/backbone="):
            assert cfg.model.backbone.name == name
        if experiment and experiment.startswith("table") and not opt_out:
            expected = TABLE1_INIT[cfg.model.backbone.name] if experiment == "table1" else "coco.pth"
            assert cfg.model.init_from == expected


def test_every_logger_and_trainer_option(composer) -> None:
    for logger, trainer in itertools.product(LOGGERS, TRAINERS):
        composer("train", f"logger={logger}", f"trainer={trainer}")


@pytest.mark.parametrize("devices,nodes", [(1, 1), (4, 2)])
def test_slurm_launcher_takes_the_job_shape_from_the_trainer(composer, devices: int, nodes: int) -> None:
    # Lightning's SLURM environment needs one task per device on each of trainer.num_nodes nodes.
    # (composer: Hydra initialised on conf/; the launcher is read from the config with its hydra node.)
    overrides = ["hydra/launcher=slurm", "trainer=ddp", f"trainer.devices={devices}", f"trainer.num_nodes={nodes}"]
    launcher = compose("train", overrides=overrides, return_hydra_config=True).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (nodes, devices, devices)
    assert launcher.signal_delay_s > 0  # submitit's signal before the time limit: save, requeue, resume=auto


@pytest.mark.parametrize("entry_point", ["evaluate", "peer"])
def test_data_options_compose_for_the_entry_points_that_take_data(composer, entry_point: str) -> None:
    for data in DATA:
        assert composer(entry_point, f"data={data}").data.name


def test_the_cpu_recipe_for_own_data_is_the_demo_recipe_with_a_resnet10t(composer) -> None:
    """conf/cpu_train.yaml differs from make demo's conf/quickstart.yaml in the backbone and the BatchNorm
    batches (the demo's joint batch buys time; cpu_train keeps the public code's per-position batches)."""
    own, demo = composer("cpu_train", "data.root=/data/own"), composer("quickstart")
    assert (own.model.backbone.name, demo.model.backbone.name) == ("resnet10t", "regnetx_002")
    assert (own.model.bn_batches, demo.model.bn_batches) == ("per_position", "joint")
    assert own.data.train.json == "/data/own/train.json"
    for key in ("optim", "trainer", "inference"):
        assert own[key] == demo[key], key
    differ = ("backbone", "bn_batches")
    assert {k: v for k, v in own.model.items() if k not in differ} == {
        k: v for k, v in demo.model.items() if k not in differ
    }
    # model=cpu's from-scratch settings, not the backbone group's ImageNet defaults
    assert not own.model.backbone.pretrained and not own.model.backbone.frozen_bn and own.model.backbone.freeze_at == 0


@pytest.mark.parametrize("entry_point", ["benchmark", "quickstart", "cpu_train"])
def test_model_and_backbone_options_compose_for_the_entry_points_that_build_a_model(composer, entry_point) -> None:
    for model, backbone in itertools.product(MODELS, BACKBONES):
        assert composer(entry_point, f"model={model}", f"model/backbone={backbone}").model.backbone.name


@pytest.mark.parametrize("entry_point", ["train", "evaluate"])
def test_analyze_is_off_by_default_and_switched_on_by_analyze_true(composer, entry_point: str) -> None:
    assert composer(entry_point).analyze is False
    assert composer(entry_point, "analyze=true").analyze is True


def test_wandb_runs_of_a_sweep_share_a_group_and_carry_their_overrides_as_tags(composer, monkeypatch) -> None:
    from types import SimpleNamespace

    from hydra.types import RunMode

    import crossvis.engine.training as training

    overrides = ["model.crossover.enabled=true", "data.root=/" + "x" * 80]
    hydra = SimpleNamespace(mode=RunMode.MULTIRUN, sweep=SimpleNamespace(dir="multirun/mine/2026-12-06_10-00-00"))
    fake = SimpleNamespace(initialized=lambda: True, get=lambda: hydra)
    cfg = composer("train", "experiment=table6", "coco_init=coco.pth", overrides[0])
    monkeypatch.setattr(training, "HydraConfig", fake)
    fields = training.wandb_sweep_fields(cfg, overrides)
    assert fields["group"] == "table6"
    assert fields["tags"][0] == overrides[0] and len(fields["tags"][1]) == 64
    with open_dict(cfg):
        cfg.table = None  # a sweep of no paper table: grouped by its folder
    assert training.wandb_sweep_fields(cfg, overrides)["group"] == "2026-12-06_10-00-00"
    hydra.mode = RunMode.RUN
    assert "group" not in training.wandb_sweep_fields(cfg, overrides)  # a single run is not part of a sweep


def test_ytvis22_is_the_2021_layout_at_its_own_root_with_a_long_video_split(composer) -> None:
    cfg = composer("evaluate", "data=ytvis22", "data.long_videos=/d/gt_long.json")
    assert cfg.data.name == "ytvis22" and cfg.data.long_videos == "/d/gt_long.json"
    assert cfg.data.val.json == "datasets/ytvis_2022/valid/instances.json"
    assert cfg.data.train.json == "datasets/ytvis_2022/train/instances.json"
    assert composer("train", "data=ytvis22").data.long_videos is None


@pytest.mark.parametrize("entry_point", ["demo", "evaluate", "benchmark"])
def test_the_runtime_keys_of_the_entry_points_that_run_the_network(composer, entry_point) -> None:
    cfg = composer(entry_point)
    assert (cfg.runtime, cfg.model_path) == ("eager", None) and Runtime(cfg.runtime, cfg.model_path).name == "eager"
    cfg = composer(entry_point, "runtime=onnxruntime")
    with pytest.raises(ConfigError, match="model_path: runtime=onnxruntime needs the ONNX file"):
        Runtime(cfg.runtime, cfg.model_path)
