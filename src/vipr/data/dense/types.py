"""The in-memory form of a decoded detection / segmentation source, and its Dataset-like API.

Every image of a split lies on one square canvas of ``S x S`` pixels (the store size): it is
resized so that its longer side is ``S`` (aspect ratio kept) and placed at the top-left corner;
the rest of the canvas is zero padding (``size`` gives the valid height and width). So a split
is one uint8 array ``images[N, 3, S, S]`` that batches move to the device as they are, like
classification data (DESIGN.md, principle 1), and every coordinate below is in canvas pixels.

Annotations are flat arrays indexed through per-image offsets: the instances of image ``i`` are
rows ``offsets[i]:offsets[i + 1]`` of ``boxes``, ``labels``, ``iscrowd``, ``difficult``,
``ann_ids`` and of the RLE masks. Class index 0 is ``"background"`` (torchvision's detection
convention and VOC's label maps); objects have labels ``1..K``; semantic maps hold the class
index per pixel and 255 where a pixel is to be ignored (VOC's object borders, the padding).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

IGNORE = 255  # semantic-map value of pixels that count for nothing (borders, padding, crowds)


@dataclass
class Instances:
    """The flat per-instance arrays of one split (M instances over all images)."""

    offsets: np.ndarray  # (N + 1,) int64: instances of image i are rows offsets[i]:offsets[i + 1]
    boxes: np.ndarray  # (M, 4) float32 xyxy in canvas pixels (x1, y1 exclusive edges)
    labels: np.ndarray  # (M,) int64 in 1..K
    iscrowd: np.ndarray  # (M,) uint8: 1 for COCO crowd regions (drop them for training)
    difficult: np.ndarray  # (M,) uint8: 1 for VOC "difficult" objects (ignored by VOC mAP)
    ann_ids: np.ndarray  # (M,) int64: the annotation's id in its source (COCO id, VOC object number)
    rle_offsets: np.ndarray | None  # (M + 1,) int64 into rle_bytes; None: the source has no masks
    rle_bytes: np.ndarray | None  # (B,) uint8: compressed COCO RLE strings, concatenated

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DenseSample:
    """One image and its targets; ``masks`` is decoded when first read.

    Attributes:
        image: uint8 (3, S, S) canvas; rows >= size[0] and columns >= size[1] are zero padding.
        boxes: float32 (N, 4) xyxy in canvas pixels.
        labels: int64 (N,) class indices in 1..K.
        iscrowd: uint8 (N,); difficult: uint8 (N,).
        semantic: uint8 (S, S) class index per pixel, 255 ignore; None without semantic maps.
        size: (height, width) of the valid region; orig_size: (height, width) of the source image.
        image_id: the source's image id (COCO id; the listing index otherwise).
    """

    split: DenseSplit
    index: int
    image: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    iscrowd: torch.Tensor
    difficult: torch.Tensor
    semantic: torch.Tensor | None
    size: tuple[int, int]
    orig_size: tuple[int, int]
    image_id: int

    @cached_property
    def masks(self) -> torch.Tensor | None:
        """uint8 (N, S, S) binary instance masks, None if the source has none."""
        return self.split.masks(self.index)


@dataclass
class DenseSplit:
    """One split: canvases, per-image geometry, flat instances and optional semantic maps."""

    images: np.ndarray  # (N, 3, S, S) uint8, often a read-only memmap
    sizes: np.ndarray  # (N, 2) int32 (height, width) of the valid region of each canvas
    orig_sizes: np.ndarray  # (N, 2) int32 (height, width) of the source images
    image_ids: np.ndarray  # (N,) int64
    names: list[str]  # (N,) file name of each image relative to the source root
    instances: Instances
    semantic_maps: np.ndarray | None  # (N, S, S) uint8 or None

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.ndim != 4 or self.images.shape[1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, 3, S, S), got {self.images.dtype} {self.images.shape}")
        if len(self.instances.offsets) != n + 1 or len(self.sizes) != n or len(self.names) != n:
            raise ValueError(f"{n} images but {len(self.instances.offsets) - 1} offsets, "
                             f"{len(self.sizes)} sizes and {len(self.names)} names")

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return (f"DenseSplit({len(self)} images on a {self.canvas_size} px canvas, {len(self.instances)} instances, "
                f"masks={self.has_masks}, semantic={self.semantic_maps is not None})")

    @property
    def canvas_size(self) -> int:
        """S: the side of every canvas, in pixels."""
        return int(self.images.shape[2])

    @property
    def has_masks(self) -> bool:
        return self.instances.rle_offsets is not None

    def rows(self, i: int) -> slice:
        """The rows of image ``i`` in the flat instance arrays."""
        off = self.instances.offsets
        return slice(int(off[i]), int(off[i + 1]))

    def image(self, i: int) -> torch.Tensor:
        """uint8 (3, S, S) canvas of image ``i`` (a copy: the store is read-only)."""
        return torch.from_numpy(np.array(self.images[i]))

    def boxes(self, i: int) -> torch.Tensor:
        """float32 (N, 4) xyxy boxes of image ``i`` in canvas pixels."""
        return torch.from_numpy(self.instances.boxes[self.rows(i)].copy())

    def labels(self, i: int) -> torch.Tensor:
        """int64 (N,) class indices (1..K) of image ``i``."""
        return torch.from_numpy(self.instances.labels[self.rows(i)].copy())

    def masks(self, i: int) -> torch.Tensor | None:
        """uint8 (N, S, S) binary masks of image ``i``, decoded from RLE now; None without masks."""
        if not self.has_masks:
            return None
        from vipr.data.dense.rle import decode_rows

        return torch.from_numpy(decode_rows(self.instances, self.rows(i), self.canvas_size))

    def semantic(self, i: int) -> torch.Tensor | None:
        """uint8 (S, S) class index per pixel of image ``i`` (255 ignore); None without maps."""
        if self.semantic_maps is None:
            return None
        return torch.from_numpy(np.array(self.semantic_maps[i]))

    def target(self, i: int, *, masks: bool = True, drop_crowd: bool = True) -> dict[str, torch.Tensor]:
        """torchvision's detection target of image ``i``: boxes (N, 4) float32 xyxy, labels (N,) int64,
        and masks (N, S, S) uint8 when the source has them and ``masks``; crowds dropped by default."""
        keep = slice(None) if not drop_crowd else torch.from_numpy(self.instances.iscrowd[self.rows(i)] == 0)
        target = {"boxes": self.boxes(i)[keep], "labels": self.labels(i)[keep]}
        if masks and self.has_masks:
            target["masks"] = self.masks(i)[keep]
        return target

    def batch(self, indices, *, masks: bool = True) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        """uint8 (B, 3, S, S) canvases of ``indices`` and their targets (see ``target``), for a training step."""
        indices = np.asarray(indices, np.int64)
        images = torch.from_numpy(np.ascontiguousarray(self.images[np.sort(indices)]))  # memmap reads in order
        images = images[torch.from_numpy(np.argsort(np.argsort(indices)))]
        return images, [self.target(int(i), masks=masks) for i in indices]

    def __getitem__(self, i: int) -> DenseSample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"image {i} out of range for a split of {len(self)}")
        i %= len(self)
        rows, inst = self.rows(i), self.instances
        return DenseSample(
            split=self, index=i, image=self.image(i), boxes=self.boxes(i), labels=self.labels(i),
            iscrowd=torch.from_numpy(inst.iscrowd[rows].copy()),
            difficult=torch.from_numpy(inst.difficult[rows].copy()), semantic=self.semantic(i),
            size=tuple(int(v) for v in self.sizes[i]), orig_size=tuple(int(v) for v in self.orig_sizes[i]),
            image_id=int(self.image_ids[i]))


@dataclass
class DenseDataset:
    """A decoded detection / segmentation source: train split, optional test split, classes, digest.

    ``classes[0]`` is ``"background"``; ``category_ids[k]`` is the source's id of class k (COCO's
    category id, for writing COCO results; k itself for the other sources).
    """

    name: str  # the SRC string it was opened from
    kind: str  # coco | voc | segfolder | scenes
    train: DenseSplit
    test: DenseSplit | None
    classes: list[str]
    category_ids: list[int]
    digest: str  # hex content digest of every array of the store and the class names
    skipped: list[tuple[str, str, str, str]] = field(default_factory=list)  # (split, file, id, reason)
    clipped: int = 0  # boxes partly outside their image, clipped to it
    skipped_file: str | None = None  # the store's skipped.txt: every skipped annotation, one a line
    stats: dict = field(default_factory=dict)  # per split: semantic pixels per class, from the build

    def __repr__(self) -> str:
        return (f"DenseDataset({self.name!r}, {self.kind}, {self.num_classes} classes, "
                f"train={self.train}, test={self.test})")

    @property
    def num_classes(self) -> int:
        """K + 1: the object classes and the background."""
        return len(self.classes)
