"""BatchIterator: coverage, ordering, DDP shards, resume, and the prefetch thread."""

import threading

import numpy as np
import pytest
import torch

from vipr.data.loader import BatchIterator
from vipr.data.types import ImageSplit


def numbered_split(n=103):
    """Image i carries i in its first pixel (mod 256) and as its label, to check batches line up."""
    images = np.zeros((n, 3, 4, 4), np.uint8)
    images[:, 0, 0, 0] = np.arange(n) % 256
    return ImageSplit(images, np.arange(n, dtype=np.int64))


def epoch_indices(it):
    batches = list(it)
    for batch in batches:
        idx, images, labels = batch.indices, batch.images, batch.labels
        assert idx.dtype == torch.int64 and images.dtype == torch.uint8 and labels.dtype == torch.int64
        assert torch.equal(labels, idx) and torch.equal(images[:, 0, 0, 0].long(), idx % 256)
    return [b.indices.tolist() for b in batches]


def test_every_index_once_per_epoch():
    it = BatchIterator(numbered_split(103), 10, drop_last=False)
    batches = epoch_indices(it)
    assert len(batches) == len(it) == 11 and len(batches[-1]) == 3
    assert sorted(sum(batches, [])) == list(range(103))
    dropped = BatchIterator(numbered_split(103), 10, drop_last=True)
    flat = sum(epoch_indices(dropped), [])
    assert len(dropped) == 10 and len(flat) == len(set(flat)) == 100


def test_order_changes_per_epoch_and_is_reproducible():
    it = BatchIterator(numbered_split(), 8, seed=5)
    it.set_epoch(0)
    first = epoch_indices(it)
    it.set_epoch(1)
    second = epoch_indices(it)
    assert first != second
    again = BatchIterator(numbered_split(), 8, seed=5)
    again.set_epoch(1)
    assert epoch_indices(again) == second
    unshuffled = BatchIterator(numbered_split(), 8, shuffle=False)
    assert sum(epoch_indices(unshuffled), []) == list(range(96))


@pytest.mark.parametrize("drop_last", [True, False])
def test_ddp_shards_are_disjoint_and_cover(drop_last):
    world = 3
    ranks = [BatchIterator(numbered_split(100), 8, rank=r, world_size=world, seed=1, drop_last=drop_last)
             for r in range(world)]
    for it in ranks:
        it.set_epoch(4)
    shards = [sum(epoch_indices(it), []) for it in ranks]
    assert len({len(it) for it in ranks}) == 1  # every rank runs the same number of steps
    if drop_last:
        assert len(ranks[0]) == 4 and all(len(s) == 32 for s in shards)
        assert len(set().union(*map(set, shards))) == 96  # disjoint
    else:
        assert len(ranks[0]) == 5 and all(len(s) == 34 for s in shards)  # 100 padded to 102 by wrap-around
        assert set().union(*map(set, shards)) == set(range(100))
        assert sum(len(s) for s in shards) - 100 == 2


def test_resume_from_step_gives_the_remaining_batches():
    it = BatchIterator(numbered_split(), 7, seed=2)
    it.set_epoch(3)
    full = epoch_indices(it)
    resumed = BatchIterator(numbered_split(), 7, seed=2)
    resumed.set_epoch(3, start_step=5)
    assert epoch_indices(resumed) == full[5:]
    assert epoch_indices(resumed.iter_from(len(resumed))) == []


def test_early_break_stops_the_reader_thread():
    before = threading.active_count()
    it = BatchIterator(numbered_split(), 4, prefetch=1)
    for _ in it:
        break
    assert threading.active_count() == before


def test_too_small_split_is_an_error():
    with pytest.raises(ValueError, match="no batch of 64"):
        BatchIterator(numbered_split(10), 64)


def test_reader_errors_reach_the_caller():
    class Broken(np.ndarray):
        def __getitem__(self, key):
            raise OSError("disk gone")

    split = numbered_split(20)
    split.images = split.images.view(Broken)
    with pytest.raises(OSError, match="disk gone"):
        list(BatchIterator(split, 4))
