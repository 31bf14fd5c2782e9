"""The segmentation format of the YouTube-VIS / COCO jsons and the official results, in one place.

A frame's segmentation is ``null`` (absent), polygons (lists of x, y), an uncompressed RLE
(``counts`` a list, as in YouTube-VIS train and COCO crowd regions) or a compressed RLE (``counts``
a string, the official results format). :func:`segmentation_problem` validates one (structure and
size, cheaply, at load time), :func:`to_rle` / :func:`decode_segmentation` decode any of them, and
:func:`encode_masks` writes compressed RLEs without full-frame copies. Used by the dataset readers,
the tracker, the results writer and the metric.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from crossvis.timing import stage


def encode_masks(masks: np.ndarray, indices: Iterable[int]) -> list[dict[str, Any]]:
    """RLE (``counts`` as str) of ``masks[i]`` for each i in ``indices``; ``masks`` is bool [K, H, W].

    pycocotools reads a mask column by column from a Fortran-ordered uint8 [H, W, N] array. A
    mask stored column-major (as :func:`crossvis.modeling.paste.paste_masks` writes them) is
    already that array once viewed as uint8, so it is encoded in place; any other layout is
    copied one mask at a time.
    """
    if masks.dtype != np.bool_ or masks.ndim != 3:
        raise ValueError(f"masks: expected bool [K, H, W], got {masks.dtype} {list(masks.shape)}")
    rles = []
    with stage("rle"):
        for i in indices:
            column_major = np.asfortranarray(masks[i].view(np.uint8))  # no copy when already column-major
            rle = mask_utils.encode(column_major[:, :, None])[0]
            rles.append({"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")})
    return rles


def segmentation_problem(
    seg: Any, size: Sequence[int] | None = None, compressed_only: bool = False
) -> tuple[str, str, Any] | None:
    """The first problem with one frame's segmentation as (field suffix, expected, got); None if valid.

    ``size``: the [height, width] an RLE must have (None: any pair of positive ints).
    ``compressed_only``: the official results format, null or ``{"size", "counts": str}`` only.
    Polygons must be non-empty lists of >= 3 (x, y) pairs.
    """
    if seg is None:
        return None
    if isinstance(seg, list) and not compressed_only:
        valid = seg and all(
            isinstance(p, list)
            and len(p) >= 6
            and len(p) % 2 == 0
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p)
            for p in seg
        )
        return None if valid else ("", "polygons: non-empty lists of >= 3 (x, y) pairs", seg)
    if compressed_only and (not isinstance(seg, dict) or set(seg) != {"size", "counts"}):
        return "", "null or a dict with keys 'size' and 'counts'", seg
    if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
        return "", "null, polygons or an RLE dict with 'size' and 'counts'", seg
    got = seg["size"]
    if size is not None and list(got) != list(size):
        return ".size", f"[{size[0]}, {size[1]}] (the frame's height, width)", got
    if size is None and not (
        isinstance(got, (list, tuple))
        and len(got) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in got)
    ):
        return ".size", "[height, width] positive ints", got
    if compressed_only and not isinstance(seg["counts"], str):
        return ".counts", "a compressed RLE string (pycocotools counts decoded to str)", type(seg["counts"]).__name__
    if not isinstance(seg["counts"], (list, str, bytes)):
        return ".counts", "a list (uncompressed) or a string (compressed)", seg["counts"]
    return None


def to_rle(seg: Any, height: int, width: int) -> dict[str, Any] | None:
    """One frame's segmentation (null, polygons, uncompressed or compressed RLE) as compressed RLE (None if absent).

    Raises ValueError when an RLE's size is not (height, width) or uncompressed counts do not cover it.
    """
    if not seg:
        return None
    if isinstance(seg, list):  # polygons: one object may have several parts
        return mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
        raise ValueError(f"expected a polygon list or an RLE dict with 'size' and 'counts', got {type(seg).__name__}")
    if list(seg["size"]) != [height, width]:
        raise ValueError(f"RLE size {seg['size']} does not match the expected [{height}, {width}]")
    if isinstance(seg["counts"], list):  # uncompressed RLE (YouTube-VIS train, COCO crowd regions)
        if sum(seg["counts"]) != height * width:
            raise ValueError(
                f"uncompressed RLE counts sum to {sum(seg['counts'])}, expected height*width = {height * width}"
            )
        return mask_utils.frPyObjects(seg, height, width)
    return {"size": [height, width], "counts": seg["counts"]}


def decode_segmentation(seg: list | dict, height: int, width: int) -> np.ndarray:
    """One frame's segmentation (any encoding, not null) as a bool [height, width] mask."""
    rle = to_rle(seg, height, width)
    if rle is None:
        raise ValueError("expected a polygon list or an RLE dict with 'size' and 'counts', got an empty segmentation")
    return mask_utils.decode(rle).astype(bool)
