"""Trained models for inference: this project's Lightning checkpoints and released weights (loaded or
converted to this project's key names, ``python -m crossvis.cli.convert``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from crossvis.checkpoint.released import (
    CheckpointError,
    SourceCheckpoint,
    backbone_for,
    init_model,
    mismatch_error,
    plan_init,
    read_weights,
)
from crossvis.checkpoint.training_state import CHECKPOINT_EXPECTED
from crossvis.cli import require_file
from crossvis.conf import CONF_DIR
from crossvis.data.ytvis import Category
from crossvis.engine.lightning_module import CrossVISModule, build_model
from crossvis.errors import InputFormatError, UserError
from crossvis.files import atomic_path

# Test-time resize of the public CrossVIS configs (INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST): released
# files carry no config, and conf/train.yaml's default data (synthetic) would resize to 192 / 320.
RELEASED_TEST_SIZE = (360, 640)


def compose_train_config(overrides: list[str]) -> DictConfig:
    """``conf/train.yaml`` composed with ``overrides``, from inside a running Hydra app or outside one.

    No experiment logger: its settings refer to a training run's folder and mean nothing here.
    """
    overrides = ["logger=none", *overrides]
    if GlobalHydra.instance().is_initialized():
        return compose("train", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def released_model_config(source: SourceCheckpoint, overrides: list[str] | None = None) -> tuple[DictConfig, int, int]:
    """Config, class count and identity count of the model a detectron2-origin checkpoint fills.

    Released CondInst / CrossVIS files carry no hyper-parameters: the model is the paper's default
    with the detectron2 backbone of the file's depth and the authors' test resize
    (:data:`RELEASED_TEST_SIZE`; ``crossvis.cli.evaluate`` replaces the data section with the split's);
    the class count comes from ``cls_logits``,
    the identity count from the proxies ``cls.weight`` (1 for a CondInst file, whose proxies are
    re-initialised anyway).
    """
    if not source.is_detectron2:
        raise CheckpointError(
            source.path,
            "has no saved hyper-parameters and is not a detectron2/AdelaiDet/CrossVIS checkpoint: "
            "expected a Lightning checkpoint of this project (checkpoints/*.ckpt)",
        )
    if "head.cls_logits.weight" not in source.tensors:
        raise CheckpointError(source.path, "has no class logits (proposal_generator.fcos_head.cls_logits.weight)")
    short, max_size = RELEASED_TEST_SIZE
    cfg = compose_train_config(
        [
            f"model/backbone={backbone_for(source)}",
            f"data.transform.short={short}",
            f"data.transform.max_size={max_size}",
            *(overrides or []),
        ]
    )
    num_classes = int(source.tensors["head.cls_logits.weight"].shape[0])
    proxies = source.tensors.get("identity_loss.proxies.weight")
    return cfg, num_classes, int(proxies.shape[0]) if proxies is not None else 1


def load_module(
    checkpoint: str | Path,
    device: str = "cpu",
    data: DictConfig | None = None,
    categories: Sequence[Category] | None = None,
) -> CrossVISModule:
    """Rebuild a module from a Lightning checkpoint or a released CondInst/CrossVIS checkpoint.

    Lightning checkpoints carry their config. Released detectron2-format files (and their
    ``crossvis.cli.convert`` output) do not: the model is the paper's default with the detectron2
    backbone of the file's depth and the test-time resize of ``data``, class and identity counts
    from the file, and category names/ids from ``categories`` (those of the split to evaluate;
    generic names without them). Every model tensor must load (re-initialised: only a CondInst
    file's embedding branch). The module's ``cfg.inference`` holds its test-time settings
    (:func:`crossvis.engine.run_config.upgrade_run_config` for checkpoints of earlier versions).
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no such file {path}")
    source = read_weights(path)
    if source.hyper_parameters is not None:
        module = CrossVISModule.load_from_checkpoint(path, map_location=torch.device(device))
    else:
        cfg, num_classes, num_identities = released_model_config(source)
        names, ids = [f"class {i + 1}" for i in range(num_classes)], list(range(1, num_classes + 1))
        if data is not None:
            cfg.data = data
        if categories is not None:
            if len(categories) != num_classes:
                raise CheckpointError(
                    path,
                    f"has {num_classes} classes (cls_logits) but the data has {len(categories)} categories; "
                    "evaluate it on the dataset it was trained on",
                )
            names, ids = [c.name for c in categories], [c.id for c in categories]
        module = CrossVISModule(cfg, num_classes, num_identities, names, ids)
        reinitialised, unused = init_model(module.model, path, strict=True)  # unmatched keys raise
        print(
            f"Loaded {path} ({source.origin}): no model tensor unmatched, {len(reinitialised)} re-initialised; "
            f"file keys unused: {', '.join(unused) or 'none'}"
        )
        module.to(torch.device(device))
    return module.eval()


def load_checked_module(checkpoint: str | Path, *args: Any, **kwargs: Any) -> CrossVISModule:
    """:func:`load_module` under the user-error contract: a missing file, a folder or a file that is
    not a checkpoint is one clear message (never torch's advice to load it unsafely)."""
    path = require_file(checkpoint, "checkpoint", CHECKPOINT_EXPECTED)
    try:
        return load_module(path, *args, **kwargs)
    except UserError:
        raise
    except Exception as error:  # torch/pickle/Lightning raise many types for a file that is not a checkpoint
        lines = str(error).strip().splitlines()
        detail = lines[0] if lines and "weights_only" not in str(error) else "not a checkpoint torch can read safely"
        raise InputFormatError(
            f"checkpoint: cannot load {path} ({type(error).__name__}: {detail}); expected {CHECKPOINT_EXPECTED}"
        ) from error


def convert(src: str, dst: str, num_classes: int | None, num_identities: int | None, overrides: list[str]) -> dict:
    """Write the converted checkpoint to ``dst`` (atomically) and return the report."""
    source = read_weights(src)
    cfg, source_classes, source_identities = released_model_config(source, overrides)
    model = build_model(cfg.model, num_classes or source_classes, num_identities or source_identities)
    target = model.state_dict()
    plan = plan_init(source, target)
    if not plan.complete:
        raise mismatch_error(plan, source, target)
    with atomic_path(dst) as tmp:
        torch.save({"state_dict": source.tensors, "converted_from": source.origin}, tmp)
    return {"source": source.origin, "backbone": backbone_for(source), **plan.report()}
