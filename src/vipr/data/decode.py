"""Decode encoded images straight into random-resized crops, on a pool of CPU threads.

Each image is decoded once for all of its views. The crop boxes are drawn first, in source
pixels, by torchvision's rule (``augment_ops.sample_crop_boxes``, from the run's generator,
so a seed gives the same crops); then a JPEG is decoded at the smallest 1/1, 1/2, 1/4 or
1/8 scale (libjpeg's DCT scaling via PIL's ``draft``) at which every one of its crop boxes
still holds at least ``side`` pixels, and each box is resized to ``side`` x ``side`` in one
antialiased PIL pass: pixels outside the boxes are never resized, and no crop is upsampled
from a reduced decode. Flips and the photometric ops stay in the batched device pipeline.

PIL releases the GIL while it decodes and resamples, so the threads run in parallel; give the
pool the cores the model does not use (``decode_threads``).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from vipr.data.augment_ops import sample_crop_boxes

DCT_SCALES = (8, 4, 2, 1)  # libjpeg decodes at 1/8, 1/4, 1/2 or full scale


def decode_threads(model_threads: int) -> int:
    """Threads for decoding: the cores the model's intra-op threads leave free, at least one."""
    return max(1, (os.cpu_count() or 1) - model_threads)


def draw_boxes(heights: Sequence[int], widths: Sequence[int], scales: Sequence[tuple[float, float]],
               ratio: tuple[float, float], generator: torch.Generator) -> np.ndarray:
    """(B, V, 4) int64 crop boxes (top, left, height, width) in source pixels, V = len(scales)."""
    boxes = np.empty((len(heights), len(scales), 4), np.int64)
    for i, (h, w) in enumerate(zip(heights, widths)):
        for v, scale in enumerate(scales):
            boxes[i, v] = sample_crop_boxes(1, int(h), int(w), scale, ratio, generator)[0].numpy()
    return boxes


def decode_crops(blob: bytes, boxes: np.ndarray, sides: Sequence[int]) -> list[np.ndarray]:
    """One (3, S_v, S_v) uint8 array per box: ``boxes[v]`` (top, left, height, width in source pixels)
    of one encoded image, resized to ``sides[v]``."""
    with Image.open(io.BytesIO(blob)) as im:
        width, height = im.size
        reduce = _dct_reduction(boxes, sides) if im.format == "JPEG" else 1
        if reduce > 1:
            im.draft("RGB", (-(-width // reduce), -(-height // reduce)))
        im = im.convert("RGB")
        sx, sy = im.size[0] / width, im.size[1] / height  # the decoded scale, per axis
        out = []
        for (top, left, h, w), side in zip(boxes, sides):
            box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
            out.append(np.asarray(im.resize((side, side), Image.Resampling.BILINEAR, box=box)).transpose(2, 0, 1))
    return out


def center_box(height: int, width: int) -> np.ndarray:
    """(1, 4) box of the centred square of an image: the raw store's crop (``sources._decode_image``)."""
    side = min(height, width)
    return np.array([[(height - side) // 2, (width - side) // 2, side, side]])


def _dct_reduction(boxes: np.ndarray, sides: Sequence[int]) -> int:
    """The largest DCT reduction keeping every box at least its side in pixels on its shorter edge."""
    shortest = boxes[:, 2:].min(axis=1)
    return next(r for r in DCT_SCALES if r == 1 or all(s // r >= side for s, side in zip(shortest, sides)))


class CropDecoder:
    """Decode batches of encoded images into per-view uint8 crops on a thread pool."""

    def __init__(self, sides: Sequence[int], threads: int):
        self.sides = tuple(sides)
        self.pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="vipr-decode")

    def __call__(self, blobs: Sequence[bytes], boxes: np.ndarray) -> list[torch.Tensor]:
        """One (B, 3, S_v, S_v) uint8 batch per view of ``blobs`` at ``boxes`` (B, V, 4)."""
        crops = list(self.pool.map(decode_crops, blobs, boxes, [self.sides] * len(blobs)))
        return [torch.from_numpy(np.stack([c[v] for c in crops])) for v in range(len(self.sides))]

    def centers(self, blobs: Sequence[bytes], heights: Sequence[int], widths: Sequence[int]) -> np.ndarray:
        """(B, 3, S, S) uint8 centred squares at the first side: images as the raw store holds them."""
        boxes = [center_box(int(h), int(w)) for h, w in zip(heights, widths)]
        crops = self.pool.map(decode_crops, blobs, boxes, [self.sides[:1]] * len(blobs))
        return np.stack([c[0] for c in crops]) if len(blobs) else np.empty((0, 3, self.sides[0], self.sides[0]), np.uint8)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class DeviceCropDecoder:
    """Decode on the training device: nvJPEG on CUDA (``torchvision.io.decode_jpeg`` of a list with
    ``device="cuda"``), then each crop box resized there (bilinear, antialiased, as PIL's).

    The whole image is decoded (nvJPEG has no DCT scaling); the GPU does it at a fraction of a
    core's cost. On the CPU the same code runs libjpeg through torchvision (the tests' path).
    A member that is not a JPEG (a WebDataset shard made elsewhere) is decoded on the CPU first.
    """

    def __init__(self, sides: Sequence[int], device: torch.device | str):
        self.sides, self.device = tuple(sides), torch.device(device)

    def __call__(self, blobs: Sequence[bytes], boxes: np.ndarray) -> list[torch.Tensor]:
        """One (B, 3, S_v, S_v) uint8 batch per view, on the device."""
        images = self._decode(blobs)
        out = [torch.empty(len(blobs), 3, s, s, dtype=torch.uint8, device=self.device) for s in self.sides]
        for i, image in enumerate(images):
            for v, ((top, left, h, w), side) in enumerate(zip(boxes[i].tolist(), self.sides)):
                crop = image[None, :, top:top + h, left:left + w].float()
                resized = torch.nn.functional.interpolate(crop, size=(side, side), mode="bilinear",
                                                          align_corners=False, antialias=side < max(h, w))
                out[v][i] = resized[0].round_().clamp_(0, 255).to(torch.uint8)
        return out

    def _decode(self, blobs: Sequence[bytes]) -> list[torch.Tensor]:
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders for torchcodec's; still nvJPEG's door
            warnings.simplefilter("ignore", DeprecationWarning)
            return self._decode_all(blobs)

    def _decode_all(self, blobs: Sequence[bytes]) -> list[torch.Tensor]:
        from torchvision.io import ImageReadMode, decode_image, decode_jpeg

        data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
        jpeg = [i for i, b in enumerate(blobs) if b[:3] == b"\xff\xd8\xff"]
        images: list[torch.Tensor | None] = [None] * len(blobs)
        if jpeg:
            decoded = decode_jpeg([data[i] for i in jpeg], mode=ImageReadMode.RGB, device=self.device)
            for i, image in zip(jpeg, decoded):
                images[i] = image
        for i in (i for i, image in enumerate(images) if image is None):
            images[i] = decode_image(data[i], mode=ImageReadMode.RGB).to(self.device)
        return images
