"""The train split a method may read beyond its batch (feature banks, neighbour images)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vipr.data.loader import read_rows


@dataclass
class TrainData:
    """The whole train split, handed to a method when it is built (``vipr.ssl.create_method``).

    Neighbour methods refresh their feature bank from it at epoch starts and ``fetch`` the
    images of drawn neighbours each step.
    """

    images: np.ndarray  # (N, 3, H, W) uint8 train split, possibly a memory map
    labels: np.ndarray  # (N,) int64, -1 where unknown (or outside the label split)
    image_size: int  # side of the training crops, px (bank features use centre views of this side)
    device: torch.device
    precision: str = "fp32"  # resolved training precision, for bank passes too
    progress: bool = True

    def fetch(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 images ``indices`` on the device, read from the store in ascending order."""
        return torch.from_numpy(read_rows(self.images, indices.cpu().numpy())).to(self.device, non_blocking=True)
