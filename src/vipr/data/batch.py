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
    """

    images: Tensor
    labels: Tensor
    indices: Tensor

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(*(t.to(device, non_blocking=non_blocking) for t in (self.images, self.labels, self.indices)))

    def pin_memory(self) -> Batch:
        return Batch(self.images.pin_memory(), self.labels.pin_memory(), self.indices.pin_memory())
