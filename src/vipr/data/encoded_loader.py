"""Training batches from the encoded store: each view's crop taken at decode, on CPU threads.

The same epochs, shards, steps and mid-epoch resume as ``BatchIterator`` (it is one), with the
batch read differently: the images' encoded bytes are cut into one crop per view of the
method's recipe (boxes by torchvision's rule, ``vipr.data.decode``), so ``Batch.crops`` holds
(B, 3, S_v, S_v) uint8 batches and the device pipeline adds only flips and colour. The boxes
of step ``s`` come from a generator seeded by (seed, epoch, rank, s): the prefetch thread never
touches the run's generator, and a resumed run cuts the same crops.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vipr.data.augment import ViewSpec
from vipr.data.batch import Batch
from vipr.data.decode import CropDecoder, draw_boxes
from vipr.data.encoded_source import DecodedImages
from vipr.data.loader import BatchIterator
from vipr.data.types import ImageSplit


class EncodedBatchIterator(BatchIterator):
    """``BatchIterator`` over a split of ``DecodedImages``, yielding batches with ``crops`` per view."""

    def __init__(self, split: ImageSplit, batch_size: int, *, specs: Sequence[ViewSpec], threads: int, **kwargs):
        if not isinstance(split.images, DecodedImages):
            raise TypeError("EncodedBatchIterator reads a split of the encoded store (vipr.data.encoded_source)")
        ratios = {spec.ratio for spec in specs}
        if len(ratios) != 1:
            raise ValueError(f"the views of one batch must share one crop aspect-ratio range, got {sorted(ratios)}")
        super().__init__(split, batch_size, **kwargs)
        self.encoded = split.images.encoded
        self.scales, self.ratio = [spec.scale for spec in specs], ratios.pop()
        self.decoder = CropDecoder([spec.size for spec in specs], threads)

    def _read(self, idx: np.ndarray, step: int) -> Batch:
        seed = np.random.SeedSequence([self.seed, self.epoch, self.rank, step]).generate_state(1, np.uint64)[0]
        generator = torch.Generator().manual_seed(int(seed))
        index = self.encoded.index
        boxes = draw_boxes(index["height"][idx], index["width"][idx], self.scales, self.ratio, generator)
        crops = tuple(self.decoder([self.encoded.blob(int(i)) for i in idx], boxes))
        return Batch(crops[0], torch.from_numpy(self.labels[idx]), torch.from_numpy(idx.copy()), crops)
