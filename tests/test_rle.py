"""crossvis.rle: every segmentation encoding decodes to the same mask; the format check names the field."""

from __future__ import annotations

import numpy as np
import pytest

from crossvis.rle import decode_segmentation, encode_masks, segmentation_problem, to_rle

# A 2x2 square at rows 1-2, columns 1-2 of a 4x4 frame. Column-major run lengths (background first):
# col 0: 4 bg, col 1: 1 bg 2 fg 1 bg, col 2: same, col 3: 4 bg → [5, 2, 2, 2, 5].
SQUARE = np.zeros((4, 4), bool)
SQUARE[1:3, 1:3] = True
UNCOMPRESSED = {"size": [4, 4], "counts": [5, 2, 2, 2, 5]}
POLYGON = [[1, 1, 3, 1, 3, 3, 1, 3]]  # pycocotools rasterises the pixel-corner square [1, 3) x [1, 3)


def test_every_encoding_decodes_to_the_same_mask() -> None:
    [compressed] = encode_masks(SQUARE[None], [0])
    assert isinstance(compressed["counts"], str) and compressed["size"] == [4, 4]
    for seg in (UNCOMPRESSED, compressed, POLYGON):
        assert np.array_equal(decode_segmentation(seg, 4, 4), SQUARE), seg
    assert to_rle(None, 4, 4) is None
    assert to_rle(UNCOMPRESSED, 4, 4)["counts"] == compressed["counts"].encode()


def test_decoding_checks_the_size() -> None:
    with pytest.raises(ValueError, match=r"RLE size \[4, 4\] does not match the expected \[4, 5\]"):
        decode_segmentation(UNCOMPRESSED, 4, 5)
    with pytest.raises(ValueError, match="counts sum to 15, expected height\\*width = 16"):
        decode_segmentation({"size": [4, 4], "counts": [5, 2, 2, 2, 4]}, 4, 4)


@pytest.mark.parametrize(
    ("seg", "size", "compressed_only", "problem"),
    [
        (None, (4, 4), False, None),
        (POLYGON, (4, 4), False, None),
        (UNCOMPRESSED, (4, 4), False, None),
        ([[1, 1, 3]], (4, 4), False, ("", "polygons: non-empty lists of >= 3 (x, y) pairs")),
        ({"size": [4, 4]}, (4, 4), False, ("", "null, polygons or an RLE dict with 'size' and 'counts'")),
        ({"size": [5, 4], "counts": "x"}, (4, 4), False, (".size", "[4, 4] (the frame's height, width)")),
        ({"size": [4, 4], "counts": 3}, (4, 4), False, (".counts", "a list (uncompressed) or a string (compressed)")),
        (UNCOMPRESSED, None, True, (".counts", "a compressed RLE string (pycocotools counts decoded to str)")),
        (POLYGON, None, True, ("", "null or a dict with keys 'size' and 'counts'")),
        ({"size": [0, 4], "counts": "x"}, None, True, (".size", "[height, width] positive ints")),
    ],
)
def test_segmentation_problem(seg, size, compressed_only, problem) -> None:
    found = segmentation_problem(seg, size, compressed_only)
    assert (found if found is None else found[:2]) == problem
