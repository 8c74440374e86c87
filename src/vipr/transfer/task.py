"""Detection and segmentation fine-tuning as training tasks of the one engine (vipr.engine.task).

The engine's loader yields the canvases of a dense split (``Batch.images`` uint8, ``indices``
the rows); the task reads the targets of those rows from the split it was built with (a dataset
handle, never a call-back through the trainer), draws the batch's scale and flips from the
engine's generator (checkpointed: resume is exact) and returns the model's losses.

Both deployable models take float images in [0, 1]: a torchvision detector normalises inside
(its transform holds the card's mean and std), the segmenter through ``Normalized``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vipr.data.batch import Batch
from vipr.data.dense.types import IGNORE, DenseSplit
from vipr.engine.task import TaskBase
from vipr.transfer.augment import DenseAugment, augment_detection, augment_segmentation

UNIT = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # mean, std that leave [0, 1] images as they are


class LabelRows:
    """A dense split as the engine's BatchIterator reads it: the canvases and no class labels."""

    def __init__(self, split: DenseSplit):
        self.images = split.images
        self.labels = np.full(len(split), -1, np.int64)

    def __len__(self) -> int:
        return len(self.labels)


class DetectionTask(TaskBase, nn.Module):
    """The summed torchvision losses of ``model`` (Faster / Mask R-CNN, RetinaNet) on an augmented batch."""

    def __init__(self, model: nn.Module, split: DenseSplit, augment: DenseAugment, generator: torch.Generator,
                 masks: bool):
        super().__init__()
        self.model, self.split, self.generator, self.masks = model, split, generator, masks
        self.augment = replace(augment, mean=UNIT[0], std=UNIT[1])  # the detector normalises itself

    def training_step(self, batch: Batch) -> dict[str, Tensor]:
        device = batch.images.device
        targets = [_to(self.split.target(int(i), masks=self.masks), device) for i in batch.indices.tolist()]
        with torch.autocast(device.type, enabled=False):  # the views in float32 at any precision
            images, targets = augment_detection(batch.images, targets, self.augment, self.generator)
        losses = {name: value.float() for name, value in self.model(list(images), targets).items()}
        return {"loss": sum(losses.values()), **losses}

    def deployable(self) -> nn.Module:
        return self.model


class Normalized(nn.Module):
    """A segmenter that takes [0, 1] images: ``(x - mean) / std``, then the network's logits at input size."""

    def __init__(self, network: nn.Module, mean, std):
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.network((x - self.mean) / self.std)["out"]  # (B, K, H, W)


class SegmentationTask(TaskBase, nn.Module):
    """Pixel cross-entropy (255 ignored) of a ``Normalized`` segmenter on an augmented batch."""

    def __init__(self, model: Normalized, split: DenseSplit, augment: DenseAugment, generator: torch.Generator):
        super().__init__()
        self.model, self.split, self.generator = model, split, generator
        self.augment = replace(augment, mean=UNIT[0], std=UNIT[1])  # Normalized normalises

    def training_step(self, batch: Batch) -> dict[str, Tensor]:
        rows = batch.indices.cpu().numpy()
        maps = torch.from_numpy(np.ascontiguousarray(self.split.semantic_maps[np.sort(rows)]))
        maps = maps[torch.from_numpy(np.argsort(np.argsort(rows)))].to(batch.images.device)  # (B, S, S) uint8
        with torch.autocast(batch.images.device.type, enabled=False):
            images, labels = augment_segmentation(batch.images, maps, self.augment, self.generator)
        logits = self.model(images).float()  # (B, K, S', S')
        loss = F.cross_entropy(logits, labels, ignore_index=IGNORE)
        return {"loss": loss}

    def deployable(self) -> nn.Module:
        return self.model


def _to(target: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in target.items()}
