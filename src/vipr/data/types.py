"""The in-memory form every data source is decoded into.

Images stay uint8 in NCHW order from disk to the training device (DESIGN.md,
principle 1): a split is one array ``images[N, 3, H, W]`` (often a read-only
``np.memmap``) plus ``labels[N]`` (int64, -1 where unknown).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class ImageSplit:
    """One split of a dataset: uint8 images in NCHW and integer labels (-1 = unlabelled)."""

    images: np.ndarray  # (N, 3, H, W) uint8, possibly a read-only memmap
    labels: np.ndarray  # (N,) int64

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {self.images.dtype} {self.images.shape}")
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return int(self.images.shape[2]), int(self.images.shape[3])


@dataclass
class Dataset:
    """A decoded data source: train split, optional test split, class names, digest."""

    name: str  # the SRC string it was opened from
    train: ImageSplit
    test: ImageSplit | None
    classes: list[str]
    digest: str  # hex content digest of the decoded store (images, labels, classes)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of unreadable files
    store_dir: Path | None = None  # the cache entry the images are mapped from (vipr.data.store)
    source: str | None = None  # the source read when ``name`` is a registered version (NAME:V2); None: ``name``

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def skipped_file(self) -> Path | None:
        """The full list of unreadable files: the entry's skipped.txt (meta.json in entries made before it)."""
        if self.store_dir is None:
            return None
        listed = self.store_dir / "skipped.txt"
        return listed if listed.is_file() else self.store_dir / "meta.json"
