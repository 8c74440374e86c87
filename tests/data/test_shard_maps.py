"""Mapped shard bytes stay within data.cache_gb: the LRU rule, random access past the bound, and a streamed
epoch's resident memory, flat with the bound and growing to the store's size without it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vipr.config import apply_overrides
from vipr.data.augment import get_recipe
from vipr.data.encoded_loader import EncodedBatchIterator, StreamingBatchIterator
from vipr.data.encoded_source import as_dataset, open_encoded_folder
from vipr.data.shard_maps import ShardMaps
from vipr.data.stores import open_training_dataset
from vipr.pretrain import build_config, config_hash

SHARD_BYTES = 50_000  # about two noise JPEGs a shard: 160 shards


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """400 noise JPEGs of 128 x 128 px (15 KB each, so 8 MB of shards), two classes, 24 test images."""
    root = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(4):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(buffer, format="JPEG", quality=90)
        blobs.append(buffer.getvalue())
    for split, count in (("train", 400), ("test", 24)):
        for i in range(count):
            folder = root / split / f"c{i % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i}.jpg").write_bytes(blobs[i % len(blobs)])
    return root


def _open(photos: Path, cache: Path, max_mapped_bytes: int | None):
    return open_encoded_folder(str(photos), cache_dir=cache, progress=False, shard_bytes=SHARD_BYTES,
                               max_mapped_bytes=max_mapped_bytes)


def test_least_recently_read_maps_close_first_and_the_one_read_stays(tmp_path):
    sizes = {"a": 100, "b": 100, "c": 100, "big": 300}
    paths = {}
    for name, size in sizes.items():
        paths[name] = tmp_path / f"{name}.tar"
        paths[name].write_bytes((name.encode() * size)[:size])
    maps = ShardMaps(max_bytes=250)
    assert maps.read(paths["a"], 0, 1) == b"a" and maps.read(paths["b"], 1, 2) == b"bb"
    first = maps.maps[paths["a"]]
    maps.read(paths["a"], 0, 1)  # a read again: b is now the least recently read
    assert list(maps.maps) == [paths["b"], paths["a"]]
    maps.read(paths["c"], 0, 1)  # 300 > 250: b closes, not a
    assert list(maps.maps) == [paths["a"], paths["c"]] and maps.mapped_bytes == 200 and not first.closed
    assert maps.read(paths["big"], 299, 1) == b"g"  # larger than the bound alone: a, then c close, big stays
    assert list(maps.maps) == [paths["big"]] and maps.mapped_bytes == 300 and first.closed
    maps.read(paths["a"], 0, 1)
    assert list(maps.maps) == [paths["a"]] and maps.opened == 5  # big closes before a is mapped again
    maps.close()
    assert maps.maps == {} and maps.mapped_bytes == 0
    with pytest.raises(ValueError, match="at least 1 byte"):
        ShardMaps(max_bytes=0)


def test_random_access_past_the_bound_reads_the_same_bytes_and_crops(photos, tmp_path):
    bounded, unbounded = _open(photos, tmp_path / "cache", 3 * SHARD_BYTES), _open(photos, tmp_path / "cache", None)
    assert bounded.train.maps is bounded.test.maps  # one bound for the whole store
    order = np.random.default_rng(0).permutation(len(bounded.train))
    peak = 0
    for i in order:
        assert bounded.train.blob(int(i)) == unbounded.train.blob(int(i))
        peak = max(peak, bounded.train.maps.mapped_bytes)
    largest = max(p.stat().st_size for p in bounded.train.shards)  # a shard closes past SHARD_BYTES: a bit more
    assert peak <= 3 * SHARD_BYTES + largest and len(unbounded.train.maps.maps) == len(unbounded.train.shards)
    specs = get_recipe("moco_v2", 16)
    batches = []
    for encoded in (bounded, unbounded):
        loader = EncodedBatchIterator(as_dataset(encoded, 16, 1).train, 16, specs=specs, threads=1, seed=2)
        loader.set_epoch(0)
        batches.append(list(loader)[:4])
    assert all((a.crops[0] == b.crops[0]).all() for a, b in zip(*batches))


def _rss_file() -> int:
    """Bytes of file-backed pages mapped into this process (RssFile, /proc/self/status)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("RssFile:"))


def _stream_epoch(photos: Path, cache: Path, max_mapped_bytes: int | None) -> dict:
    """One streamed epoch: the store's and its shards' bytes, the most bytes and maps open at a step, and
    RssFile's largest growth over the epoch."""
    encoded = _open(photos, cache, max_mapped_bytes)
    loader = StreamingBatchIterator(as_dataset(encoded, 16, 1).train, 8, specs=get_recipe("moco_v2", 16), threads=1,
                                    seed=0, buffer=16)
    loader.set_epoch(0)
    next(iter(loader))  # the decoder's code and buffers, faulted in before the baseline
    encoded.train.maps.close()
    start, peak = _rss_file(), {"mapped": 0, "maps": 0, "rss_growth": 0}
    for _ in loader:
        peak = {"mapped": max(peak["mapped"], encoded.train.maps.mapped_bytes),
                "maps": max(peak["maps"], len(encoded.train.maps.maps)),
                "rss_growth": max(peak["rss_growth"], _rss_file() - start)}
    encoded.train.maps.close()
    sizes = [p.stat().st_size for p in encoded.train.shards]
    return {"store": sum(sizes), "largest_shard": max(sizes), "smallest_shard": min(sizes), **peak}


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="RssFile is read from /proc/self/status")
def test_streaming_ten_times_the_bound_keeps_resident_memory_flat(photos, tmp_path):
    budget = 500_000
    bounded = _stream_epoch(photos, tmp_path / "cache", budget)
    assert bounded["store"] >= 10 * budget
    assert bounded["mapped"] <= budget + bounded["largest_shard"]
    assert 2 <= bounded["maps"] <= budget // bounded["smallest_shard"] + 1  # several open, never all
    bound = budget + bounded["largest_shard"] + (256 << 10)  # 256 KiB: code pages faulted in meanwhile
    assert bounded["rss_growth"] <= bound
    unbounded = _stream_epoch(photos, tmp_path / "cache", None)  # the same run, every shard left mapped
    assert unbounded["rss_growth"] >= 0.8 * unbounded["store"] >= 10 * bounded["rss_growth"]


def test_cache_gb_reaches_the_store_and_leaves_the_config_hash(photos, tmp_path, monkeypatch):
    monkeypatch.setenv("VIPR_CACHE", str(tmp_path / "cache"))
    dataset, kind = open_training_dataset(str(photos), store="encoded", store_size=None, image_size=16, cache_gb=0.002,
                                          progress=False)
    assert kind == "encoded" and dataset.train.images.encoded.maps.max_bytes == 2_000_000
    assert dataset.test.images.encoded.maps is dataset.train.images.encoded.maps
    default, other = build_config({}), build_config(apply_overrides({}, ["data.cache_gb=0.5"]))
    assert other.data.cache_gb == 0.5 and config_hash(other) == config_hash(default)  # a resume may change it
