"""Scale on paper, checked here: bytes per image in each store and decode cost per image, measured on this CPU,
carried to ImageNet-1k and to a 100 M-image set. Writes docs/scale.md and prints one JSON line.

Measured here, on JPEG photos this script writes (the development photographs, benchmarks/photo_sets.py,
cut at 500 x 375, ImageNet's most common size, quality 90):

- bytes per image: the JPEG (the encoded store keeps it) against 3 x 256^2 (the raw store at 256 px);
- CPU decode cost per image, one thread: a full decode + 224-px crop-resize (what a DataLoader worker
  does) and vipr's crop-at-decode for MoCo v2's two views (DCT-reduced decode when the crops allow);
- the raw store's read: a (B, 3, 256, 256) uint8 fancy-index copy per image.

The GPU decode (nvJPEG through torchvision.io.decode_jpeg on CUDA) is not measured: this machine has
no GPU; the page says so rather than quoting a figure from elsewhere.

Usage: PYTHONPATH=src python benchmarks/scale.py [--images 64]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from benchmarks_common import machine_info  # noqa: E402
from encoded_pipeline import PHOTOS  # noqa: E402
from photo_sets import _skimage, _sklearn  # noqa: E402

from vipr.data.augment import get_recipe  # noqa: E402
from vipr.data.decode import decode_crops, draw_boxes  # noqa: E402
from vipr.pretrain import DataConfig  # noqa: E402

DOC = HERE.parent / "docs" / "scale.md"
STREAM_RECORD = HERE / "results" / "stream_memory.json"  # benchmarks/stream_memory.py: a streamed epoch's memory
SHAPE, SIDE, RAW_SIDE = (500, 375), 224, 256
SETS = {"ImageNet-1k": 1_281_167, "100 M-image set": 100_000_000}
IMAGENET_JPEG_GB = 140  # the train set's JPEG files as distributed, about 140 GB (the figure)


def photos(count: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    sources = [(_skimage(n) if kind == "skimage" else _sklearn(n)) for kind, n in PHOTOS]
    out = []
    for i in range(count):
        photo = sources[i % len(sources)]
        scale = max(SHAPE[0] / photo.width, SHAPE[1] / photo.height) * rng.uniform(1.0, 1.5)
        big = photo.resize((int(photo.width * scale) + 1, int(photo.height * scale) + 1), Image.Resampling.BICUBIC)
        x, y = rng.integers(0, big.width - SHAPE[0] + 1), rng.integers(0, big.height - SHAPE[1] + 1)
        buffer = io.BytesIO()
        big.crop((x, y, x + SHAPE[0], y + SHAPE[1])).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def ms_per_image(fn, items, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            fn(item)
        times.append((time.perf_counter() - start) / len(items) * 1e3)
    return round(statistics.median(times), 3)


def full_decode_crop(blob: bytes, boxes: np.ndarray) -> None:
    """A DataLoader worker's path: decode the whole JPEG, then crop-resize each view."""
    with Image.open(io.BytesIO(blob)) as im:
        im = im.convert("RGB")
        for top, left, h, w in boxes:
            im.resize((SIDE, SIDE), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))


def measure(count: int) -> dict:
    torch.set_num_threads(1)
    blobs = photos(count)
    specs = get_recipe("moco_v2", SIDE)
    boxes = draw_boxes([SHAPE[1]] * count, [SHAPE[0]] * count, [s.scale for s in specs], specs[0].ratio,
                       torch.Generator().manual_seed(0))
    pairs = list(zip(blobs, boxes))
    raw = np.random.default_rng(0).integers(0, 256, (512, 3, RAW_SIDE, RAW_SIDE), dtype=np.uint8)
    rows = np.random.default_rng(1).permutation(512)[:128]
    read_ms = ms_per_image(lambda _: raw[np.sort(rows)], [None] * 8) / 128
    return {
        "jpeg_kb": round(sum(map(len, blobs)) / count / 1e3, 1),
        "raw_kb": round(3 * RAW_SIDE * RAW_SIDE / 1e3, 1),
        "full_decode_ms": ms_per_image(lambda p: full_decode_crop(*p), pairs),
        "crop_at_decode_ms": ms_per_image(lambda p: decode_crops(p[0], p[1], [SIDE, SIDE]), pairs),
        "raw_read_ms": round(read_ms, 4),
    }


def streaming_lines(stream: dict | None) -> list[str]:
    """The streamed-memory sentence, from benchmarks/results/stream_memory.json (nothing without it)."""
    if stream is None:
        return []
    bounded, unbounded = (run["rss_file_peak_mb"] - run["rss_file_start_mb"] for run in stream["runs"])
    cache_gb = stream["runs"][0]["cache_gb"]
    return ["", f"Streaming (`data.shuffle_buffer=N`) keeps at most `data.cache_gb` of shards memory-mapped (in GB, "
            f"default {DataConfig().cache_gb:g}), least recently read closed first, so resident memory stays flat: "
            f"one epoch over a {stream['store_mb']:,.0f} MB store with `data.cache_gb={cache_gb:g}` "
            f"({cache_gb * 1e3 / stream['store_mb']:.0%} of it) grew RssFile by {bounded:,.1f} MB, with no bound by "
            f"{unbounded:,.1f} MB (`benchmarks/stream_memory.py`, {stream['date']}; [benchmarks](benchmarks.md))."]


