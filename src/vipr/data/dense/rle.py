"""Instance masks as COCO run-length encodings (pycocotools).

A mask is stored as the compressed RLE string of a binary ``S x S`` canvas mask; decoding one
image's masks is one ``pycocotools.mask.decode`` call. Typical masks compress 20-100x.
"""

from __future__ import annotations

import warnings

import numpy as np
from pycocotools import mask as mask_utils

# pycocotools 2.0.x under numpy 2 warns on every decode; the result is right, the noise is not useful
warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a copy keyword",
                        category=DeprecationWarning, module="pycocotools")


def encode(masks: np.ndarray) -> list[bytes]:
    """uint8/bool (N, S, S) binary masks -> N compressed RLE strings."""
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [r["counts"] for r in rles]


def decode_rows(instances, rows: slice, size: int) -> np.ndarray:
    """uint8 (N, size, size) binary masks of the instances in ``rows`` of a split's flat arrays."""
    off, data = instances.rle_offsets, instances.rle_bytes
    rles = [{"size": [size, size], "counts": data[off[k]:off[k + 1]].tobytes()} for k in range(rows.start, rows.stop)]
    if not rles:
        return np.zeros((0, size, size), np.uint8)
    return np.ascontiguousarray(mask_utils.decode(rles).transpose(2, 0, 1))


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """float32 (N, 4) tight xyxy boxes (pixel edges: x1 = last column + 1) of (N, H, W) masks; 0s if empty."""
    boxes = np.zeros((len(masks), 4), np.float32)
    for k, m in enumerate(masks):
        ys, xs = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
        if len(xs):
            boxes[k] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return boxes


def polygons_to_mask(polygons: list[list[float]], sx: float, sy: float, canvas: int) -> np.ndarray:
    """COCO polygons in source pixels -> uint8 (canvas, canvas) mask, rasterised after scaling by (sx, sy)."""
    scaled = []
    for poly in polygons:
        p = np.asarray(poly, np.float64).reshape(-1, 2) * (sx, sy)
        scaled.append(p.reshape(-1).tolist())
    rle = mask_utils.merge(mask_utils.frPyObjects(scaled, canvas, canvas))
    return mask_utils.decode(rle)
