"""The search's data: the weight / alpha split of the train images and batched augmentation.

DARTS (arXiv 1806.09055) learns weights on one half of the CIFAR train split and alpha on the
other half; the split here is a seeded permutation, so it is the same on resume. Images stay
uint8 until the batch is on the device (DESIGN.md, principle 1), then: resize to the search
size if the store differs, random crop with 4 px zero padding and horizontal flip (the DARTS
CIFAR recipe), normalise.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vipr.data.augment import IMAGENET_MEAN, IMAGENET_STD, eval_transform, resize
from vipr.data.augment_ops import as_float_image, normalize
from vipr.data.batch import Batch
from vipr.data.loader import BatchIterator
from vipr.data.types import ImageSplit
from vipr.errors import DataError
from vipr.nas.augment import pad_crop_flip

PAD = 4  # px of zero padding before the random crop (DARTS' CIFAR recipe)


def split_train(split: ImageSplit, portion: float, seed: int, bilevel: bool) -> tuple[ImageSplit, ImageSplit | None]:
    """(weight split, alpha split): ``portion`` of the images for weights, the rest for alpha.

    A one-level strategy (``bilevel=False``) gets every image for weights and no alpha split.
    """
    labelled = np.flatnonzero(np.asarray(split.labels) >= 0)
    if len(labelled) < len(split):
        raise DataError(f"{len(split) - len(labelled)} of {len(split)} train images have no label; architecture "
                        f"search trains a classifier, so use a labelled source (class folders, CIFAR, npz)")
    if not bilevel:
        return split, None
    order = np.random.default_rng(seed).permutation(len(split))
    n_weights = int(round(portion * len(split)))
    if n_weights < 1 or n_weights >= len(split):
        raise DataError(f"train_portion {portion} of {len(split)} images leaves an empty weight or alpha split; "
                        f"use a portion strictly between 0 and 1 (DARTS: 0.5) or more images")
    pick = lambda idx: ImageSplit(np.ascontiguousarray(split.images[np.sort(idx)]), split.labels[np.sort(idx)])
    return pick(order[:n_weights]), pick(order[n_weights:])


def make_loaders(weights: ImageSplit, alpha: ImageSplit | None, batch_size: int, seed: int,
                 device: torch.device) -> tuple[BatchIterator, BatchIterator | None, int]:
    """Loaders of both splits and the steps per epoch (the shorter of the two)."""
    for name, part in (("weight", weights), ("alpha", alpha)):
        if part is not None and len(part) < batch_size:
            raise DataError(f"the {name} split has {len(part)} images, fewer than one batch of {batch_size}; "
                            f"lower --batch-size or use more images")
    w_loader = BatchIterator(weights, batch_size, seed=seed, device=device)
    a_loader = BatchIterator(alpha, batch_size, seed=seed + 1, device=device) if alpha is not None else None
    steps = min(len(w_loader), len(a_loader)) if a_loader is not None else len(w_loader)
    return w_loader, a_loader, steps


@dataclass(frozen=True)
class SearchBatch:
    """One search step's data: a weight batch and, for a bilevel strategy, an alpha batch (uint8)."""

    train: Batch  # from the weight split
    val: Batch | None  # from the alpha split; None for a one-level strategy

    def __len__(self) -> int:
        return len(self.train)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> SearchBatch:
        val = None if self.val is None else self.val.to(device, non_blocking)
        return SearchBatch(self.train.to(device, non_blocking), val)


class PairedBatches:
    """The engine's loader for a search: step ``s`` pairs batch ``s`` of both splits' loaders."""

    def __init__(self, weights: BatchIterator, alpha: BatchIterator | None, steps: int):
        self.weights, self.alpha, self.steps = weights, alpha, steps

    def __len__(self) -> int:
        return self.steps

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        for loader in (self.weights, self.alpha):
            if loader is not None:
                loader.set_epoch(epoch, start_step)

    def iter_from(self, step: int) -> Iterator[SearchBatch]:
        weights = self.weights.iter_from(step)
        alphas = self.alpha.iter_from(step) if self.alpha is not None else None
        try:
            for _ in range(step, self.steps):
                yield SearchBatch(next(weights), None if alphas is None else next(alphas))
        finally:  # stop both read-ahead threads, also when the loop leaves early
            weights.close()
            if alphas is not None:
                alphas.close()


def augment(images: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """uint8 (B, 3, H, W) -> normalised float (B, 3, size, size): pad-crop + flip, per sample."""
    return normalize(pad_crop_flip(resize(as_float_image(images), size), PAD, generator), IMAGENET_MEAN, IMAGENET_STD)


def evaluation(images: Tensor, size: int) -> Tensor:
    """uint8 -> normalised float at ``size``, no randomness (for the held-out accuracy)."""
    return eval_transform(images, size)
