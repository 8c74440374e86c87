"""``builtin:scenes``: procedural detection / segmentation scenes drawn with the builtin:shapes renderer.

Each image holds 1..``objects`` shapes of ``classes`` kinds (vipr.data.shapes.SHAPES) over a
textured background (the same backgrounds as builtin:shapes), each with its own scale,
position, rotation and colour. Shapes are painted back to front; an instance mask is the part
of its shape (signed distance <= 0) that no later shape covers, so masks never overlap; a shape
left with less than ``MIN_VISIBLE`` of its area (or fewer than ``MIN_PIXELS`` pixels) visible is
not drawn at all. Boxes are the tight boxes of the masks, and the semantic map is the masks'
class index (0 background). Everything is a function of (seed, split, parameters).
"""

from __future__ import annotations

import numpy as np

from vipr.data.dense.rle import encode, mask_boxes
from vipr.data.shapes import SHAPE_NAMES, SHAPES, _backgrounds

SCENES_DEFAULTS = {"size": 128, "train": 200, "test": 50, "classes": 6, "objects": 4, "seed": 0}
SCENES_LIMITS = {"size": (32, 1024), "train": (1, 10**7), "test": (0, 10**7), "classes": (2, len(SHAPE_NAMES)),
                 "objects": (1, 32), "seed": (0, 2**63)}
SCALE_RANGE = (0.15, 0.6)  # shape radius in half-image units, log-uniform: small, medium and large objects
MIN_VISIBLE, MIN_PIXELS = 0.2, 12  # a shape hidden beyond this is left out (painted nowhere, no annotation)
LUMINANCE = np.array([0.299, 0.587, 0.114], np.float32)


def build_scenes(writer, params: dict[str, int]) -> None:
    """Render both splits of ``builtin:scenes`` into a DenseWriter (canvas = params["size"])."""
    size = params["size"]
    chunk = max(1, (1 << 22) // (size * size * params["objects"]))  # ~16 MiB of float32 coverage a chunk
    for split_id, split in enumerate(("train", "test")):
        n = params[split]
        if n == 0:
            continue
        rng = np.random.default_rng([params["seed"], split_id])  # independent train and test streams
        builder = writer.split(split, n, semantic=True, masks=True)
        for start in range(0, n, chunk):
            for k, (image, ann, semantic) in enumerate(render_scenes(min(chunk, n - start), params, rng), start):
                builder.add(image, (size, size), (size, size), k, f"{split}/{k:06d}", ann, semantic)
        writer.finish(builder)
    writer.commit_dense(kind="scenes", classes=["background", *SHAPE_NAMES[:params["classes"]]],
                        category_ids=list(range(params["classes"] + 1)), skipped=[])


def render_scenes(b: int, params: dict[str, int], rng: np.random.Generator):
    """Yield ``b`` scenes: (uint8 (3, S, S) image, annotation dict, uint8 (S, S) semantic map)."""
    size, layers = params["size"], params["objects"]
    grid = ((np.arange(size, dtype=np.float32) + 0.5) * (2 / size) - 1)  # pixel centres in [-1, 1]
    gx, gy = grid[None, None, :], grid[None, :, None]
    background, ink = _backgrounds(b, gx, gy, rng)  # (B, 3, S, S) in [0, 1], (B, 3)
    counts = rng.integers(1, layers + 1, b)
    labels = rng.integers(0, params["classes"], (layers, b))
    sdf, pixels_per_unit = _layer_sdfs(labels, size, gx, gy, rng)  # (L, B, S, S), (L, B)
    colours = _colours(rng.random((layers, b, 3), dtype=np.float32), background, ink)
    for i in range(b):
        yield _compose(background[i], sdf[:counts[i], i], pixels_per_unit[:counts[i], i],
                       labels[:counts[i], i], colours[:counts[i], i])


def _layer_sdfs(labels: np.ndarray, size: int, gx, gy, rng):
    """Signed distances (L, B, S, S) in shape units of one random shape per layer and image."""
    layers, b = labels.shape
    lo, hi = np.log(SCALE_RANGE[0]), np.log(SCALE_RANGE[1])
    scale = np.exp(rng.uniform(lo, hi, (layers, b))).astype(np.float32)
    centre = rng.uniform(-0.85, 0.85, (layers, b, 2)).astype(np.float32)  # edges may leave the image
    angle = rng.uniform(0, 2 * np.pi, (layers, b)).astype(np.float32)
    sdf = np.empty((layers, b, size, size), np.float32)
    for j in range(layers):
        dx, dy = gx - centre[j, :, 0, None, None], gy - centre[j, :, 1, None, None]  # (B, S, S)
        cos, sin = np.cos(angle[j])[:, None, None], np.sin(angle[j])[:, None, None]
        inv = 1 / scale[j][:, None, None]
        x, y = (cos * dx + sin * dy) * inv, (cos * dy - sin * dx) * inv  # shape-local coordinates
        for k in np.unique(labels[j]):
            m = labels[j] == k
            sdf[j, m] = SHAPES[SHAPE_NAMES[k]](x[m], y[m])
    return sdf, scale * size / 2


def _colours(colour: np.ndarray, background: np.ndarray, ink: np.ndarray) -> np.ndarray:
    """Random colours (L, B, 3), pulled towards the ink where too close to the background's luminance."""
    bg = background.mean(axis=(2, 3)) @ LUMINANCE  # (B,)
    close = np.abs(colour @ LUMINANCE - bg[None]) < 0.3
    return np.where(close[..., None], 0.35 * colour + 0.65 * ink[None], colour)


def _compose(background: np.ndarray, sdf: np.ndarray, ppu: np.ndarray, labels: np.ndarray, colours: np.ndarray):
    """Paint the kept shapes back to front; instance masks, tight boxes and the semantic map from them."""
    inside = sdf <= 0  # (n, S, S): each shape's own extent
    covered = np.zeros(sdf.shape[1:], bool)
    kept, visible = [], []
    for j in range(len(sdf) - 1, -1, -1):  # top down: what a shape shows is what no kept later shape covers
        seen = inside[j] & ~covered
        area = int(inside[j].sum())
        if area and seen.sum() >= max(MIN_PIXELS, MIN_VISIBLE * area):
            kept.append(j)
            visible.append(seen)
            covered |= inside[j]
    kept, visible = kept[::-1], np.array(visible[::-1], np.uint8).reshape(-1, *sdf.shape[1:])
    image = background.copy()
    semantic = np.zeros(sdf.shape[1:], np.uint8)
    for j, mask in zip(kept, visible):  # back to front
        alpha = np.clip(0.5 - sdf[j] * ppu[j], 0, 1)[None]  # antialiased coverage over one pixel
        image = image * (1 - alpha) + colours[j][:, None, None] * alpha
        semantic[mask.astype(bool)] = labels[j] + 1
    ann = {"boxes": mask_boxes(visible), "labels": labels[kept] + 1, "iscrowd": np.zeros(len(kept), np.uint8),
           "difficult": np.zeros(len(kept), np.uint8), "ann_ids": np.arange(len(kept)), "rles": encode(visible)}
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), ann, semantic
