"""The one meaning of "batch": what the loader yields and a training task's ``training_step`` gets."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Batch:
    """One rank's share of a training step, uint8 as stored (views are drawn later, on the device).

    Attributes:
        images: (B, 3, H, W) uint8.
        labels: (B,) int64, -1 where unknown (or outside a label split).
        indices: (B,) int64, the rows of the split these images are (feature banks, neighbours).
        crops: from the encoded store only: one (B, 3, S_v, S_v) uint8 crop per view, taken at
            decode (``vipr.data.decode``); ``images`` is then the first of them.
    """

    images: Tensor
    labels: Tensor
    indices: Tensor
    crops: tuple[Tensor, ...] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Host tensors pinned (asynchronous copies); tensors already on a device (crops nvJPEG decoded) stay."""
        return self._map(lambda t: t.pin_memory() if t.device.type == "cpu" else t)

    def _map(self, fn) -> Batch:
        crops = None if self.crops is None else tuple(fn(c) for c in self.crops)
        images = crops[0] if crops is not None else fn(self.images)  # one copy: images is crops[0]
        return Batch(images, fn(self.labels), fn(self.indices), crops)
