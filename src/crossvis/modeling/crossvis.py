"""The composed CrossVIS model: training losses on frame pairs (Eq. 15) and per-frame online inference."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn
from torch.onnx.operators import shape_as_tensor

from crossvis.errors import argument_prefix
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
from crossvis.modeling.fcos import FCOSHead, build_targets, detection_losses, postprocess_boxes, select_detections
from crossvis.modeling.layers import upsample
from crossvis.modeling.paste import paste_masks
from crossvis.modeling.specs import CrossVISSpec, PostProcessing
from crossvis.modeling.types import HeadOutputs, PyramidLocations, pyramid_locations

SIZE_DIVISOR = 32


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

    def __init__(self, spec: CrossVISSpec, num_classes: int, num_identities: int) -> None:
        super().__init__()
        self.spec = spec
        self.num_classes = num_classes
        self.upsample_mode = spec.upsample
        with argument_prefix("backbone"):
            self.features = BackboneFPN(spec.backbone, spec.fpn_channels, spec.feature_grad_scale)
        self.mask_head = DynamicMaskHead(
            spec.mask_branch.out_channels,
            spec.dynamic_head.channels,
            spec.dynamic_head.num_layers,
            list(spec.mask.soi),
            spec.upsample,
        )
        self.head = FCOSHead(
            spec.fpn_channels,
            spec.head.channels,
            spec.head.num_convs,
            num_classes,
            self.mask_head.num_params,
            list(FPN_STRIDES),
            spec.head.prior_prob,
        )
        self.mask_branch = MaskBranch(
            spec.fpn_channels,
            spec.mask_branch.channels,
            spec.mask_branch.num_convs,
            spec.mask_branch.out_channels,
            spec.upsample,
        )
        # model.embedding.enabled=false (the CondInst COCO stage): no embedding tower, proxies or L_id,
        # so the state dict is the video model's minus the ``embedding.*`` / ``identity_loss.*`` keys.
        self.embedding: EmbeddingHead | None = None
        self.identity_loss: IdentityLoss | None = None
        embedding = spec.embedding
        if embedding.enabled:
            self.embedding = EmbeddingHead(spec.fpn_channels, spec.head.channels, spec.head.num_convs, embedding.dim)
            self.identity_loss = IdentityLoss(
                embedding.type,
                embedding.loss,
                embedding.dim,
                num_identities,
                spec.fcos.focal_alpha,
                spec.fcos.focal_gamma,
                embedding.normalizer,
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
        if self.spec.bn_batches == "joint" or images.shape[1] == 1:
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
        if k == 1 and (self.spec.crossover.enabled or self.identity_loss is not None):
            raise ValueError(
                "forward_train: single images train CondInst only: the model needs crossover.enabled=false and "
                "embedding.enabled=false, or pairs of frames"
            )
        spec = self.spec
        frames = [t for pair in targets for t in pair]  # frame 2b = key, 2b+1 = reference
        locations, out, mask_feats, embeddings = self._dense_frames(images, image_sizes)
        labels, reg_targets, positives = build_targets(
            locations, frames, self.num_classes, list(spec.fcos.sizes_of_interest), spec.fcos.center_sampling_radius
        )
        gt_masks = gt_masks_at_stride4(torch.cat([t["masks"] for t in frames]))
        sampled = positives.subset(sample_per_group(positives.frame, spec.mask.max_proposals))
        params = out.params[sampled.frame, sampled.location]
        # Eq. 4 (frame t) and Eq. 5 (frame t+δ): each instance's filters on its own frame
        masks = self.mask_head.predict(params, mask_feats, sampled.frame, sampled.points, sampled.levels)

        # per_frame: one group per position in the pair (frames b·k + i); single images (k = 1): one group
        groups = tuple(slice(i, None, k) for i in range(k)) if spec.loss_normalizer == "per_frame" else (slice(None),)
        frame_ids = torch.arange(len(frames), device=images.device)
        losses: dict[str, Tensor] = {}
        for group in groups:
            part = detection_losses(
                _frames(out, group),
                locations,
                labels[group],
                reg_targets[group],
                spec.fcos.focal_alpha,
                spec.fcos.focal_gamma,
                spec.fcos.box_loss,
            )
            chosen = torch.isin(sampled.frame, frame_ids[group])
            part["loss_mask"] = mean_dice(masks[chosen], gt_masks[sampled.gt_index[chosen]])
            for name, value in part.items():
                losses[name] = losses.get(name, 0) + value / len(groups)
        if spec.crossover.enabled:
            cross = crossover_loss(self.mask_head, params, sampled, positives, mask_feats, gt_masks)
            losses["loss_cross"] = spec.crossover.weight * cross
        else:
            losses["loss_cross"] = masks.new_zeros(())
        if self.identity_loss is not None:
            with_id = torch.tensor([bool(t.get("identity_loss", True)) for t in frames], device=images.device)
            id_pos = positives.subset(with_id[positives.frame])
            losses["loss_id"] = self.identity_loss(embeddings[id_pos.frame, id_pos.location], id_pos)
        return losses  # Eq. 15: the caller sums them

    @torch.no_grad()
    def forward_infer(self, image: Tensor, orig_size: tuple[int, int], post: PostProcessing) -> dict[str, Tensor]:
        """Detections of one frame ``image (3, h, w)`` 0..255 (already resized), returned in ``orig_size`` pixels.

        Call in eval mode. :meth:`forward_frame` (the network, what ``crossvis.cli.export`` writes as ONNX)
        then :func:`finish_frame` (the Python post-processing every runtime shares). Follows
        ``CondInst.postprocess`` with the settings ``post``. Crossover plays no part here. Precision and
        layout are the caller's (:mod:`crossvis.engine.runtime`).
        """
        raw = self.forward_frame(image, post)
        return finish_frame(raw, tuple(image.shape[-2:]), orig_size, self.upsample_mode, post.mask_threshold)

    def forward_frame(self, image: Tensor, post: PostProcessing) -> dict[str, Tensor]:
        """The per-frame network: ``image (3, h, w)`` 0..255 → :data:`FRAME_OUTPUTS` at the input's scale.

        Normalisation and padding, backbone, FPN, heads, detection selection and class-aware NMS,
        dynamic mask head. Boxes are unclipped, masks are probabilities at stride 4 of the padded
        input; everything is traceable with dynamic h, w (no Python value depends on the data), so
        ``torch.onnx.export`` records one graph for every frame size.
        """
        sizes = shape_as_tensor(image)[1:][None]  # a traced shape, not a constant
        locations, out, mask_feats, embeddings = self._dense(pad_to_multiple(image[None], SIZE_DIVISOR), sizes)
        det = select_detections(
            out.cls_logits[0],
            out.box_reg[0],
            out.ctr_logits[0],
            locations,
            post.score_threshold,
            post.pre_nms_topk,
            post.nms_threshold,
            post.max_detections,
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
