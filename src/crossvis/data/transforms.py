"""Frame loading, resizing and the pair augmentation.

Training and inference resize with detectron2's ``ResizeTransform`` kernels (:func:`resize_sample`:
Pillow BILINEAR for images, Pillow NEAREST for masks); training then flips. Both frames of a
training pair share the scale and one albumentations flip call (the reference frame is an
additional target), so they are always geometrically consistent: the crossover loss applies
filters from one frame to the other frame's features. Boxes are transformed with the image (scaled,
then flipped and clipped as albumentations ``pascal_voc`` boxes): the json
``bboxes`` where the reader found them, as the public code does, else the mask's box in the same
convention (x2 = x + w, one past the last covered pixel).

Multi-scale training (``multiscale=True``) is SipMask-VIS's ``img_scale=[(649, 360), (960, 480)]``
through mmdetection v1's ``random_scale(img_scales, mode='range')``: the long side is uniform over
the integers between the scales' long sides and the short side uniform over the integers between
their short sides, drawn independently, then a keep-ratio resize; one draw per pair.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass

import albumentations as A
import numpy as np
import torch
from PIL import Image
from torchvision.ops import masks_to_boxes

from crossvis.errors import InputFormatError, InputNotFoundError

# SipMask-VIS multi-scale training ("Aug." in Table 1): the (long, short) ends of the scale range.
DEFAULT_MULTISCALE = ((649, 360), (960, 480))


def resize_scale(h: int, w: int, short: int, max_size: int) -> float:
    """Scale that brings the short side to ``short`` unless the long side would exceed ``max_size``."""
    return min(short / min(h, w), max_size / max(h, w))


def resized_shape(h: int, w: int, short: int, max_size: int) -> tuple[int, int]:
    """(h, w) after detectron2's ``ResizeShortestEdge``: the scale of :func:`resize_scale`, the short
    side set to ``short`` exactly, sides rounded half up (``int(x + 0.5)``, not Python's half-to-even)."""
    scale = short / min(h, w)
    new_h, new_w = (float(short), scale * w) if h < w else (scale * h, float(short))
    if max(new_h, new_w) > max_size:
        shrink = max_size / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return max(1, int(new_h + 0.5)), max(1, int(new_w + 0.5))


def load_frame_rgb(
    path: str | os.PathLike, expected_size: tuple[int, int] | None = None, where: str = ""
) -> np.ndarray:
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
    except (
        OSError,
        SyntaxError,
        ValueError,
    ) as error:  # Pillow's decoding errors (UnidentifiedImageError is an OSError)
        raise InputFormatError(
            f"{path}: cannot decode the frame ({error}); expected a complete JPEG/PNG image"
        ) from None
    if expected_size is not None and rgb.shape[:2] != tuple(expected_size):
        raise InputFormatError(
            f"{where}: expected the frame size {expected_size[0]}x{expected_size[1]}, "
            f"but {path} is {rgb.shape[0]}x{rgb.shape[1]}"
        )
    return rgb


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) → (h, w, 3) as detectron2's ``ResizeTransform.apply_image``: Pillow BILINEAR.

    When shrinking, Pillow averages over the whole footprint (antialiasing), which ``cv2.INTER_LINEAR``
    does not; on a real frame that difference moves about 10 of 100 detections.
    """
    h, w = size
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def resize_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """bool (N, H, W) → (N, h, w) as detectron2's ``apply_segmentation``: Pillow NEAREST per mask."""
    h, w = size
    out = [np.asarray(Image.fromarray(m.astype(np.uint8)).resize((w, h), Image.NEAREST)) for m in masks]
    return np.stack(out).astype(bool) if out else np.zeros((0, h, w), bool)


def resize_sample(sample: FrameSample, size: tuple[int, int]) -> FrameSample:
    """A frame and its instances at ``size`` (h, w): image, masks, and boxes scaled per axis (``apply_box``)."""
    h, w = size
    scale = np.array([w / sample.image.shape[1], h / sample.image.shape[0]] * 2)
    boxes = (sample.boxes * scale).astype(np.float32)
    return FrameSample(
        resize_image(sample.image, size), resize_masks(sample.masks, size), sample.labels, sample.identities, boxes
    )


def preprocess_for_inference(image_rgb: np.ndarray, short: int, max_size: int) -> torch.Tensor:
    """detectron2's test-time ``ResizeShortestEdge`` (:func:`resize_image`) → float32 (3, h, w) RGB in 0..255, unpadded."""
    resized = resize_image(image_rgb, resized_shape(image_rgb.shape[0], image_rgb.shape[1], short, max_size))
    return torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))).float()


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """xyxy float32 boxes of bool masks (N, H, W) in the json convention: x2 = x + w (last pixel + 1)."""
    if not len(masks):
        return np.zeros((0, 4), np.float32)
    boxes = masks_to_boxes(torch.from_numpy(masks)).numpy()
    return (boxes + np.array([0, 0, 1, 1], np.float32)).astype(np.float32)


