"""The ``builtin:shapes`` renderer: signed distances over a coordinate grid, one batch at a time.

The class of an image is its shape; scale, position, rotation, background (a palette colour,
flat, a gradient or noise) and ink (near-black or near-white) vary at random per image, so a
feature must be invariant to them to classify well. Everything is vectorised over the batch.
"""

from __future__ import annotations

import numpy as np


def _box(x, y, half_w, half_h):
    qx, qy = np.abs(x) - half_w, np.abs(y) - half_h
    return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)


def _polygon(x, y, points):
    """Convex polygon (counter-clockwise vertices): the largest signed distance to its edge lines."""
    d = None
    for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]):
        nx, ny = y1 - y0, x0 - x1  # outward normal of a counter-clockwise edge
        edge = ((x - x0) * nx + (y - y0) * ny) / np.hypot(nx, ny)
        d = edge if d is None else np.maximum(d, edge)
    return d


def _regular(n, radius, turn=0.0):
    return [(radius * np.cos(turn + 2 * np.pi * k / n), radius * np.sin(turn + 2 * np.pi * k / n)) for k in range(n)]


def _star(x, y, points=5, inner=0.42):
    """Star with straight edges: fold into one half-sector, then one edge line from tip to notch."""
    half = np.pi / points
    a = np.abs(np.mod(np.arctan2(y, x), 2 * half) - half)  # angle to the nearest notch, 0..half
    r = np.hypot(x, y)
    px, py = r * np.cos(half - a), r * np.sin(half - a)  # tip on the +x axis, notch at angle `half`
    vx, vy = inner * np.cos(half), inner * np.sin(half)
    return ((px - 1) * vy + py * (1 - vx)) / np.hypot(vy, 1 - vx)


def _disc(x, y, cx, cy, r):
    return np.hypot(x - cx, y - cy) - r


# Each shape spans about [-1, 1] in its own coordinates; all are distinct under rotation.
SHAPES = {
    "circle": lambda x, y: _disc(x, y, 0, 0, 0.85),
    "square": lambda x, y: _box(x, y, 0.72, 0.72),
    "triangle": lambda x, y: _polygon(x, y, _regular(3, 1.0, np.pi / 2)),
    "star": _star,
    "cross": lambda x, y: np.minimum(_box(x, y, 0.95, 0.28), _box(x, y, 0.28, 0.95)),
    "ring": lambda x, y: np.abs(np.hypot(x, y) - 0.7) - 0.22,
    "hexagon": lambda x, y: _polygon(x, y, _regular(6, 0.9)),
    "diamond": lambda x, y: _polygon(x, y, [(1.0, 0), (0, 0.5), (-1.0, 0), (0, -0.5)]),
    "heart": lambda x, y: np.minimum(np.minimum(_disc(x, y, -0.39, 0.19, 0.55), _disc(x, y, 0.39, 0.19, 0.55)),
                                     _polygon(x, y, [(0, -0.98), (0.78, -0.2), (0, 0.58), (-0.78, -0.2)])),
    "crescent": lambda x, y: np.maximum(_disc(x, y, 0, 0, 0.85), -_disc(x, y, 0.42, 0.12, 0.7)),
    "ellipse": lambda x, y: (np.hypot(x / 0.95, y / 0.5) - 1) * 0.5,
    "arrow": lambda x, y: np.minimum(_box(x + 0.35, y, 0.6, 0.15), _polygon(x, y, [(1, 0), (0.2, 0.55), (0.2, -0.55)])),
}
SHAPE_NAMES = tuple(SHAPES)


