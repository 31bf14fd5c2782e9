"""Checkpoints from detectron2 / AdelaiDet (CondInst) and the authors' CrossVIS fork, mapped to this model.

One key table (detectron2 / AdelaiDet / CrossVIS names → ours) serves ``model.init_from`` (:func:`init_model`),
``python -m crossvis.cli.convert`` and ``crossvis.cli.evaluate checkpoint=PATH`` on released weights.

Formats read: this project's Lightning checkpoints (``state_dict`` with ``model.`` keys), its bare
state dicts, files written by the converter (``{"state_dict", "converted_from"}``), detectron2 ``.pth``
(``{"model": state_dict, ...}`` or a bare state dict) and detectron2 ``.pkl`` (``{"model": {name:
numpy array}}``). Tensors are renamed only: the BGR channel order of the MSRA ResNet is handled by
the backbone (``model.backbone.input_format``), never by flipping conv1 here.

Model weights only: writing, resuming and checking this project's Lightning training checkpoints is
:mod:`crossvis.checkpoint.training_state`.
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from crossvis.errors import ArgumentError, InputFormatError
from crossvis.modeling.crossvis import CrossVIS

OWN = "crossvis"  # this project's own files
CONDINST = "condinst"  # AdelaiDet CondInst (COCO): no embedding branch, no identity proxies
CROSSVIS_FORK = "crossvis_fork"  # the authors' CrossVIS (AdelaiDet fork): + reid branch and ``cls`` proxies
DETECTRON2_ORIGINS = (CONDINST, CROSSVIS_FORK)
OWN_PREFIXES = ("features.", "head.", "mask_branch.", "embedding.", "identity_loss.")

_BODY = "features.backbone.body."
# (AdelaiDet / CrossVIS-fork key pattern, this project's key), tried in order; first match wins.
KEY_TABLE: tuple[tuple[str, str], ...] = (
    (r"backbone\.bottom_up\.stem\.conv1\.weight", _BODY + "conv1.weight"),
    (r"backbone\.bottom_up\.stem\.conv1\.norm\.(\w+)", _BODY + r"bn1.\1"),
    (r"backbone\.bottom_up\.res2\.(\d+)\.conv(\d)\.weight", _BODY + r"layer1.\1.conv\2.weight"),
    (r"backbone\.bottom_up\.res3\.(\d+)\.conv(\d)\.weight", _BODY + r"layer2.\1.conv\2.weight"),
    (r"backbone\.bottom_up\.res4\.(\d+)\.conv(\d)\.weight", _BODY + r"layer3.\1.conv\2.weight"),
    (r"backbone\.bottom_up\.res5\.(\d+)\.conv(\d)\.weight", _BODY + r"layer4.\1.conv\2.weight"),
    (r"backbone\.bottom_up\.res2\.(\d+)\.conv(\d)\.norm\.(\w+)", _BODY + r"layer1.\1.bn\2.\3"),
    (r"backbone\.bottom_up\.res3\.(\d+)\.conv(\d)\.norm\.(\w+)", _BODY + r"layer2.\1.bn\2.\3"),
    (r"backbone\.bottom_up\.res4\.(\d+)\.conv(\d)\.norm\.(\w+)", _BODY + r"layer3.\1.bn\2.\3"),
    (r"backbone\.bottom_up\.res5\.(\d+)\.conv(\d)\.norm\.(\w+)", _BODY + r"layer4.\1.bn\2.\3"),
    (r"backbone\.bottom_up\.res2\.(\d+)\.shortcut\.weight", _BODY + r"layer1.\1.downsample.0.weight"),
    (r"backbone\.bottom_up\.res3\.(\d+)\.shortcut\.weight", _BODY + r"layer2.\1.downsample.0.weight"),
    (r"backbone\.bottom_up\.res4\.(\d+)\.shortcut\.weight", _BODY + r"layer3.\1.downsample.0.weight"),
    (r"backbone\.bottom_up\.res5\.(\d+)\.shortcut\.weight", _BODY + r"layer4.\1.downsample.0.weight"),
    (r"backbone\.bottom_up\.res2\.(\d+)\.shortcut\.norm\.(\w+)", _BODY + r"layer1.\1.downsample.1.\2"),
    (r"backbone\.bottom_up\.res3\.(\d+)\.shortcut\.norm\.(\w+)", _BODY + r"layer2.\1.downsample.1.\2"),
    (r"backbone\.bottom_up\.res4\.(\d+)\.shortcut\.norm\.(\w+)", _BODY + r"layer3.\1.downsample.1.\2"),
    (r"backbone\.bottom_up\.res5\.(\d+)\.shortcut\.norm\.(\w+)", _BODY + r"layer4.\1.downsample.1.\2"),
    (r"backbone\.fpn_lateral3\.(\w+)", r"features.fpn.lateral.0.\1"),
    (r"backbone\.fpn_lateral4\.(\w+)", r"features.fpn.lateral.1.\1"),
    (r"backbone\.fpn_lateral5\.(\w+)", r"features.fpn.lateral.2.\1"),
    (r"backbone\.fpn_output3\.(\w+)", r"features.fpn.output.0.\1"),
    (r"backbone\.fpn_output4\.(\w+)", r"features.fpn.output.1.\1"),
    (r"backbone\.fpn_output5\.(\w+)", r"features.fpn.output.2.\1"),
    (r"backbone\.top_block\.(p6|p7)\.(\w+)", r"features.fpn.\1.\2"),
    (r"proposal_generator\.fcos_head\.cls_tower\.(.+)", r"head.cls_tower.\1"),
    (r"proposal_generator\.fcos_head\.bbox_tower\.(.+)", r"head.box_tower.\1"),
    (r"proposal_generator\.fcos_head\.cls_logits\.(\w+)", r"head.cls_logits.\1"),
    (r"proposal_generator\.fcos_head\.bbox_pred\.(\w+)", r"head.box_pred.\1"),
    (r"proposal_generator\.fcos_head\.ctrness\.(\w+)", r"head.ctr_pred.\1"),
    (r"proposal_generator\.fcos_head\.scales\.(\d+)\.scale", r"head.scales.\1"),
    (r"controller\.(\w+)", r"head.controller.\1"),
    (r"mask_branch\.(refine|tower)\.(.+)", r"mask_branch.\1.\2"),
    (r"proposal_generator\.fcos_head\.reid_tower\.(.+)", r"embedding.tower.\1"),
    (r"proposal_generator\.fcos_head\.reid_pred\.(\w+)", r"embedding.pred.\1"),
    (r"proposal_generator\.fcos_head\.reid_pred_bn\.(\w+)", r"embedding.pred_bn.\1"),
    (r"cls\.(weight|bias)", r"identity_loss.proxies.\1"),
)
_COMPILED = tuple((re.compile(pattern), target) for pattern, target in KEY_TABLE)


class CheckpointError(InputFormatError):
    """A checkpoint that cannot initialise the model as asked; names the file and the keys."""

    def __init__(self, path: str | Path, message: str, keys: list[str] | None = None) -> None:
        keys = list(keys or [])
        listing = "".join(f"\n  {k}" for k in keys)
        super().__init__(f"{path}: {message}{listing}")
        self.path, self.keys = Path(path), keys


@dataclass
class SourceCheckpoint:
    """A checkpoint's tensors under this project's key names, with where they came from."""

    path: Path
    origin: str  # OWN, CONDINST or CROSSVIS_FORK
    tensors: dict[str, Tensor]  # this project's key → tensor
    source_keys: dict[str, str]  # this project's key → key in the file
    unmapped: list[str] = field(default_factory=list)  # file keys with no counterpart in the key table
    hyper_parameters: dict | None = None  # Lightning checkpoints only

    @property
    def is_detectron2(self) -> bool:
        return self.origin in DETECTRON2_ORIGINS


def map_detectron2_key(key: str) -> str | None:
    """This project's name for an AdelaiDet / CrossVIS-fork key, or None (e.g. ``mask_head`` buffers)."""
    for pattern, target in _COMPILED:
        if pattern.fullmatch(key):
            return pattern.sub(target, key)
    return None


