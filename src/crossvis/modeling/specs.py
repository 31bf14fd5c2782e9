"""The model's settings as typed, immutable values: one dataclass per node of the ``model`` config.

The modules of :mod:`crossvis.modeling` take these, never a config object. :func:`spec_from_dict`
builds them from the plain dict of a config node, field for field; a bad value raises an
:class:`ArgumentError` whose argument is the dotted path inside the spec (``fcos.box_loss``), which
the code that read the config prefixes with the node's own path (``model.``).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from crossvis.errors import ArgumentError, argument_prefix, check_choice

# model.loss_normalizer: per_frame = public code (L_det, L_seg of frame t and of t+δ, each over its
# own positives, averaged; single images: one normaliser over the batch, as AdelaiDet's CondInst);
# pair = one normaliser over both frames (frames weigh by their positives).
LOSS_NORMALIZERS = ("per_frame", "pair")
# model.bn_batches: per_position = the network runs once on the key frames and once on the reference
# frames (public code), so train-mode BatchNorm normalises B frames per call and updates its running
# statistics twice per step; joint = one batch of 2B frames.
BN_BATCHES = ("per_position", "joint")
UPSAMPLE_MODES = ("aligned_bilinear", "pixel_center")
BOX_LOSSES = ("iou_plus1", "giou_pixels")
EMBEDDING_TYPES = ("global", "pairwise")
EMBEDDING_LOSSES = ("focal", "ce")
# model.embedding.normalizer: local = L_id over this process's positives (public code);
# all_reduce = over their mean across ranks, as the detection losses.
IDENTITY_NORMALIZERS = ("local", "all_reduce")
NUM_LEVELS = 5  # P3-P7


@dataclass(frozen=True)
class BackboneSpec:
    """``model.backbone``: a timm network (``name``) and how it is initialised, frozen and fed."""

    name: str
    pretrained: bool  # timm ImageNet weights; ignored when ``checkpoint`` is set
    checkpoint: str | None  # local timm state dict
    freeze_at: int
    frozen_bn: bool
    stride_in_1x1: bool  # detectron2's MSRA ResNet
    input_format: str  # RGB | BGR
    pixel_mean: tuple[float, ...] | None  # 0..255, in input_format order; None: the timm model's own
    pixel_std: tuple[float, ...] | None

    def __post_init__(self) -> None:
        if self.input_format.upper() not in ("RGB", "BGR"):
            raise ArgumentError("input_format", f"={self.input_format!r}: expected RGB or BGR")
        if self.stride_in_1x1 and (self.pretrained or self.checkpoint):
            raise ArgumentError(
                "stride_in_1x1",
                f"=true ({self.name}) computes detectron2's MSRA ResNet: timm ImageNet weights do not fit it; set "
                "pretrained=false and initialise the model from a detectron2/AdelaiDet checkpoint",
            )


@dataclass(frozen=True)
class HeadSpec:
    """``model.head``: the FCOS classification / box / embedding towers."""

    num_convs: int
    channels: int
    prior_prob: float


@dataclass(frozen=True)
class FCOSSpec:
    """``model.fcos``: target assignment and the detection losses."""

    sizes_of_interest: tuple[int, ...]
    center_sampling_radius: float
    focal_alpha: float  # also the focal identity loss's (Eq. 14)
    focal_gamma: float
    box_loss: str

    def __post_init__(self) -> None:
        check_choice("box_loss", self.box_loss, BOX_LOSSES)
        if len(self.sizes_of_interest) != NUM_LEVELS - 1:
            raise ArgumentError(
                "sizes_of_interest",
                f" has {len(self.sizes_of_interest)} entries, expected {NUM_LEVELS - 1} "
                "(one boundary between each pair of pyramid levels)",
            )


@dataclass(frozen=True)
class MaskBranchSpec:
    """``model.mask_branch``: the bottom module F_mask."""

    channels: int
    num_convs: int
    out_channels: int


@dataclass(frozen=True)
class DynamicHeadSpec:
    """``model.dynamic_head``: the instance-conditioned mask FCN."""

    channels: int
    num_layers: int


@dataclass(frozen=True)
class MaskSpec:
    """``model.mask``: positives used for the mask losses and the relative-coordinate scales."""

    max_proposals: int
    soi: tuple[int, ...]


@dataclass(frozen=True)
class CrossoverSpec:
    """``model.crossover``: L_cross (Eq. 7)."""

    enabled: bool
    weight: float


@dataclass(frozen=True)
class EmbeddingSpec:
    """``model.embedding``: the embedding tower and L_id (Table 7)."""

    enabled: bool
    type: str
    loss: str
    dim: int
    normalizer: str

    def __post_init__(self) -> None:
        check_choice("type", self.type, EMBEDDING_TYPES)
        check_choice("loss", self.loss, EMBEDDING_LOSSES)
        check_choice("normalizer", self.normalizer, IDENTITY_NORMALIZERS)


@dataclass(frozen=True)
class CrossVISSpec:
    """``model``: everything that defines the network and its training losses."""

    backbone: BackboneSpec
    feature_grad_scale: float  # backbone+FPN receive this fraction of the heads' gradient
    loss_normalizer: str
    bn_batches: str
    fpn_channels: int
    head: HeadSpec
    fcos: FCOSSpec
    mask_branch: MaskBranchSpec
    dynamic_head: DynamicHeadSpec
    mask: MaskSpec
    crossover: CrossoverSpec
    embedding: EmbeddingSpec
    upsample: str

    def __post_init__(self) -> None:
        check_choice("loss_normalizer", self.loss_normalizer, LOSS_NORMALIZERS)
        check_choice("bn_batches", self.bn_batches, BN_BATCHES)
        check_choice("upsample", self.upsample, UPSAMPLE_MODES)


@dataclass(frozen=True)
class PostProcessing:
    """CondInst's per-frame post-processing (``inference.detection``), handed to each inference call."""

    score_threshold: float  # on cls * ctr
    pre_nms_topk: int  # per level
    nms_threshold: float
    max_detections: int
    mask_threshold: float


Spec = TypeVar("Spec")


def spec_from_dict(cls: type[Spec], values: Mapping[str, Any], ignore: tuple[str, ...] = ()) -> Spec:
    """``cls`` (a spec dataclass) from the plain dict of its config node; nested specs from nested dicts.

    Every field must be present and no other key (but ``ignore``): a misspelt or stale key is an error.
    """
    names = [field.name for field in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names) - set(ignore))
    if unknown:
        raise ArgumentError(unknown[0], f": unknown setting; expected one of {names}")
    missing = [name for name in names if name not in values]
    if missing:
        raise ArgumentError(missing[0], ": missing")
    types = typing.get_type_hints(cls)
    kwargs = {}
    for name in names:
        value = values[name]
        if dataclasses.is_dataclass(types[name]):
            if not isinstance(value, Mapping):
                raise ArgumentError(name, f": expected a mapping of settings, got {value!r}")
            with argument_prefix(name):
                value = spec_from_dict(types[name], value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)
