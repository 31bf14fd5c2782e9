"""The composed CrossVIS model: training losses on frame pairs (Eq. 15) and per-frame online inference."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from crossvis.modeling.backbone import FPN_STRIDES, BackboneFPN, pad_to_multiple
from crossvis.modeling.condinst import (
    DynamicMaskHead,
    MaskBranch,
    gt_masks_at_stride4,
    mean_dice,
    sample_per_group,
    upsample_aligned,
)
from crossvis.modeling.crossover import crossover_loss
from crossvis.modeling.embedding import EmbeddingHead, IdentityLoss
from crossvis.modeling.fcos import (
    FCOSHead,
    HeadOutputs,
    PyramidLocations,
    build_targets,
    detection_losses,
    pyramid_locations,
    select_detections,
)

SIZE_DIVISOR = 32


class CrossVIS(nn.Module):
    """CondInst (FCOS + dynamic mask head) with crossover learning and global balanced embeddings."""

    def __init__(self, cfg_model: DictConfig, num_classes: int, num_identities: int) -> None:
        super().__init__()
        cfg = cfg_model
        self.cfg = cfg
        self.num_classes = num_classes
        self.features = BackboneFPN(cfg.backbone, cfg.fpn_channels, cfg.feature_grad_scale)
        self.mask_head = DynamicMaskHead(
            cfg.mask_branch.out_channels, cfg.dynamic_head.channels, cfg.dynamic_head.num_layers, list(cfg.mask.soi)
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
            cfg.fpn_channels, cfg.mask_branch.channels, cfg.mask_branch.num_convs, cfg.mask_branch.out_channels
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
            )

    def _dense(self, images: Tensor) -> tuple[PyramidLocations, HeadOutputs, Tensor, Tensor | None]:
        """Everything computed at every location of ``images [N, 3, H, W]`` (H, W multiples of 32)."""
        feats = self.features(images)
        locations = pyramid_locations([tuple(f.shape[-2:]) for f in feats], list(FPN_STRIDES), images.device)
        embeddings = self.embedding(feats) if self.embedding is not None else None
        return locations, self.head(feats), self.mask_branch(feats), embeddings

    def forward_train(
        self, images: Tensor, image_sizes: Tensor, targets: list[list[dict[str, Tensor]]]
    ) -> dict[str, Tensor]:
        """Losses of a batch of frame pairs (index 0 = key frame t, 1 = reference frame t+δ).

        Both frames go through the network as one batch of 2B; each loss is computed over all 2B
        frames with one normaliser (= the per-frame losses averaged over the pair). Padding is
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
                "forward_train: single images train CondInst only: set model.crossover.enabled=false and "
                "model.embedding.enabled=false (experiment=coco_condinst does), or train on pairs"
            )
        cfg = self.cfg
        frames = [t for pair in targets for t in pair]  # frame 2b = key, 2b+1 = reference
        locations, out, mask_feats, embeddings = self._dense(images.flatten(0, 1))
        labels, reg_targets, positives = build_targets(
            locations, frames, self.num_classes, list(cfg.fcos.sizes_of_interest), cfg.fcos.center_sampling_radius
        )
        losses = detection_losses(out, locations, labels, reg_targets, cfg.fcos.focal_alpha, cfg.fcos.focal_gamma)

        gt_masks = gt_masks_at_stride4(torch.cat([t["masks"] for t in frames]))
        sampled = positives.subset(sample_per_group(positives.frame, cfg.mask.max_proposals))
        params = out.params[sampled.frame, sampled.location]
        # Eq. 4 (frame t) and Eq. 5 (frame t+δ): each instance's filters on its own frame
        masks = self.mask_head.predict(params, mask_feats, sampled.frame, sampled.points, sampled.levels)
        losses["loss_mask"] = mean_dice(masks, gt_masks[sampled.gt_index])
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
    def forward_infer(self, image: Tensor, orig_size: tuple[int, int]) -> dict[str, Tensor]:
        """Detections of one frame ``image (3, h, w)`` 0..255 (already resized), returned in ``orig_size`` pixels.

        Call in eval mode. Masks: dynamic head at stride 4 → input resolution → crop the padding →
        bilinear resize to (H0, W0) → threshold. Crossover plays no part here.
        """
        cfg = self.cfg.inference
        h, w = image.shape[-2:]
        orig_h, orig_w = int(orig_size[0]), int(orig_size[1])
        locations, out, mask_feats, embeddings = self._dense(pad_to_multiple(image[None], SIZE_DIVISOR))
        det = select_detections(
            out.cls_logits[0],
            out.box_reg[0],
            out.ctr_logits[0],
            locations,
            (h, w),
            cfg.score_threshold,
            cfg.pre_nms_topk,
            cfg.nms_threshold,
            cfg.max_detections,
        )
        loc = det["location"]
        frame = torch.zeros_like(loc)
        points, levels = locations.points[loc], locations.levels[loc]
        masks = self.mask_head.predict(out.params[0, loc], mask_feats, frame, points, levels)
        masks = upsample_aligned(masks[:, None], 4)[..., :h, :w]
        masks = F.interpolate(masks, size=(orig_h, orig_w), mode="bilinear", align_corners=False)[:, 0]
        scale = det["boxes"].new_tensor([orig_w / w, orig_h / h, orig_w / w, orig_h / h])
        detections = {
            "boxes": det["boxes"] * scale,
            "labels": det["labels"],
            "scores": det["scores"],
            "masks": masks > cfg.mask_threshold,
        }
        if embeddings is not None:
            detections["embeddings"] = F.normalize(embeddings[0, loc], dim=1)
        return detections

    def load_init(self, path: str | Path) -> tuple[list[str], list[str]]:
        """Initialise from a state dict or a Lightning checkpoint (``state_dict`` with ``model.`` keys).

        Tensors whose shape differs from this model's (e.g. another number of classes or
        identities) are skipped and reported as missing. Returns (missing, unexpected) keys.
        """
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"model.init_from: no such file {path}")
        # Lightning checkpoints pickle hyper-parameters, so this trusted local file is fully unpickled.
        state = torch.load(path, map_location="cpu", weights_only=False)
        state = state.get("state_dict", state)
        if any(k.startswith("model.") for k in state):
            state = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
        own = self.state_dict()
        state = {k: v for k, v in state.items() if k not in own or own[k].shape == v.shape}
        missing, unexpected = self.load_state_dict(state, strict=False)
        return list(missing), list(unexpected)