def _to_tensor(path: Path, key: str, value: object) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise CheckpointError(path, f"entry {key!r} is a {type(value).__name__}, expected a tensor or numpy array")


def _load_file(path: Path) -> object:
    """Unpickle a ``.pkl`` (detectron2, numpy arrays) or a torch file (trusted local files)."""
    try:
        if path.suffix == ".pkl":
            with open(path, "rb") as f:
                return pickle.load(f, encoding="latin1")
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # unpickling raises many types: say which file and what was expected
        raise CheckpointError(
            path, f"cannot read as a checkpoint ({type(error).__name__}: {error}); expected a .pth/.ckpt or .pkl file"
        ) from error


def read_weights(path: str | Path) -> SourceCheckpoint:
    """Read any supported checkpoint and rename its tensors to this project's keys."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    obj = _load_file(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(path, f"expected a dict of tensors, got {type(obj).__name__}")
    hyper_parameters = obj.get("hyper_parameters") if isinstance(obj.get("hyper_parameters"), Mapping) else None
    origin = str(obj.get("converted_from", OWN))
    state = obj.get("state_dict", obj.get("model", obj))
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(path, "holds no state dict ('state_dict', 'model' or a bare dict of tensors)")
    if any(k.startswith("model.") for k in state):  # Lightning: the module's ``model`` attribute
        state = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    keys = list(state)
    if any(k.startswith(("backbone.bottom_up.", "proposal_generator.")) for k in keys):
        origin = CROSSVIS_FORK if "cls.weight" in state or any(".reid_" in k for k in keys) else CONDINST
        tensors, source_keys, unmapped = {}, {}, []
        for key in keys:
            own = map_detectron2_key(key)
            if own is None:
                unmapped.append(key)
                continue
            tensors[own] = _to_tensor(path, key, state[key])
            source_keys[own] = key
        return SourceCheckpoint(path, origin, tensors, source_keys, unmapped, hyper_parameters)
    if origin not in (OWN, *DETECTRON2_ORIGINS):
        raise CheckpointError(
            path, f"field 'converted_from': expected one of {(OWN, *DETECTRON2_ORIGINS)}, got {origin!r}"
        )
    unknown = [k for k in keys if not k.startswith(OWN_PREFIXES)]
    if len(unknown) == len(keys):
        raise CheckpointError(
            path,
            "unrecognised key layout: expected detectron2/AdelaiDet names (backbone.bottom_up.*, "
            "proposal_generator.*) or this project's (features.*, head.*, ...); first keys:",
            keys[:5],
        )
    tensors = {k: _to_tensor(path, k, state[k]) for k in keys if k.startswith(OWN_PREFIXES)}
    return SourceCheckpoint(path, origin, tensors, {k: k for k in tensors}, unknown, hyper_parameters)


def backbone_for(source: SourceCheckpoint) -> str:
    """The ``model/backbone`` config a detectron2-origin checkpoint needs (R-50 or R-101 from res4's depth)."""
    prefix = _BODY + "layer3."
    blocks = {k[len(prefix) :].split(".")[0] for k in source.tensors if k.startswith(prefix)}
    depth = {6: "resnet50_d2", 23: "resnet101_d2"}.get(len(blocks))
    if depth is None:
        raise CheckpointError(
            source.path,
            f"res4 has {len(blocks)} blocks: expected 6 (ResNet-50) or 23 (ResNet-101) for a detectron2 ResNet",
        )
    return depth


@dataclass
class InitPlan:
    """What initialising a model from a checkpoint does, tensor by tensor."""

    loaded: dict[str, Tensor]  # this project's key → tensor to load
    reinitialised: dict[str, str]  # this project's key → why it keeps its fresh init
    unmatched: list[str]  # model tensors with no same-shape counterpart and no reason to re-initialise
    surplus: list[str]  # this project's keys of file tensors the model has no place for (e.g. a deeper backbone)
    unused: list[str]  # file keys that initialise nothing (surplus ones and those outside the key table)

    @property
    def complete(self) -> bool:
        """True when every model tensor and every mapped file tensor found its counterpart."""
        return not (self.unmatched or self.surplus)

    def report(self) -> dict:
        """JSON-ready summary (the converter's last line)."""
        return {
            "loaded": len(self.loaded),
            "reinitialised": self.reinitialised,
            "unmatched": self.unmatched,
            "unused": self.unused,
        }


def _expected_reinit(key: str, source: SourceCheckpoint, found: Tensor | None, wanted: Tensor) -> str | None:
    """Why ``key`` may keep its init (the issue's three cases), or None if a missing tensor is an error.

    A checkpoint without an embedding branch is a CondInst one: AdelaiDet's, or this project's COCO
    stage (``model.embedding.enabled=false``); its embedding tower and identity proxies start anew.
    """
    if key.startswith("head.cls_logits.") and found is not None:
        return f"class count {found.shape[0]}→{wanted.shape[0]}"
    if key.startswith("identity_loss.proxies.") and found is not None:
        return f"identity count {found.shape[0]}→{wanted.shape[0]}"
    has_embedding = any(k.startswith("embedding.") for k in source.tensors)
    if key.startswith(("embedding.", "identity_loss.proxies.")) and found is None and not has_embedding:
        return "CondInst checkpoint has no embedding branch"
    return None


def plan_init(source: SourceCheckpoint, target: Mapping[str, Tensor]) -> InitPlan:
    """Match the checkpoint's tensors to the model's ``state_dict()`` by name and shape.

    BatchNorm ``num_batches_tracked`` counters are loaded when present and never required. File
    tensors the model has no place for are ``surplus`` (a ResNet-101 file into a ResNet-50 model),
    except identity proxies, which a pair-wise embedding model does not have.
    """
    loaded: dict[str, Tensor] = {}
    reinitialised: dict[str, str] = {}
    unmatched: list[str] = []
    for key, wanted in target.items():
        found = source.tensors.get(key)
        if found is not None and tuple(found.shape) == tuple(wanted.shape):
            loaded[key] = found
        elif key.endswith("num_batches_tracked"):
            continue
        elif (reason := _expected_reinit(key, source, found, wanted)) is not None:
            reinitialised[key] = reason
        else:
            unmatched.append(key)
    surplus = [
        k
        for k in source.tensors
        if k not in target and not k.endswith("num_batches_tracked") and not k.startswith("identity_loss.proxies.")
    ]
    used = set(loaded) | set(reinitialised)
    unused = [source.source_keys[k] for k in source.tensors if k not in used] + list(source.unmapped)
    return InitPlan(loaded, reinitialised, unmatched, surplus, unused)


def describe_mismatch(plan: InitPlan, source: SourceCheckpoint, target: Mapping[str, Tensor]) -> list[str]:
    """One line per unmatched model tensor (its shape, what the file holds) and per surplus file tensor."""
    lines = []
    for key in plan.unmatched:
        found = source.tensors.get(key)
        got = f"file has {tuple(found.shape)} ({source.source_keys[key]})" if found is not None else "not in file"
        lines.append(f"{key} {tuple(target[key].shape)}: {got}")
    for key in plan.surplus:
        lines.append(f"{source.source_keys[key]} {tuple(source.tensors[key].shape)}: in file, no place in the model")
    return lines


def mismatch_error(
    plan: InitPlan, source: SourceCheckpoint, target: Mapping[str, Tensor], hint: str = ""
) -> CheckpointError:
    """The one error (or warning text) for an incomplete match: counts, then every key."""
    counts = []
    if plan.unmatched:
        counts.append(f"{len(plan.unmatched)} model tensors have no same-shape counterpart")
    if plan.surplus:
        counts.append(f"{len(plan.surplus)} file tensors have no place in the model")
    return CheckpointError(source.path, " and ".join(counts) + f"{hint}:", describe_mismatch(plan, source, target))


def init_model(model: CrossVIS, path: str | Path, strict: bool = True) -> tuple[list[str], list[str]]:
    """Initialise ``model`` from any checkpoint :func:`read_weights` reads (``model.init_from``).

    Every model tensor must find a same-shape counterpart, except the expected re-inits (class
    logits when the class count differs, identity proxies when M differs, the embedding branch
    from a CondInst file), and every file tensor of the key table must find its place.
    Otherwise a :class:`CheckpointError` lists the keys; with ``strict`` false
    (``model.init_strict=false``) that becomes a warning. A detectron2-format file needs the
    detectron2 backbone (``model/backbone=resnet50_d2`` or ``resnet101_d2``).
    Returns (re-initialised keys, file keys left unused).
    """
    if not Path(path).expanduser().is_file():
        raise ArgumentError("init_from", f": no such file {path}")
    source = read_weights(path)
    backbone = model.spec.backbone
    if source.is_detectron2 and (not backbone.stride_in_1x1 or f"{backbone.name}_d2" != backbone_for(source)):
        raise CheckpointError(
            source.path,
            f"is a detectron2/AdelaiDet {source.origin} checkpoint for {backbone_for(source)} (MSRA ResNet: BGR "
            f"input, stride in the 1x1 conv) but the model has model.backbone.name={backbone.name}, "
            f"stride_in_1x1={str(backbone.stride_in_1x1).lower()}; use model/backbone={backbone_for(source)}",
        )
    target = model.state_dict()
    plan = plan_init(source, target)
    if not plan.complete:
        error = mismatch_error(plan, source, target, " (init_strict=false to proceed)")
        if strict:
            raise error
        warnings.warn(str(error), stacklevel=2)
    model.load_state_dict(plan.loaded, strict=False)
    return list(plan.reinitialised) + plan.unmatched, plan.unused
