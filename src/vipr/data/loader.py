"""Batches of uint8 images straight from the (memory-mapped) store, sharded for DDP, resumable.

No per-image Python work and no worker processes: a batch is one sorted fancy-index read of the
store array (sequential on disk), put back into the drawn order, and a background thread reads
the next batch while the current one is being trained on. Augmentation happens later, on the
device, in batches (DESIGN.md, principle 1).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np
import torch

from vipr.data.batch import Batch
from vipr.data.types import ImageSplit

_END = object()  # producer -> consumer: the epoch is done


class BatchIterator:
    """Yield the batches (``vipr.data.batch.Batch``: uint8 images, labels, indices) of one split, one
    rank's share of each epoch.

    Every epoch draws one permutation from ``(seed, epoch)``, identical on all ranks; rank ``r``
    takes every ``world_size``-th index from position ``r`` (as ``DistributedSampler``), so step
    ``s`` of all ranks together covers one contiguous block of the permutation. Ranks always get
    the same number of steps: ``drop_last=True`` drops the tail of the permutation and the last
    partial batch, ``drop_last=False`` pads the permutation by wrapping around and keeps a short
    last batch.

    The batch's three tensors are moved to ``device``. To resume an interrupted epoch, call
    ``set_epoch(epoch, start_step=next_step)`` (or iterate ``iter_from(next_step)``).

    Examples:
        >>> it = BatchIterator(ds.train, 256, seed=0)
        >>> for epoch in range(10):
        ...     it.set_epoch(epoch)
        ...     for batch in it: ...  # batch.images (256, 3, H, W) uint8
    """

    def __init__(self, split: ImageSplit, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = True, rank: int = 0, world_size: int = 1,
                 device: torch.device | str = "cpu", prefetch: int = 2):
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size or prefetch < 1:
            raise ValueError(f"need batch_size >= 1, world_size >= 1, 0 <= rank < world_size, prefetch >= 1; got "
                             f"batch_size={batch_size}, rank={rank}, world_size={world_size}, prefetch={prefetch}")
        self.split, self.batch_size, self.shuffle, self.seed = split, batch_size, shuffle, seed
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size
        self.device, self.prefetch = torch.device(device), prefetch
        self.labels = np.asarray(split.labels, dtype=np.int64)
        n = len(split)
        self.per_rank = n // world_size if drop_last else -(-n // world_size)  # samples per rank per epoch
        self.steps = self.per_rank // batch_size if drop_last else -(-self.per_rank // batch_size)
        if self.steps == 0:
            raise ValueError(f"a split of {n} images gives no batch of {batch_size} on each of {world_size} "
                             f"rank(s); lower batch_size or pass drop_last=False")
        self.epoch, self.start_step = 0, 0

    def __len__(self) -> int:
        """Steps per epoch for this rank (the same on every rank)."""
        return self.steps

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select the epoch's order; iteration then starts at ``start_step`` (to resume mid-epoch)."""
        if not 0 <= start_step <= self.steps:
            raise ValueError(f"start_step must be in 0..{self.steps}, got {start_step}")
        self.epoch, self.start_step = epoch, start_step

    def shard(self) -> np.ndarray:
        """This rank's sample indices for the current epoch, in drawn order, int64 (per_rank,)."""
        n = len(self.split)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(n)
        else:
            order = np.arange(n)
        total = self.per_rank * self.world_size
        order = np.resize(order, total)  # drop_last: cut the tail; otherwise wrap around to pad
        return order[self.rank::self.world_size].astype(np.int64)

    def __iter__(self) -> Iterator[Batch]:
        return self.iter_from(self.start_step)

    def iter_from(self, step: int) -> Iterator[Batch]:
        """Batches ``step, step + 1, ...`` of the current epoch, read one batch ahead in a thread."""
        if not 0 <= step <= self.steps:
            raise ValueError(f"step must be in 0..{self.steps}, got {step}")
        shard, b = self.shard(), self.batch_size
        return self._prefetched([(s, shard[s * b:(s + 1) * b]) for s in range(step, self.steps)])

    def _prefetched(self, blocks: list[tuple[int, np.ndarray]]) -> Iterator[Batch]:
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        thread = threading.Thread(target=self._produce, args=(blocks, ready, stop), daemon=True,
                                  name="vipr-batch-prefetch")
        thread.start()
        try:
            while (item := ready.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item.to(self.device, non_blocking=True)
        finally:  # also on break / garbage collection: stop the reader before returning
            stop.set()
            thread.join()

    def _produce(self, blocks: list[tuple[int, np.ndarray]], ready: queue.Queue, stop: threading.Event) -> None:
        pin = self.device.type == "cuda"  # pinned host memory makes the copy asynchronous
        try:
            for step, idx in blocks:
                batch = self._read(idx, step)
                if pin:
                    batch = batch.pin_memory()
                if not _put(ready, batch, stop):
                    return
            _put(ready, _END, stop)
        except BaseException as e:  # noqa: BLE001 -- re-raised in the consuming thread
            _put(ready, e, stop)

    def _read(self, idx: np.ndarray, step: int) -> Batch:
        """Batch ``step`` of the epoch, in drawn order (see :func:`read_rows`)."""
        labels = self.labels[idx]  # fancy indexing copies: contiguous and owned
        return Batch(torch.from_numpy(read_rows(self.split.images, idx)), torch.from_numpy(labels), torch.from_numpy(idx.copy()))


def read_rows(images: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``images[idx]`` as an owned array in ``idx`` order, read from the store in ascending order.

    Ascending indices make memory-map reads sequential; the rows are scattered back afterwards.
    """
    order = np.argsort(idx, kind="stable")
    out = np.empty((len(idx), *images.shape[1:]), images.dtype)
    out[order] = images[idx[order]]
    return out


def _put(ready: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put ``item`` unless the consumer has gone away; False if it has."""
    while not stop.is_set():
        try:
            ready.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False
