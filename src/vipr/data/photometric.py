"""A view's photometric ops, their parameters drawn for the whole batch, then applied in chunks.

The colour jitter, grayscale, blur and solarize of a view are elementwise passes over the
batch, each writing a float32 batch-sized temporary. At 224 px a batch of 64 views is 38 MB,
far past a CPU's caches, so every pass streams from memory; the same passes over 6 images
(3.6 MB) at a time stay in cache. Measured on an AMD EPYC, 1 thread, moco_v2's two 224-px views
of a batch of 64 (``augment_views``): 27.4 ms an image whole, 14.6 ms chunked (1.9x);
benchmarks/augment.py and benchmarks/encoded_pipeline.py measure the pipelines around it
(docs/benchmarks.md). At 32 px a whole batch is one chunk. The random parameters are drawn for the whole batch first,
in the order the single ops draw them, so a chunked batch gets exactly the views of an
unchunked one: chunking changes the speed, never the result.

On a GPU (or any non-CPU device) the batch is one chunk: its kernels want the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from vipr.data.augment_color import jitter_where, sample_jitter_factors
from vipr.data.augment_ops import blur_where, coin_flips, grayscale_where, solarize_where

if TYPE_CHECKING:  # vipr.data.augment imports this module
    from vipr.data.augment import ViewSpec

CHUNK_BYTES = 4 << 20  # float32 bytes of one chunk on the CPU: about a core's share of L2 + L3


@dataclass(frozen=True)
class PhotometricDraw:
    """One view's photometric parameters for a batch of B samples (CPU tensors)."""

    jitter: Tensor  # (B, 4) brightness, contrast, saturation, hue; neutral where not jittered
    jittered: Tensor  # (B,) bool
    order: tuple[int, ...]  # order of the four jitter steps, one per batch
    gray: Tensor  # (B,) bool
    blurred: Tensor  # (B,) bool
    sigma: Tensor  # (B,) blur sigma in pixels
    solarized: Tensor  # (B,) bool

    def rows(self, part: slice) -> PhotometricDraw:
        """The parameters of samples ``part`` (the order stays the batch's)."""
        return PhotometricDraw(self.jitter[part], self.jittered[part], self.order, self.gray[part],
                               self.blurred[part], self.sigma[part], self.solarized[part])


def draw_photometric(batch: int, view: ViewSpec, generator: torch.Generator | None) -> PhotometricDraw:
    """The parameters ``color_jitter``, ``random_grayscale``, ``gaussian_blur`` and ``solarize`` draw, in
    their order, for a batch of ``batch`` samples of ``view``."""
    jitter, jittered = sample_jitter_factors(batch, view.jitter, view.jitter_p, generator)
    order = tuple(torch.randperm(4, generator=generator).tolist())
    gray = coin_flips(batch, view.gray_p, generator)
    blurred = coin_flips(batch, view.blur_p, generator)
    sigma = torch.empty(batch).uniform_(*view.blur_sigma, generator=generator)
    solarized = coin_flips(batch, view.solarize_p, generator)
    return PhotometricDraw(jitter, jittered, order, gray, blurred, sigma, solarized)


def apply_photometric(x: Tensor, draw: PhotometricDraw, view: ViewSpec) -> Tensor:
    """Jitter, grayscale, blur, solarize of float (B, 3, S, S) ``x`` in [0, 1] with ``draw``'s parameters."""
    x = jitter_where(x, draw.jitter, draw.jittered, draw.order)
    x = grayscale_where(x, draw.gray)
    x = blur_where(x, draw.blurred, draw.sigma)
    return solarize_where(x, draw.solarized, view.solarize_threshold)


def chunks(batch: int, side: int, device: torch.device) -> list[slice]:
    """Row ranges of about ``CHUNK_BYTES`` of float32 (3, side, side) images on the CPU; one elsewhere."""
    if device.type != "cpu":
        return [slice(0, batch)]
    rows = max(1, CHUNK_BYTES // (3 * side * side * 4))
    return [slice(start, min(start + rows, batch)) for start in range(0, batch, rows)]
