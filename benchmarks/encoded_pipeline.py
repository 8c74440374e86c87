"""224-px data pipeline from a folder of JPEG photos: vipr's encoded store against torchvision's ImageFolder.

Both sides produce MoCo v2's two augmented, normalised 224-px views per image from the same
JPEG files, measured one after the other in this run:

- ``vipr``: the encoded store (the files' bytes in tar shards), ``EncodedBatchIterator`` cutting
  each view's crop at decode on a thread pool (DCT-reduced JPEG decode), then flips and colour
  in batches (``ViewMaker.from_crops``);
- ``torchvision``: ``ImageFolder`` with the same recipe as per-image transforms.v2 (decode,
  RandomResizedCrop, flip, jitter, grayscale, blur) in DataLoader workers, one per core.

The photos are written by this script: 640 x 480 crops of the development set's photographs
(scikit-image / scikit-learn samples, benchmarks/photo_sets.py), saved as JPEG quality 90.

End to end, both pipelines feed the same training step, which shares the cores with them. So
it also times vipr's MoCo v2 step (ResNet-18, 224 px, batch 16, fp32, every core;
pretrain_throughput.time_vipr) and reports the most any data pipeline could gain end to end
over torchvision's: ``1 + step_img_s / torchvision_img_s`` (core-seconds an image: the step's
plus torchvision's pipeline's, against the step's alone with a free pipeline).
Prints one JSON line: images/s of each (two views an image), their ratio, the step and the bound.

Usage: PYTHONPATH=src python benchmarks/encoded_pipeline.py [--images 256] [--batch 64] [--batches 6]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from augment import torchvision_transform  # noqa: E402  (sibling script: MoCo v2 in transforms.v2)
from benchmarks_common import machine_info  # noqa: E402
from photo_sets import _skimage, _sklearn  # noqa: E402

from vipr.data.augment import get_recipe  # noqa: E402
from vipr.data.encoded_loader import EncodedBatchIterator  # noqa: E402
from vipr.data.encoded_source import as_dataset, open_encoded_folder  # noqa: E402
from vipr.data.views import ViewMaker  # noqa: E402

PHOTOS = [("skimage", n) for n in ("camera", "coins", "clock", "page", "text", "moon")] + \
         [("sklearn", n) for n in ("china", "flower")]
SIDE, SHAPE = 224, (640, 480)  # training crop; written photo width x height


def write_photos(root: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    sources = [(_skimage(n) if kind == "skimage" else _sklearn(n)) for kind, n in PHOTOS]
    for i in range(count):
        label, photo = i % len(sources), sources[i % len(sources)]
        scale = max(SHAPE[0] / photo.width, SHAPE[1] / photo.height) * rng.uniform(1.0, 1.5)
        big = photo.resize((int(photo.width * scale) + 1, int(photo.height * scale) + 1), Image.Resampling.BICUBIC)
        x, y = rng.integers(0, big.width - SHAPE[0] + 1), rng.integers(0, big.height - SHAPE[1] + 1)
        folder = root / f"c{label}"
        folder.mkdir(parents=True, exist_ok=True)
        big.crop((x, y, x + SHAPE[0], y + SHAPE[1])).save(folder / f"{i}.jpg", quality=90)


def timed(run, batch: int, batches: int) -> float:
    """Median images/s over 3 runs of ``batches`` batches (each run starts warm)."""
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        run(batches)
        rates.append(batch * batches / (time.perf_counter() - start))
    return round(statistics.median(rates), 1)


def bench_vipr(root: Path, batch: int, batches: int, cores: int) -> float:
    torch.set_num_threads(1)  # the batched flips/colour; the decode threads take the other cores
    dataset = as_dataset(open_encoded_folder(str(root), progress=False), 256, max(1, cores))
    specs = get_recipe("moco_v2", SIDE)
    loader = EncodedBatchIterator(dataset.train, batch, specs=specs, threads=cores, seed=0)
    views = ViewMaker(tuple(specs), torch.Generator().manual_seed(0))
    epoch = [0]

    def run(n: int) -> None:
        done = 0
        while done < n:
            loader.set_epoch(epoch[0])
            epoch[0] += 1
            for b in loader:
                views.from_crops(b.crops)
                done += 1
                if done == n:
                    break

    run(1)
    return timed(run, batch, batches)


class TwoViews:
    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image):
        return self.transform(image), self.transform(image)


def bench_torchvision(root: Path, batch: int, batches: int, cores: int) -> float:
    torch.set_num_threads(1)
    folder = torchvision.datasets.ImageFolder(str(root), transform=TwoViews(torchvision_transform(SIDE)))
    loader = torch.utils.data.DataLoader(folder, batch_size=batch, shuffle=True, num_workers=cores,
                                         persistent_workers=True, drop_last=True)
    stream = [iter(loader)]

    def run(n: int) -> None:
        for _ in range(n):
            try:
                next(stream[0])
            except StopIteration:
                stream[0] = iter(loader)
                next(stream[0])

    run(cores)  # start the workers
    return timed(run, batch, batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=6)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "photos"
        write_photos(root, args.images)
        os.environ["VIPR_CACHE"] = str(Path(tmp) / "cache")
        jpeg_kb = sum(f.stat().st_size for f in root.rglob("*.jpg")) / args.images / 1e3
        vipr = bench_vipr(root, args.batch, args.batches, cores)
        tv = bench_torchvision(root, args.batch, args.batches, cores)
    machine = machine_info()  # the pipelines' thread setting, before the step takes every core
    step = round(step_img_s(cores), 2)
    print(json.dumps({"benchmark": "encoded_pipeline", **machine, "cores_used": cores, "side": SIDE,
                      "photo": f"{SHAPE[0]}x{SHAPE[1]} JPEG q90, {jpeg_kb:.0f} KB", "batch": args.batch,
                      "vipr_img_s": vipr, "torchvision_img_s": tv, "ratio": round(vipr / tv, 2),
                      "step_img_s": step, "end_to_end_bound": round(1 + step / tv, 3)}))


def step_img_s(cores: int) -> float:
    """vipr's MoCo v2 training step, ResNet-18 at 224 px, batch 16, fp32, on every core: images/s."""
    from pretrain_throughput import time_vipr

    torch.set_num_threads(cores)
    return time_vipr("fp32", 16, SIDE, warmup=1, steps=3)


if __name__ == "__main__":
    main()
