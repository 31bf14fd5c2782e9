"""Training items from still images: one view (the CondInst COCO stage) or a pseudo-video pair.

A pseudo-pair is two views of one image: the image is resized (short side drawn from
``shorts``, long side at most ``max_size``, detectron2's ``ResizeShortestEdge`` "choice", with its
kernels: ``transforms.resize_sample``) and flipped once, then each view is scaled by U(1−scale, 1+scale) and shifted by U(−shift, shift)
of the image size on a canvas of the resized size, so what leaves the canvas is cropped
(albumentations ``Affine``; uncovered pixels are 0). Instances keep their identity in both
views, so crossover (Eq. 6–7) and the pair-wise embedding (Eq. 9–10) see an instance "move"
between the two frames, as IDOL / MinVIS-style joint training does. An instance cropped out of
one view is a target of the other view only.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from crossvis.data.coco import COCODataset
from crossvis.data.transforms import FrameSample, _drop_empty, mask_boxes, resize_sample, resized_shape


@functools.lru_cache(maxsize=4)
def _flip(flip_prob: float) -> A.Compose:
    return A.Compose([A.HorizontalFlip(p=flip_prob)])


@functools.lru_cache(maxsize=8)
def _jitter(scale: float, shift: float) -> A.Compose:
    return A.Compose(
        [
            A.Affine(
                scale=(1.0 - scale, 1.0 + scale),
                translate_percent=(-shift, shift),
                keep_ratio=True,
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
                p=1.0,
            )
        ]
    )


def _apply(pipeline: A.Compose, sample: FrameSample, rng: np.random.Generator) -> FrameSample:
    """Run ``pipeline`` (seeded from ``rng``) on the image and its masks; vanished instances are dropped."""
    pipeline.set_random_seed(int(rng.integers(2**31)))
    inputs = {"image": sample.image}
    if len(sample.masks):  # albumentations rejects an empty mask stack
        inputs["masks"] = sample.masks.astype(np.uint8)
    out = pipeline(**inputs)
    h, w = out["image"].shape[:2]
    masks = np.asarray(out["masks"], dtype=bool) if len(sample.masks) else np.zeros((0, h, w), bool)
    boxes = np.full((len(masks), 4), np.nan, np.float32)
    nonempty = masks.any(axis=(1, 2))
    boxes[nonempty] = mask_boxes(masks[nonempty])  # scaled, shifted and cropped: the visible part's box
    return _drop_empty(out["image"], masks, boxes, sample)


class StillTransform:
    """Resize + flip an image; with ``views=2`` return two independently scaled and shifted views."""

    def __init__(
        self,
        shorts: Sequence[int],
        max_size: int,
        flip_prob: float = 0.5,
        views: int = 1,
        scale: float = 0.0,
        shift: float = 0.0,
    ) -> None:
        if views not in (1, 2):
            raise ValueError(f"views: expected 1 (single images) or 2 (pseudo-pairs), got {views}")
        if not (0 <= scale < 1 and 0 <= shift < 1):
            raise ValueError(
                f"pseudo_pairs: expected 0 <= scale < 1 and 0 <= shift < 1, got scale={scale}, shift={shift}"
            )
        self.shorts = [int(s) for s in shorts]
        self.max_size = int(max_size)
        self.flip_prob = float(flip_prob)
        self.views, self.scale, self.shift = views, float(scale), float(shift)

    def __call__(self, sample: FrameSample, rng: np.random.Generator) -> list[FrameSample]:
        short = self.shorts[int(rng.integers(len(self.shorts)))]
        h, w = resized_shape(sample.image.shape[0], sample.image.shape[1], short, self.max_size)
        base = _apply(_flip(self.flip_prob), resize_sample(sample, (h, w)), rng)
        if self.views == 1:
            return [base]
        return [_apply(_jitter(self.scale, self.shift), base, rng) for _ in range(self.views)]


class StillImageDataset(Dataset):
    """One item per training image (one with a non-crowd instance), batched by ``collate_pairs``.

    Items: ``images`` uint8 [V, 3, h, w] (V = 1 image or 2 views), ``targets`` (one dict per view;
    with ``identity_loss=False`` each carries ``identity_loss: False`` so L_id skips it) and
    ``meta = {"image_id", "source": "coco"}``. Randomness is seeded by (seed, epoch, index).
    """

    def __init__(self, coco: COCODataset, transform: StillTransform, seed: int = 0, identity_loss: bool = True) -> None:
        self.coco = coco
        self.images = coco.training_images()
        self.transform = transform
        self.seed = int(seed)
        self.identity_loss = identity_loss
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        index, epoch = item if isinstance(item, tuple) else (item, self.epoch)
        image = self.images[index]
        views = self.transform(image.sample(), np.random.default_rng((self.seed, epoch, index)))
        targets = [view.to_target() for view in views]
        if not self.identity_loss:
            targets = [{**t, "identity_loss": False} for t in targets]
        stacked = np.stack([view.image for view in views]).transpose(0, 3, 1, 2)
        return {
            "images": torch.from_numpy(np.ascontiguousarray(stacked)),
            "targets": targets,
            "meta": {"image_id": image.id, "source": "coco"},
        }