@dataclass
class FrameSample:
    """One frame with its instances (masks aligned with labels, identities and boxes)."""

    image: np.ndarray  # uint8 (H, W, 3) RGB
    masks: np.ndarray  # bool (N, H, W)
    labels: np.ndarray  # int64 (N,)
    identities: np.ndarray  # int64 (N,)
    boxes: np.ndarray | None = None  # float32 (N, 4) xyxy, x2 = x + w; None: the masks' boxes

    def __post_init__(self) -> None:
        if self.boxes is None:
            self.boxes = mask_boxes(self.masks)
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)

    def to_target(self) -> dict[str, torch.Tensor]:
        """Tensors of the training target (boxes xyxy pixels, x2 = x + w)."""
        return {
            "masks": torch.from_numpy(self.masks),
            "boxes": torch.from_numpy(self.boxes).float(),
            "labels": torch.from_numpy(self.labels).long(),
            "identities": torch.from_numpy(self.identities).long(),
        }


@functools.lru_cache(maxsize=4)
def _flip(flip_prob: float) -> A.Compose:
    return A.Compose(
        [A.HorizontalFlip(p=flip_prob)],
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["box_index"], clip=True),
        additional_targets={"image1": "image"},
    )


def scale_range(scales: Sequence[Sequence[int]]) -> tuple[tuple[int, int], tuple[int, int]]:
    """(long_min, long_max), (short_min, short_max) of mmdetection v1's ``random_scale`` 'range' mode."""
    if len(scales) < 2 or any(len(s) != 2 for s in scales):
        raise ValueError(f"data.transform.scales: expected at least two [long, short] pairs, got {scales!r}")
    longs, shorts = [max(int(a), int(b)) for a, b in scales], [min(int(a), int(b)) for a, b in scales]
    return (min(longs), max(longs)), (min(shorts), max(shorts))


class PairTransform:
    """Resize (optionally multi-scale), then flip a (key, reference) pair identically."""

    def __init__(
        self,
        short: int = 360,
        max_size: int = 640,
        flip_prob: float = 0.5,
        multiscale: bool = False,
        scales: Sequence[Sequence[int]] = DEFAULT_MULTISCALE,
    ) -> None:
        self.flip_prob = float(flip_prob)
        # Inclusive (low, high) ranges of the long and the short side; single scale: one value each.
        self.long_range, self.short_range = (
            scale_range(scales) if multiscale else ((int(max_size),) * 2, (int(short),) * 2)
        )

    def draw_scale(self, rng: np.random.Generator) -> tuple[int, int]:
        """(long, short) target of one pair: each side uniform over its integer range, independently."""
        return (
            int(rng.integers(self.long_range[0], self.long_range[1] + 1)),
            int(rng.integers(self.short_range[0], self.short_range[1] + 1)),
        )

    def __call__(self, key: FrameSample, ref: FrameSample, rng: np.random.Generator) -> tuple[FrameSample, FrameSample]:
        if key.image.shape != ref.image.shape:
            raise ValueError(f"pair frames differ in size: {key.image.shape} vs {ref.image.shape}")
        long_side, short_side = self.draw_scale(rng)
        h, w = resized_shape(key.image.shape[0], key.image.shape[1], short_side, long_side)
        key, ref = resize_sample(key, (h, w)), resize_sample(ref, (h, w))
        pipeline = _flip(self.flip_prob)
        pipeline.set_random_seed(int(rng.integers(2**31)))
        n_key, n_all = len(key.masks), len(key.masks) + len(ref.masks)
        inputs = {
            "image": key.image,
            "image1": ref.image,
            "bboxes": np.concatenate([key.boxes, ref.boxes]),
            "box_index": np.arange(n_all),
        }
        if n_all:  # albumentations rejects an empty mask stack
            inputs["masks"] = np.concatenate([key.masks, ref.masks]).astype(np.uint8)
        out = pipeline(**inputs)
        masks = np.asarray(out["masks"], dtype=bool) if n_all else np.zeros((0, h, w), bool)
        # Boxes clipped to nothing are filtered by albumentations: NaN rows drop their instance.
        boxes = np.full((n_all, 4), np.nan, np.float32)
        boxes[np.asarray(out["box_index"], dtype=np.int64)] = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
        return (
            _drop_empty(out["image"], masks[:n_key], boxes[:n_key], key),
            _drop_empty(out["image1"], masks[n_key:], boxes[n_key:], ref),
        )


def _drop_empty(image: np.ndarray, masks: np.ndarray, boxes: np.ndarray, source: FrameSample) -> FrameSample:
    """Instances whose mask or box vanished (e.g. resized below one pixel) are not targets in this frame."""
    keep = masks.any(axis=(1, 2)) & ~np.isnan(boxes).any(axis=1)
    return FrameSample(image, masks[keep], source.labels[keep], source.identities[keep], boxes[keep])