def render_shapes(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw one image per label (index into SHAPE_NAMES): uint8 (B, 3, size, size).

    Random per image: scale, position, rotation, foreground colour and a textured background;
    edges are antialiased over one pixel from the signed distance.
    """
    b = len(labels)
    grid = ((np.arange(size, dtype=np.float32) + 0.5) * (2 / size) - 1)  # pixel centres in [-1, 1]
    gy, gx = grid[None, :, None], grid[None, None, :]
    scale = rng.uniform(0.5, 0.85, b).astype(np.float32)  # shape radius, in half-image units: the object dominates
    centre = (rng.uniform(-1, 1, (b, 2)) * (0.95 - scale)[:, None]).astype(np.float32)[:, :, None, None]
    angle = rng.uniform(0, 2 * np.pi, b).astype(np.float32)[:, None, None]
    dx, dy = gx - centre[:, 0], gy - centre[:, 1]  # (B, S, S)
    cos, sin, inv = np.cos(angle), np.sin(angle), 1 / scale[:, None, None]
    x, y = (cos * dx + sin * dy) * inv, (cos * dy - sin * dx) * inv  # shape-local coordinates
    sdf = np.empty((b, size, size), np.float32)
    for k in np.unique(labels):  # one vectorised call per shape, not per pixel
        m = labels == k
        sdf[m] = SHAPES[SHAPE_NAMES[k]](x[m], y[m])
    pixels_per_unit = (scale * size / 2)[:, None, None]
    alpha = np.clip(0.5 - sdf * pixels_per_unit, 0, 1)[:, None]  # coverage of each pixel, (B, 1, S, S)
    background, foreground = _backgrounds(b, gx, gy, rng)
    image = background * (1 - alpha) + foreground[:, :, None, None] * alpha
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


PALETTE = np.array([[0.85, 0.3, 0.25], [0.25, 0.6, 0.85], [0.3, 0.75, 0.35], [0.9, 0.8, 0.3],
                    [0.6, 0.4, 0.8], [0.5, 0.5, 0.5], [0.2, 0.2, 0.3], [0.9, 0.9, 0.85]], np.float32)


def _backgrounds(b: int, gx: np.ndarray, gy: np.ndarray, rng: np.random.Generator):
    """Backgrounds (B, 3, S, S) in [0, 1] -- flat, gradient, stripes or noise between two near colours --
    and a foreground colour (B, 3) on the other side of the background's luminance."""
    size = gx.shape[-1]
    # Background colours come from a small palette (plus a little noise) so that colour alone
    # cannot tell images apart; the shape is what distinguishes one image from another.
    base = np.clip(PALETTE[rng.integers(0, len(PALETTE), b)] + rng.uniform(-0.08, 0.08, (b, 3)), 0, 1).astype(np.float32)
    other = np.clip(base + rng.uniform(-0.15, 0.15, (b, 3)), 0, 1).astype(np.float32)  # near: the shape dominates
    kind = rng.choice([0, 1, 3], b)  # 0 flat, 1 gradient, 3 noise (stripes would tell instances apart by angle)
    angle = rng.uniform(0, 2 * np.pi, b).astype(np.float32)[:, None, None]
    along = np.cos(angle) * gx + np.sin(angle) * gy  # (B, S, S) position along a random direction
    cycles = rng.uniform(1.5, 6, b).astype(np.float32)[:, None, None]  # stripe periods per image width
    phase = rng.uniform(0, 2 * np.pi, b).astype(np.float32)[:, None, None]
    mix = np.zeros((b, size, size), np.float32)
    mix[kind == 1] = ((along + 1.42) / 2.84)[kind == 1]
    mix[kind == 2] = (0.5 + 0.5 * np.sin(np.pi * cycles * along + phase))[kind == 2]
    mix[kind == 3] = rng.random(((kind == 3).sum(), size, size), dtype=np.float32)
    background = base[:, :, None, None] + mix[:, None] * (other - base)[:, :, None, None]
    background += rng.normal(0, 0.03, background.shape).astype(np.float32)  # sensor-like grain
    luminance = base @ np.array([0.299, 0.587, 0.114], np.float32)
    dark = np.repeat(rng.uniform(0, 0.15, (b, 1)), 3, axis=1).astype(np.float32)  # near-black or near-white ink
    return background, np.where(luminance[:, None] > 0.5, dark, 1 - dark)
