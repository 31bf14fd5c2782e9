"""Binary masks → compressed COCO RLE (the official results format), without full-frame copies."""

from __future__ import annotations

from typing import Any, Iterable

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
