"""Training batches from the encoded store: each view's crop taken at decode (CPU threads, or nvJPEG on a GPU).

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
from vipr.data.decode import CropDecoder, DeviceCropDecoder, draw_boxes
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
        sides = [spec.size for spec in specs]
        # on a GPU, nvJPEG decodes there; elsewhere PIL on CPU threads, with DCT-reduced decodes
        self.decoder = DeviceCropDecoder(sides, self.device) if self.device.type == "cuda" else CropDecoder(sides, threads)

    def _read(self, idx: np.ndarray, step: int) -> Batch:
        seed = np.random.SeedSequence([self.seed, self.epoch, self.rank, step]).generate_state(1, np.uint64)[0]
        generator = torch.Generator().manual_seed(int(seed))
        index = self.encoded.index
        boxes = draw_boxes(index["height"][idx], index["width"][idx], self.scales, self.ratio, generator)
        crops = tuple(self.decoder([self.encoded.blob(int(i)) for i in idx], boxes))
        return Batch(crops[0], torch.from_numpy(self.labels[idx]), torch.from_numpy(idx.copy()), crops)


class StreamingBatchIterator(EncodedBatchIterator):
    """Shards read in sequence, never at random: the epoch's order is a per-epoch permutation of the
    shards, dealt round-robin to the ranks, each rank's images shuffled through a buffer of
    ``buffer`` images (WebDataset's scheme).

    The order is a pure function of (seed, epoch, rank), computed from the index alone, so the
    checkpoint's (epoch, step) is the whole stream position: a resumed run replays the index
    stream (no decoding) to the same shard, offset and buffer state. Every rank gets the same
    number of steps: the images of its ``S // world_size`` smallest possible shards.
    """

    def __init__(self, split: ImageSplit, batch_size: int, *, buffer: int, **kwargs):
        super().__init__(split, batch_size, **kwargs)
        if buffer < 1:
            raise ValueError(f"the shuffle buffer must hold at least 1 image, got {buffer}")
        shard_of = self.encoded.index["shard"]
        counts = np.bincount(shard_of, minlength=len(self.encoded.shards))
        if len(counts) < self.world_size:
            raise ValueError(f"{len(counts)} shard(s) for {self.world_size} ranks: rebuild the store with smaller "
                             "shards or train with fewer processes")
        # each shard's images in file order, from one stable sort (not a scan of the index per shard)
        by_shard = np.argsort(shard_of, kind="stable")
        self.buffer, self.members = buffer, np.split(by_shard, np.cumsum(counts)[:-1])
        self.per_rank = int(np.sort(counts)[:len(counts) // self.world_size].sum())
        self.steps = self.per_rank // batch_size
        if self.steps == 0:
            raise ValueError(f"{self.per_rank} images per rank give no batch of {batch_size}; lower batch_size")

    def shard(self) -> np.ndarray:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.members))
        stream = np.concatenate([self.members[s] for s in order[self.rank::self.world_size]])
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, 1])
        return buffer_shuffle(stream, self.buffer, rng)[:self.per_rank]


def buffer_shuffle(stream: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``stream`` reordered through a shuffle buffer of ``size``: each arriving item takes the place of a
    random buffered one, which is emitted; the last ``size`` come out in random order."""
    out, buffer = np.empty_like(stream), list(stream[:size])
    picks = rng.integers(0, np.iinfo(np.int64).max, len(stream))
    for n, item in enumerate(stream[size:]):
        j = int(picks[n] % len(buffer))
        out[n], buffer[j] = buffer[j], item
    tail = np.asarray(buffer, dtype=stream.dtype)
    out[len(stream) - len(tail):] = tail[rng.permutation(len(tail))]
    return out
