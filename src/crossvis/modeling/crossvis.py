"""The composed CrossVIS model: training losses on frame pairs (Eq. 15) and per-frame online inference."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.onnx.operators import shape_as_tensor

from crossvis.errors import ArgumentError
from crossvis.modeling.backbone import FPN_STRIDES, BackboneFPN, pad_to_multiple
from crossvis.modeling.condinst import (
    DynamicMaskHead,
    MaskBranch,
    gt_masks_at_stride4,
    mean_dice,
    sample_per_group,
)
from crossvis.modeling.crossover import crossover_loss
from crossvis.modeling.embedding import EmbeddingHead, IdentityLoss
from crossvis.modeling.fcos import (
    BOX_LOSSES,
    FCOSHead,
    build_targets,
    detection_losses,
    postprocess_boxes,
    select_detections,
)
from crossvis.modeling.layers import UPSAMPLE_MODES, upsample
from crossvis.modeling.paste import paste_masks
from crossvis.modeling.precision import autocast_dtype, with_inference_precision
from crossvis.modeling.released_weights import CheckpointError, backbone_for, mismatch_error, plan_init, read_weights
from crossvis.modeling.types import HeadOutputs, PyramidLocations, pyramid_locations

SIZE_DIVISOR = 32
# model.loss_normalizer: per_frame = public code (L_det, L_seg of frame t and of t+δ, each over its
# own positives, averaged; single images: one normaliser over the batch, as AdelaiDet's CondInst);
# pair = one normaliser over both frames (frames weigh by their positives).
LOSS_NORMALIZERS = ("per_frame", "pair")
# model.bn_batches: per_position = the network runs once on the key frames and once on the reference
# frames (public code), so train-mode BatchNorm normalises B frames per call and updates its running
# statistics twice per step; joint = one batch of 2B frames.
BN_BATCHES = ("per_position", "joint")


# What :meth:`CrossVIS.forward_frame` returns (and the exported ONNX graph outputs, in this order).
FRAME_OUTPUTS = ("boxes", "scores", "labels", "mask_probs", "embeddings")


def finish_frame(
    raw: dict[str, Tensor],
    input_size: tuple[int, int],
    orig_size: tuple[int, int],
    upsample_mode: str,
    threshold: float,
) -> dict[str, Tensor]:
    """:data:`FRAME_OUTPUTS` of an ``input_size`` (h, w) frame → the tracker's detections in ``orig_size`` pixels.

    ``CondInst.postprocess``: boxes (unclipped, from NMS) are scaled to (H0, W0), clipped, and
    empty ones dropped; masks: ×4 to the padded input → crop the padding → bilinear resize to
    (H0, W0) → threshold (:func:`paste_masks`). Shared by the PyTorch and ONNX Runtime paths.
    """
    h, w = int(input_size[0]), int(input_size[1])
    orig_h, orig_w = int(orig_size[0]), int(orig_size[1])
    boxes, nonempty = postprocess_boxes(raw["boxes"], (orig_w / w, orig_h / h), (orig_h, orig_w))
    masks = upsample(raw["mask_probs"][nonempty][:, None], 4, upsample_mode)[..., :h, :w]
    detections = {
        "boxes": boxes[nonempty],
        "labels": raw["labels"][nonempty],
        "scores": raw["scores"][nonempty],
        "masks": paste_masks(masks[:, 0], (orig_h, orig_w), threshold),
    }
    if "embeddings" in raw:
        detections["embeddings"] = raw["embeddings"][nonempty]
    return detections


def _frames(out: HeadOutputs, group: slice) -> HeadOutputs:
    """The dense predictions of the frames ``group`` of the flattened batch."""
    return HeadOutputs(**{f.name: getattr(out, f.name)[group] for f in dataclasses.fields(out)})


class CrossVIS(nn.Module):
    """CondInst (FCOS + dynamic mask head) with crossover learning and global balanced embeddings."""

    def __init__(self, cfg_model: DictConfig, num_classes: int, num_identities: int) -> None:
        super().__init__()
        cfg = cfg_model
        self.cfg = cfg
        self.num_classes = num_classes
        self.loss_normalizer = cfg.get("loss_normalizer", "per_frame")
        # Settings used only later (training / inference) are checked here, so a bad one fails at once.
        if self.loss_normalizer not in LOSS_NORMALIZERS:
            raise ArgumentError(
                "loss_normalizer", f": expected one of {LOSS_NORMALIZERS}, got {self.loss_normalizer!r}"
            )
        self.bn_batches = cfg.get("bn_batches", "per_position")
        if self.bn_batches not in BN_BATCHES:
            raise ArgumentError("bn_batches", f"={self.bn_batches!r}: expected one of {BN_BATCHES}")
        self.upsample_mode = str(cfg.get("upsample", "aligned_bilinear"))
        if self.upsample_mode not in UPSAMPLE_MODES:
            raise ArgumentError("upsample", f"={self.upsample_mode!r}: expected one of {UPSAMPLE_MODES}")
        self.box_loss = str(cfg.fcos.get("box_loss", "iou_plus1"))
        if self.box_loss not in BOX_LOSSES:
            raise ArgumentError("box_loss", f"={self.box_loss!r}: expected one of {BOX_LOSSES}")
        if len(cfg.fcos.sizes_of_interest) != len(FPN_STRIDES) - 1:
            raise ArgumentError(
                "sizes_of_interest",
                f" has {len(cfg.fcos.sizes_of_interest)} entries, expected "
                f"{len(FPN_STRIDES) - 1} (one boundary between each pair of pyramid levels)",
            )
        autocast_dtype((cfg.get("inference") or {}).get("precision", 32))
        self.features = BackboneFPN(cfg.backbone, cfg.fpn_channels, cfg.feature_grad_scale)
        self.mask_head = DynamicMaskHead(
            cfg.mask_branch.out_channels,
            cfg.dynamic_head.channels,
            cfg.dynamic_head.num_layers,
            list(cfg.mask.soi),
            self.upsample_mode,
        )
        self.head = FCOSHead(
            cfg.fpn_channels,
            cfg.head.channels,
            cfg.head.num_convs,
            num_classes,
            self.mask_head.num_params,
            list(FPN_STRIDES),
            cfg.head.prior_prob,
        )
        self.mask_branch = MaskBranch(
            cfg.fpn_channels,
            cfg.mask_branch.channels,
            cfg.mask_branch.num_convs,
            cfg.mask_branch.out_channels,
            self.upsample_mode,
        )
        # model.embedding.enabled=false (the CondInst COCO stage): no embedding tower, proxies or L_id,
        # so the state dict is the video model's minus the ``embedding.*`` / ``identity_loss.*`` keys.
        self.embedding: EmbeddingHead | None = None
        self.identity_loss: IdentityLoss | None = None
        if cfg.embedding.get("enabled", True):
            self.embedding = EmbeddingHead(cfg.fpn_channels, cfg.head.channels, cfg.head.num_convs, cfg.embedding.dim)
            self.identity_loss = IdentityLoss(
                cfg.embedding.type,
                cfg.embedding.loss,
                cfg.embedding.dim,
                num_identities,
                cfg.fcos.focal_alpha,
                cfg.fcos.focal_gamma,
                cfg.embedding.get("normalizer", "local"),
            )

    def _dense(
        self, images: Tensor, image_sizes: Tensor
    ) -> tuple[PyramidLocations, HeadOutputs, Tensor, Tensor | None]:
        """Everything computed at every location of ``images [N, 3, H, W]`` (H, W multiples of 32).

        ``image_sizes [N, 2]``: valid (h, w) of each image; the backbone zeroes the rest after
        normalising (detectron2 pads normalised images).
        """
        feats = self.features(images, image_sizes)
        locations = pyramid_locations([tuple(f.shape[-2:]) for f in feats], list(FPN_STRIDES), images.device)
        embeddings = self.embedding(feats) if self.embedding is not None else None
        return locations, self.head(feats), self.mask_branch(feats), embeddings

    def _dense_frames(
        self, images: Tensor, image_sizes: Tensor
    ) -> tuple[PyramidLocations, HeadOutputs, Tensor, Tensor | None]:
        """:meth:`_dense` of ``images [B, k, 3, H, W]``, outputs flattened frame-major (frame b·k + i).

        ``bn_batches=per_position``: one call per position i (key frames first), as the public code.
        """
        if self.bn_batches == "joint" or images.shape[1] == 1:
            return self._dense(images.flatten(0, 1), image_sizes.flatten(0, 1))
        calls = [self._dense(images[:, i], image_sizes[:, i]) for i in range(images.shape[1])]
        locations = calls[0][0]

        def interleave(parts: list[Tensor]) -> Tensor:
            return torch.stack(parts, dim=1).flatten(0, 1)

        out = HeadOutputs(
            **{f.name: interleave([getattr(c[1], f.name) for c in calls]) for f in dataclasses.fields(HeadOutputs)}
        )
        embeddings = None if calls[0][3] is None else interleave([c[3] for c in calls])
        return locations, out, interleave([c[2] for c in calls]), embeddings

    def forward_train(
        self, images: Tensor, image_sizes: Tensor, targets: list[list[dict[str, Tensor]]]
    ) -> dict[str, Tensor]:
        """Losses of a batch of frame pairs (index 0 = key frame t, 1 = reference frame t+δ).

        The network runs per frame position (``bn_batches``, see :meth:`_dense_frames`). L_det and L_seg are computed for the
        key frames and for the reference frames, each with its own normaliser, and averaged (public
        code; ``model.loss_normalizer=pair``: one normaliser over all 2B frames). Single images have
        one frame each, so either way one normaliser covers the batch (AdelaiDet's CondInst). Padding is
        background for the losses, so ``image_sizes`` (valid sizes) is not needed here.
        Single images (``[B, 1, 3, H, W]``, the CondInst COCO stage) train without crossover and
        without L_id. A frame dict with ``identity_loss: False`` (COCO pseudo-pairs in joint
        training) keeps its positives out of L_id.
        """
        k = images.shape[1] if images.dim() == 5 else 0
        divisible = images.shape[-2] % SIZE_DIVISOR == 0 and images.shape[-1] % SIZE_DIVISOR == 0
        if k not in (1, 2) or not divisible:
            raise ValueError(
                f"forward_train: images must be [B, 2, 3, H, W] (pairs) or [B, 1, 3, H, W] (single images) "
                f"with H, W multiples of {SIZE_DIVISOR}, got {tuple(images.shape)}"
            )
        if tuple(image_sizes.shape) != (images.shape[0], k, 2):
            raise ValueError(f"forward_train: image_sizes must be [B, {k}, 2], got {tuple(image_sizes.shape)}")
        if len(targets) != images.shape[0] or any(len(pair) != k for pair in targets):
            raise ValueError(f"forward_train: targets must be {images.shape[0]} lists of {k} frame dicts")
        if k == 1 and (self.cfg.crossover.enabled or self.identity_loss is not None):
            raise ValueError(
                "forward_train: single images train CondInst only: the model needs crossover.enabled=false and "
                "embedding.enabled=false, or pairs of frames"
            )
        cfg = self.cfg
        frames = [t for pair in targets for t in pair]  # frame 2b = key, 2b+1 = reference
        locations, out, mask_feats, embeddings = self._dense_frames(images, image_sizes)
        labels, reg_targets, positives = build_targets(
            locations, frames, self.num_classes, list(cfg.fcos.sizes_of_interest), cfg.fcos.center_sampling_radius
        )
        gt_masks = gt_masks_at_stride4(torch.cat([t["masks"] for t in frames]))
        sampled = positives.subset(sample_per_group(positives.frame, cfg.mask.max_proposals))
        params = out.params[sampled.frame, sampled.location]
        # Eq. 4 (frame t) and Eq. 5 (frame t+δ): each instance's filters on its own frame
        masks = self.mask_head.predict(params, mask_feats, sampled.frame, sampled.points, sampled.levels)

        # per_frame: one group per position in the pair (frames b·k + i); single images (k = 1): one group
        groups = tuple(slice(i, None, k) for i in range(k)) if self.loss_normalizer == "per_frame" else (slice(None),)
        frame_ids = torch.arange(len(frames), device=images.device)
        losses: dict[str, Tensor] = {}
        for group in groups:
            part = detection_losses(
                _frames(out, group),
                locations,
                labels[group],
                reg_targets[group],
                cfg.fcos.focal_alpha,
                cfg.fcos.focal_gamma,
                self.box_loss,
            )
            chosen = torch.isin(sampled.frame, frame_ids[group])
            part["loss_mask"] = mean_dice(masks[chosen], gt_masks[sampled.gt_index[chosen]])
            for name, value in part.items():
                losses[name] = losses.get(name, 0) + value / len(groups)
        if cfg.crossover.enabled:
            cross = crossover_loss(self.mask_head, params, sampled, positives, mask_feats, gt_masks)
            losses["loss_cross"] = cfg.crossover.weight * cross
        else:
            losses["loss_cross"] = masks.new_zeros(())
        if self.identity_loss is not None:
            with_id = torch.tensor([bool(t.get("identity_loss", True)) for t in frames], device=images.device)
            id_pos = positives.subset(with_id[positives.frame])
            losses["loss_id"] = self.identity_loss(embeddings[id_pos.frame, id_pos.location], id_pos)
        return losses  # Eq. 15: the caller sums them

    @torch.no_grad()
    @with_inference_precision
    def forward_infer(self, image: Tensor, orig_size: tuple[int, int]) -> dict[str, Tensor]:
        """Detections of one frame ``image (3, h, w)`` 0..255 (already resized), returned in ``orig_size`` pixels.

        Call in eval mode. :meth:`forward_frame` (the network, what ``crossvis.export`` writes as ONNX)
        then :func:`finish_frame` (the Python post-processing every runtime shares). Follows
        ``CondInst.postprocess``. Crossover plays no part here. Precision and layout follow
        ``inference.precision`` / ``inference.channels_last``.
        """
        cfg = self.cfg.inference
        raw = self.forward_frame(image)
        return finish_frame(raw, tuple(image.shape[-2:]), orig_size, self.upsample_mode, cfg.mask_threshold)

    def forward_frame(self, image: Tensor) -> dict[str, Tensor]:
        """The per-frame network: ``image (3, h, w)`` 0..255 → :data:`FRAME_OUTPUTS` at the input's scale.

        Normalisation and padding, backbone, FPN, heads, detection selection and class-aware NMS,
        dynamic mask head. Boxes are unclipped, masks are probabilities at stride 4 of the padded
        input; everything is traceable with dynamic h, w (no Python value depends on the data), so
        ``torch.onnx.export`` records one graph for every frame size.
        """
        cfg = self.cfg.inference
        sizes = shape_as_tensor(image)[1:][None]  # a traced shape, not a constant
        locations, out, mask_feats, embeddings = self._dense(pad_to_multiple(image[None], SIZE_DIVISOR), sizes)
        det = select_detections(
            out.cls_logits[0],
            out.box_reg[0],
            out.ctr_logits[0],
            locations,
            cfg.score_threshold,
            cfg.pre_nms_topk,
            cfg.nms_threshold,
            cfg.max_detections,
        )
        loc = det["location"]
        frame = torch.zeros_like(loc)
        points, levels = locations.points[loc], locations.levels[loc]
        raw = {
            "boxes": det["boxes"],
            "scores": det["scores"],
            "labels": det["labels"],
            "mask_probs": self.mask_head.predict(out.params[0, loc], mask_feats, frame, points, levels),
        }
        if embeddings is not None:
            raw["embeddings"] = embeddings[0, loc]  # unnormalised: MaskTrack scoring needs raw dot products
        return raw

    def load_init(self, path: str | Path, strict: bool | None = None) -> tuple[list[str], list[str]]:
        """Initialise from any checkpoint :mod:`crossvis.modeling.released_weights` reads (``model.init_from``).

        Every model tensor must find a same-shape counterpart, except the expected re-inits (class
        logits when the class count differs, identity proxies when M differs, the embedding branch
        from a CondInst file), and every file tensor of the key table must find its place.
        Otherwise a :class:`CheckpointError` lists the keys; with ``strict``
        false (default: ``model.init_strict``) that becomes a warning. A detectron2-format file needs
        the detectron2 backbone (``model/backbone=resnet50_d2`` or ``resnet101_d2``).
        Returns (re-initialised keys, file keys left unused).
        """
        strict = bool(self.cfg.get("init_strict", True)) if strict is None else strict
        if not Path(path).expanduser().is_file():
            raise ArgumentError("init_from", f": no such file {path}")
        source = read_weights(path)
        backbone = self.cfg.backbone
        d2 = bool(backbone.get("stride_in_1x1", False))
        if source.is_detectron2 and (not d2 or f"{backbone.name}_d2" != backbone_for(source)):
            raise CheckpointError(
                source.path,
                f"is a detectron2/AdelaiDet {source.origin} checkpoint for {backbone_for(source)} (MSRA ResNet: BGR "
                f"input, stride in the 1x1 conv) but the model has model.backbone.name={backbone.name}, "
                f"stride_in_1x1={str(d2).lower()}; use model/backbone={backbone_for(source)}",
            )
        target = self.state_dict()
        plan = plan_init(source, target)
        if not plan.complete:
            error = mismatch_error(plan, source, target, " (init_strict=false to proceed)")
            if strict:
                raise error
            warnings.warn(str(error), stacklevel=2)
        self.load_state_dict(plan.loaded, strict=False)
        return list(plan.reinitialised) + plan.unmatched, plan.unused
