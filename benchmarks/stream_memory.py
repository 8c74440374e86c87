"""Resident memory of a streamed epoch over an encoded store ten times larger than ``data.cache_gb``.

The store: synthetic JPEGs this script writes (uniform noise, 512 x 512 px, quality 90: a few
distinct images, each written as many files), encoded into shards of ``--shard-mb`` MiB. One
epoch is streamed through the loader ``vipr pretrain`` builds for ``data.store=encoded
data.shuffle_buffer=N`` (``vipr.pretrain.training_loader``: ``StreamingBatchIterator``, MoCo v2's
two views cut at decode), twice: with the shards kept mapped bounded at a tenth of the store
(``data.cache_gb``, passed as the store's ``max_mapped_bytes`` as ``vipr pretrain`` does), and
with no bound. Every step samples RssFile (file pages mapped into the process: the shards' pages
read through open maps) and RssAnon (the process's own memory) from /proc/self/status, and the
bytes and number of maps open, and the maps opened over the epoch (a shard read again after its map
closed is mapped again). Prints one JSON line.

Usage: PYTHONPATH=src python benchmarks/stream_memory.py [--store-mb 300] [--shard-mb 8]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from benchmarks_common import machine_info  # noqa: E402

from vipr.data.augment import get_recipe  # noqa: E402
from vipr.data.encoded_source import as_dataset, open_encoded_folder  # noqa: E402
from vipr.pretrain import training_loader  # noqa: E402

SIDE, PHOTO_PX, DISTINCT = 64, 512, 8  # training crop side; written image side; distinct images among the files
# images a step; shuffle buffer (data.shuffle_buffer): 128 x 236 KB spans about the bound's 30 MB, as
# 10,000 ImageNet JPEGs (110 KB) span about the default data.cache_gb=1
BATCH, BUFFER = 32, 128


def write_jpegs(root: Path, store_bytes: int) -> tuple[int, float]:
    """Noise JPEGs in two class folders until their bytes reach ``store_bytes``; (files, KB a file)."""
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(DISTINCT):
        buffer = io.BytesIO()
        noise = rng.integers(0, 256, (PHOTO_PX, PHOTO_PX, 3), dtype=np.uint8)
        Image.fromarray(noise).save(buffer, format="JPEG", quality=90)
        blobs.append(buffer.getvalue())
    count = int(np.ceil(store_bytes / np.mean([len(b) for b in blobs])))
    for i in range(count):
        folder = root / "train" / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.jpg").write_bytes(blobs[i % DISTINCT])
    return count, sum(len(blobs[i % DISTINCT]) for i in range(count)) / count / 1e3


def memory() -> dict[str, int]:
    """RssFile and RssAnon of this process, bytes."""
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return {key: int(fields[key].split()[0]) * 1024 for key in ("RssFile", "RssAnon")}


def stream_epoch(root: Path, cache: Path, shard_bytes: int, cache_gb: float | None) -> dict:
    """One streamed epoch with at most ``cache_gb`` GB of shards mapped: per-step memory, start, peak, final."""
    encoded = open_encoded_folder(str(root), cache_dir=cache, progress=False, shard_bytes=shard_bytes,
                                  max_mapped_bytes=None if cache_gb is None else int(cache_gb * 1e9))
    train = as_dataset(encoded, SIDE, 1).train
    loader = training_loader(train, BATCH, get_recipe("moco_v2", SIDE), seed=0, shuffle_buffer=BUFFER)
    loader.set_epoch(0)
    next(iter(loader))  # the decoder's code and buffers, faulted in before the start is read
    maps = encoded.train.maps
    maps.close()
    start, samples, peak_mapped, peak_maps, opened = memory(), [], 0, 0, maps.opened
    began = time.perf_counter()
    for _ in loader:
        samples.append(memory())
        peak_mapped, peak_maps = max(peak_mapped, maps.mapped_bytes), max(peak_maps, len(maps.maps))
    seconds = time.perf_counter() - began
    maps.close()
    mb = lambda n: round(n / 1e6, 1)  # noqa: E731
    return {"cache_gb": cache_gb, "steps": len(samples), "seconds": round(seconds, 1),
            "images_per_s": round(len(samples) * BATCH / seconds, 1),
            "peak_mapped_mb": mb(peak_mapped), "peak_open_maps": peak_maps, "maps_opened": maps.opened - opened,
            **{f"{name}_{when}_mb": mb(value) for name, key in (("rss_file", "RssFile"), ("rss_anon", "RssAnon"))
               for when, value in (("start", start[key]), ("peak", max(s[key] for s in samples)),
                                   ("final", samples[-1][key]))}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store-mb", type=float, default=300, help="bytes of JPEGs written (MB)")
    parser.add_argument("--shard-mb", type=float, default=8, help="shard size (MiB); vipr's default is 256")
    args = parser.parse_args()
    torch.set_num_threads(1)
    shard_bytes = int(args.shard_mb * (1 << 20))
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "noise", Path(tmp) / "cache"
        files, jpeg_kb = write_jpegs(root, int(args.store_mb * 1e6))
        shards = open_encoded_folder(str(root), cache_dir=cache, progress=False, shard_bytes=shard_bytes).train.shards
        store = sum(p.stat().st_size for p in shards)
        cache_gb = round(store / 10 / 1e9, 4)
        runs = [stream_epoch(root, cache, shard_bytes, gb) for gb in (cache_gb, None)]
    print(json.dumps({"benchmark": "stream_memory", **machine_info(), "cores_used": len(os.sched_getaffinity(0)),
                      "images": files, "jpeg_kb": round(jpeg_kb, 1), "photo": f"{PHOTO_PX}x{PHOTO_PX} noise JPEG q90",
                      "store_mb": round(store / 1e6, 1), "shards": len(shards), "shard_mb": args.shard_mb,
                      "side": SIDE, "batch": BATCH, "shuffle_buffer": BUFFER, "runs": runs}))


if __name__ == "__main__":
    main()
