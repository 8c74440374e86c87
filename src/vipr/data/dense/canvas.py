"""The canvas every dense image is stored on: longer side resized to S, top-left aligned, zero padding.

Scaling by ``(sx, sy) = (new width / width, new height / height)`` maps a source coordinate to the
canvas; boxes, polygons and label maps all go through the same factors, so they stay aligned
with the image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

DEFAULT_CANVAS = 256  # pixels, the most an unset store_size gives: 192 KiB an image, room for 224 px crops
WORKERS = 4  # decoding threads: PIL releases the GIL while decoding and resizing
WINDOW = 256  # jobs in flight at most: decoded canvases never pile up in memory


def letterbox_scale(height: int, width: int, canvas: int) -> tuple[int, int]:
    """(height, width) of an image resized so its longer side is ``canvas`` pixels, aspect kept."""
    scale = canvas / max(height, width)
    return max(1, min(canvas, round(height * scale))), max(1, min(canvas, round(width * scale)))


def auto_canvas(sizes) -> int:
    """The canvas of an unset store_size: the longest side among the (height, width) ``sizes``, at most
    DEFAULT_CANVAS (small images are not blown up; large ones shrink to it), at least 16."""
    longest = max((max(int(h), int(w)) for h, w in sizes), default=DEFAULT_CANVAS)
    return max(16, min(DEFAULT_CANVAS, longest))


def peek_size(path: str) -> tuple[int, int] | None:
    """(height, width) from the image file's header, without decoding it; None if unreadable."""
    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except Exception:  # noqa: BLE001 -- the decode step reports the failure with its reason
        return None


def decode_canvas(path: str, canvas: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]] | str:
    """(uint8 (3, S, S) canvas, valid (h, w), source (h, w)) of the image file, or why it cannot be read."""
    try:
        with Image.open(path) as im:
            width, height = im.size
            h, w = letterbox_scale(height, width, canvas)
            im.draft("RGB", (w, h))  # JPEG: decode at the smallest scale still >= the target (much faster)
            im = im.convert("RGB").resize((w, h), Image.Resampling.BILINEAR)
            out = np.zeros((3, canvas, canvas), np.uint8)
            out[:, :h, :w] = np.asarray(im).transpose(2, 0, 1)
            return out, (h, w), (height, width)
    except Exception as e:  # noqa: BLE001 -- any decoder failure means "skip this image", never a crash
        return f"{type(e).__name__}: {e}"


def place_label_map(label_map: np.ndarray, valid: tuple[int, int], canvas: int, fill: int) -> np.ndarray:
    """uint8 (h, w) label map -> (canvas, canvas): resized (nearest) to ``valid`` top-left, ``fill`` elsewhere."""
    h, w = valid
    out = np.full((canvas, canvas), fill, np.uint8)
    if label_map.shape != (h, w):
        label_map = np.asarray(Image.fromarray(label_map).resize((w, h), Image.Resampling.NEAREST))
    out[:h, :w] = label_map
    return out


def read_label_map(path, orig: tuple[int, int], num_classes: int | None, what: str = "label map"):
    """uint8 (H, W) class indices of a palette / single-channel PNG of the image's size ``orig`` (H, W),
    each below ``num_classes`` (None: any) or ``IGNORE``; or why it is unusable (``what`` names it)."""
    from vipr.data.dense.types import IGNORE

    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                return f"{what} mode {im.mode}: it must be a palette or single-channel PNG of class indices"
            values = np.asarray(im, np.uint8)
    except Exception as e:  # noqa: BLE001 -- a broken PNG skips this image, never the build
        return f"unreadable {what} ({type(e).__name__}: {e})"
    if values.shape != orig:
        return f"{what} is {values.shape[1]}x{values.shape[0]}, its image {orig[1]}x{orig[0]}"
    if num_classes is not None:
        bad = np.unique(values[(values >= num_classes) & (values != IGNORE)])
        if len(bad):
            return f"{what} values {bad[:5].tolist()} are neither a class index (0..{num_classes - 1}) nor 255"
    return values


def clip_box(box: tuple[float, float, float, float], height: int, width: int):
    """An xyxy box in source pixels clipped to the image: (box, clipped?) or a reason to skip it."""
    x0, y0, x1, y1 = box
    if not all(np.isfinite(v) for v in box):
        return f"box {list(box)} has a non-finite coordinate"
    if x1 <= x0 or y1 <= y0:
        return f"zero-area box {list(box)} (xyxy)"
    cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))
    if cx1 <= cx0 or cy1 <= cy0:
        return f"box {list(box)} (xyxy) lies entirely outside the {width}x{height} image"
    return (cx0, cy0, cx1, cy1), (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1)


def ordered_map(fn: Callable, jobs: Iterable, workers: int = WORKERS) -> Iterator:
    """``map(fn, jobs)`` on a thread pool, in order, with at most WINDOW jobs in flight."""
    jobs = list(jobs)
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(jobs), WINDOW):
            yield from pool.map(fn, jobs[start:start + WINDOW])
