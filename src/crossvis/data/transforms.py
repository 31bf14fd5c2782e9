"""Frame loading, resizing and the pair augmentation.

Both frames of a training pair go through one albumentations call (the reference frame is an
additional target), so they always share the scale and the flip: the crossover loss applies
filters from one frame to the other frame's features and needs the two frames to be geometrically
consistent. Boxes are recomputed from the augmented masks, so they can never disagree with them.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np
import torch
from PIL import Image
from torchvision.ops import masks_to_boxes

from crossvis.errors import InputFormatError, InputNotFoundError

# SipMask-VIS multi-scale training ("Aug." in Table 1): (long, short) scales chosen per pair.
DEFAULT_MULTISCALE = ((649, 360), (960, 480))


def resize_scale(h: int, w: int, short: int, max_size: int) -> float:
    """Scale that brings the short side to ``short`` unless the long side would exceed ``max_size``."""
    return min(short / min(h, w), max_size / max(h, w))


def resized_shape(h: int, w: int, short: int, max_size: int) -> tuple[int, int]:
    s = resize_scale(h, w, short, max_size)
    return max(1, round(h * s)), max(1, round(w * s))


def load_frame_rgb(path: str | os.PathLike, expected_size: tuple[int, int] | None = None, where: str = "") -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3), strictly.

    A truncated or corrupt file raises (OpenCV would decode a truncated JPEG partially, with only
    a warning), and so does a frame whose (height, width) differs from ``expected_size`` (``where``
    names the annotation field that gives it). Pixels come in stored order: no EXIF rotation, like
    the annotation masks.
    """
    try:
        with Image.open(path) as image:
            image.load()  # decodes everything; Pillow raises "image file is truncated" on missing data
            rgb = np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise InputNotFoundError(f"{path}: frame file does not exist") from None
    except (OSError, SyntaxError, ValueError) as error:  # Pillow's decoding errors (UnidentifiedImageError is an OSError)
        raise InputFormatError(f"{path}: cannot decode the frame ({error}); expected a complete JPEG/PNG image") from None
    if expected_size is not None and rgb.shape[:2] != tuple(expected_size):
        raise InputFormatError(
            f"{where}: expected the frame size {expected_size[0]}x{expected_size[1]}, "
            f"but {path} is {rgb.shape[0]}x{rgb.shape[1]}"
        )
    return rgb


def preprocess_for_inference(image_rgb: np.ndarray, short: int, max_size: int) -> torch.Tensor:
    """Resize like training (bilinear) and return float32 (3, h, w) RGB in 0..255, unpadded."""
    h, w = resized_shape(image_rgb.shape[0], image_rgb.shape[1], short, max_size)
    resized = cv2.resize(image_rgb, (w, h), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))).float()


@dataclass
class FrameSample:
    """One frame with its instances (masks aligned with labels and identities)."""

    image: np.ndarray  # uint8 (H, W, 3) RGB
    masks: np.ndarray  # bool (N, H, W)
    labels: np.ndarray  # int64 (N,)
    identities: np.ndarray  # int64 (N,)

    def to_target(self) -> dict[str, torch.Tensor]:
        """Tensors of the training target; boxes come from the masks (xyxy, torchvision convention)."""
        masks = torch.from_numpy(self.masks)
        return {
            "masks": masks,
            "boxes": masks_to_boxes(masks).float() if len(masks) else torch.zeros(0, 4),
            "labels": torch.from_numpy(self.labels).long(),
            "identities": torch.from_numpy(self.identities).long(),
        }


@functools.lru_cache(maxsize=64)
def _pipeline(height: int, width: int, flip_prob: float) -> A.Compose:
    # Built per output size: the size depends on the video and the chosen scale, and the few
    # distinct (video size, scale) combinations make caching cheap.
    return A.Compose(
        [A.Resize(height, width, interpolation=cv2.INTER_LINEAR), A.HorizontalFlip(p=flip_prob)],
        additional_targets={"image1": "image"},
    )


class PairTransform:
    """Resize (optionally multi-scale) and flip a (key, reference) pair identically."""

    def __init__(
        self,
        short: int = 360,
        max_size: int = 640,
        flip_prob: float = 0.5,
        multiscale: bool = False,
        scales: Sequence[Sequence[int]] = DEFAULT_MULTISCALE,
    ) -> None:
        self.flip_prob = float(flip_prob)
        # (long, short) candidates; single-scale training is the one candidate (max_size, short).
        self.scales = [(int(lo), int(sh)) for lo, sh in scales] if multiscale else [(int(max_size), int(short))]

    def __call__(self, key: FrameSample, ref: FrameSample, rng: np.random.Generator) -> tuple[FrameSample, FrameSample]:
        if key.image.shape != ref.image.shape:
            raise ValueError(f"pair frames differ in size: {key.image.shape} vs {ref.image.shape}")
        long_side, short_side = self.scales[int(rng.integers(len(self.scales)))]
        h, w = resized_shape(key.image.shape[0], key.image.shape[1], short_side, long_side)
        pipeline = _pipeline(h, w, self.flip_prob)
        pipeline.set_random_seed(int(rng.integers(2**31)))
        inputs = {"image": key.image, "image1": ref.image}
        n_key = len(key.masks)
        all_masks = np.concatenate([key.masks, ref.masks]).astype(np.uint8)
        if len(all_masks):  # albumentations rejects an empty mask stack
            inputs["masks"] = all_masks
        out = pipeline(**inputs)
        masks = np.asarray(out["masks"], dtype=bool) if len(all_masks) else np.zeros((0, h, w), bool)
        return (
            _drop_empty(out["image"], masks[:n_key], key),
            _drop_empty(out["image1"], masks[n_key:], ref),
        )


def _drop_empty(image: np.ndarray, masks: np.ndarray, source: FrameSample) -> FrameSample:
    """Instances whose mask vanished (e.g. resized below one pixel) are not targets in this frame."""
    keep = masks.any(axis=(1, 2))
    return FrameSample(image, masks[keep], source.labels[keep], source.identities[keep])
