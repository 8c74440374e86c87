"""The view maker a pre-training method is built with: the recipe's views, drawn from the run's generator.

One ``torch.Generator`` per rank (seeded by the engine, ``vipr.engine.trainer.training_generator``)
is shared by the view maker, by a method's own draws (neighbour choice, CutMix boxes) and by
the checkpoint, which saves its state: a resumed run draws the same views as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from vipr.data.augment import IMAGENET_MEAN, IMAGENET_STD, ViewSpec, augment_crops, augment_views
from vipr.data.fusion import fused_kernels


@dataclass(frozen=True)
class ViewMaker:
    """Augmented, normalised float views of uint8 batches (see ``vipr.data.augment.augment_views``)."""

    specs: tuple[ViewSpec, ...]  # one per view, in the order the method reads them
    generator: torch.Generator  # CPU generator: the same seed gives the same views on any device
    device: torch.device = torch.device("cpu")
    mean: tuple[float, ...] = IMAGENET_MEAN  # per channel, on the [0, 1] scale
    std: tuple[float, ...] = IMAGENET_STD
    fused_augment: bool = False  # the views' per-pixel ops compiled (vipr.data.fusion)

    def __call__(self, images: Tensor, which: Sequence[int] | None = None) -> list[Tensor]:
        """Views ``which`` (indices into ``specs``; None: all) of (B, 3, H, W) uint8 ``images``.

        Returns one float32 (B, 3, S, S) channels-last tensor per view, on ``device``."""
        chosen = self.specs if which is None else [self.specs[i] for i in which]
        # Outside autocast: views are float32 whatever the training precision (blur and crops
        # would otherwise run in bf16 when a method draws views inside its forward).
        with torch.autocast(self.device.type, enabled=False), fused_kernels(self.fused_augment):
            return augment_views(images.to(self.device, non_blocking=True), chosen, mean=self.mean, std=self.std,
                                 generator=self.generator)

    def from_crops(self, crops: Sequence[Tensor]) -> list[Tensor]:
        """The views of crops taken at decode (``Batch.crops``: one uint8 batch per spec, in order)."""
        with torch.autocast(self.device.type, enabled=False), fused_kernels(self.fused_augment):
            return augment_crops([c.to(self.device, non_blocking=True) for c in crops], self.specs, mean=self.mean,
                                 std=self.std, generator=self.generator)

    def with_specs(self, specs: Sequence[ViewSpec]) -> ViewMaker:
        """The same maker (and generator) drawing ``specs`` instead, e.g. CLIM's extra low-resolution crop."""
        return replace(self, specs=tuple(specs))