def render(m: dict, info: dict, stream: dict | None = None) -> str:
    rate = 1000.0  # images/s of one training process, the unit the bandwidth rows are given in
    lines = [
        "# Data at scale: bytes, bandwidth and decode cost", "",
        f"Generated by `python benchmarks/scale.py` on {info['cpu']} ({info['cores']} cores), torch {info['torch']}, "
        f"{info['date']}. Measured here on {SHAPE[0]} x {SHAPE[1]} JPEG photographs at quality 90 "
        f"({m['jpeg_kb']} KB each); the rest is arithmetic on those figures.", "",
        "## Bytes per image and per dataset", "",
        "| store | bytes / image | ImageNet-1k (1.28 M) | 100 M images |", "|---|---:|---:|---:|",
        f"| raw, 256 px | {m['raw_kb']} KB | {m['raw_kb'] * SETS['ImageNet-1k'] / 1e6:,.0f} GB | "
        f"{m['raw_kb'] * 1e8 / 1e9:,.1f} TB |",
        f"| encoded (JPEG kept), this page's photos | {m['jpeg_kb']} KB | {m['jpeg_kb'] * SETS['ImageNet-1k'] / 1e6:,.0f} GB | "
        f"{m['jpeg_kb'] * 1e8 / 1e9:,.1f} TB |",
        f"| encoded, ImageNet's own JPEGs | {IMAGENET_JPEG_GB * 1e6 / SETS['ImageNet-1k']:.0f} KB | {IMAGENET_JPEG_GB} GB | |",
        "", "The raw store of ImageNet-1k at 256 px is larger than its JPEG files; of a 100 M-image set it is about "
        f"{m['raw_kb'] * 1e8 / 1e9:.0f} TB, beyond most single disks. `data.store=auto` picks encoded once the raw store "
        "would pass `data.raw_budget_gb` (default a quarter of the free disk).", "",
        "## Read bandwidth per training process", "",
        f"At {rate:,.0f} images/s (a unit: scale by the images/s a GPU reaches on your model):", "",
        "| store | MB/s read | shards of 256 MiB read per minute |", "|---|---:|---:|",
        f"| raw, 256 px | {m['raw_kb'] * rate / 1e3:,.0f} | {m['raw_kb'] * rate * 60 / 268_435.456:,.0f} |",
        f"| encoded | {m['jpeg_kb'] * rate / 1e3:,.0f} | {m['jpeg_kb'] * rate * 60 / 268_435.456:,.0f} |", "",
        "## Decode cost per image on the CPU (one thread, measured)", "",
        "| path | ms / image | images/s per core | cores for 1,000 images/s |", "|---|---:|---:|---:|",
    ]
    for name, key in (("full decode, then two 224-px crop-resizes (a DataLoader worker)", "full_decode_ms"),
                      ("vipr crop-at-decode, two views (DCT-reduced when the crops allow)", "crop_at_decode_ms"),
                      ("raw store read (uint8 copy, no decode)", "raw_read_ms")):
        ms = m[key]
        lines.append(f"| {name} | {ms:.3f} | {1e3 / ms:,.0f} | {ms:.1f} |")
    lines += [
        "", "GPU decode (nvJPEG via `torchvision.io.decode_jpeg(..., device='cuda')`): not measured, no GPU here.", "",
        "## What becomes the bottleneck first", "",
        f"- **Disk**: at 1,000 images/s a raw 256-px store needs {m['raw_kb']:.0f} MB/s per process and an encoded one "
        f"{m['jpeg_kb']:.0f} MB/s: an NVMe disk (2-3 GB/s) feeds about {2500 / m['raw_kb']:.0f} such processes from a raw "
        f"store, {2500 / m['jpeg_kb']:.0f} from an encoded one; a network volume at 250 MB/s feeds one raw or "
        f"{250 / m['jpeg_kb']:.0f} encoded.",
        f"- **CPU decode**: {m['crop_at_decode_ms']:.1f} ms an image means {m['crop_at_decode_ms']:.0f} cores for every "
        "1,000 images/s, so a node whose GPUs together train at R images/s needs R / "
        f"{1e3 / m['crop_at_decode_ms']:.0f} cores for JPEG decoding alone; past the node's cores, decoding moves to "
        "the GPU (nvJPEG) or the data to the raw store, which needs no decode.",
        "- **DCT-reduced decode** pays only when crops are much larger than the training side: at "
        f"{SHAPE[0]} x {SHAPE[1]} most of MoCo v2's crops (20-100% of the area) are under 2 x 224 px, so crop-at-decode "
        f"costs {m['crop_at_decode_ms'] / m['full_decode_ms']:.0%} of a full decode here; on multi-megapixel photos "
        "libjpeg's 1/2-1/8 scaling cuts the decode several-fold.",
        "- **Disk space**: a 100 M-image set fits as JPEGs, not as a raw store.", "",
        "Shards per rank: a 100 M-image set of 50 KB images in 256 MiB shards is about "
        f"{1e8 * 50e3 / 268_435_456:,.0f} shards, {1e8 * 50e3 / 268_435_456 / 64:,.0f} per rank on 64 ranks.",
        *streaming_lines(stream),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    args = parser.parse_args()
    info = machine_info()
    m = measure(args.images)
    stream = json.loads(STREAM_RECORD.read_text()) if STREAM_RECORD.is_file() else None
    DOC.write_text(render(m, info, stream), encoding="utf-8")
    print(json.dumps({"benchmark": "scale", **info, **m}))


if __name__ == "__main__":
    main()
