"""224-px data pipeline from a folder of JPEG photos: vipr's encoded store against torchvision's ImageFolder.

Both sides produce MoCo v2's two augmented, normalised 224-px views per image from the same
JPEG files, measured one after the other in this run:

- ``vipr``: the encoded store (the files' bytes in tar shards), ``EncodedBatchIterator`` cutting
  each view's crop at decode on a thread pool (DCT-reduced JPEG decode), then flips and colour
  in batches (``ViewMaker.from_crops``) with the per-pixel ops compiled, as ``vipr pretrain``
  runs 224-px views (``train.fused_augment``; compiled in the untimed warm-up batch);
  ``vipr_eager``: the same uncompiled (``train.fused_augment=false``);
- ``torchvision``: ``ImageFolder`` with the same recipe as per-image transforms.v2 (decode,
  RandomResizedCrop, flip, jitter, grayscale, blur) in DataLoader workers, one per core.

The photos are written by this script: 640 x 480 crops of the development set's photographs
(scikit-image / scikit-learn samples, benchmarks/photo_sets.py), saved as JPEG quality 90.

End to end, both pipelines feed the same training step, which shares the cores with them. So
it also times vipr's MoCo v2 step (ResNet-18, 224 px, batch 16, fp32, every core;
pretrain_throughput.vipr_trainer) and, on the same batches, the step's own view drawing, whose
time it subtracts: the model's share alone. It reports the most any data pipeline could gain end to
end over torchvision's: ``1 + model_img_s / torchvision_img_s`` (core-seconds an image: the
model's plus torchvision's pipeline's, against the model's alone with a free pipeline).
Prints one JSON line: images/s of each (two views an image), their ratio, the step, the model's
share of it and the bound.

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
from benchmarks_common import machine_info, wait_until_idle  # noqa: E402
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


def alternated(runs: dict, batch: int, batches: int, rounds: int = 3) -> dict[str, float]:
    """Median images/s of each ``runs[name] = (run, warm)`` over ``rounds`` rounds that time the sides in
    turn, so a change in the machine's speed during the run reaches both sides alike. Before each timing
    the machine goes idle (the previous side's DataLoader workers or prefetch thread refill in the background
    after its timing, and would otherwise run during this side's), then ``warm`` batches are read untimed:
    what this loader prefetched is not counted."""
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (run, warm) in runs.items():
            wait_until_idle()
            run(warm)
            start = time.perf_counter()
            run(batches)
            rates[name].append(batch * batches / (time.perf_counter() - start))
    return {name: round(statistics.median(r), 1) for name, r in rates.items()}


def bench_vipr(root: Path, batch: int, cores: int, fused: bool):
    """(run(n batches), batches to read before timing: the prefetched one)."""
    torch.set_num_threads(1)  # the batched flips/colour; the decode threads take the other cores
    dataset = as_dataset(open_encoded_folder(str(root), progress=False), 256, max(1, cores))
    specs = get_recipe("moco_v2", SIDE)
    loader = EncodedBatchIterator(dataset.train, batch, specs=specs, threads=cores, seed=0)
    views = ViewMaker(tuple(specs), torch.Generator().manual_seed(0), fused_augment=fused)
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

    return run, 1


class TwoViews:
    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image):
        return self.transform(image), self.transform(image)


def bench_torchvision(root: Path, batch: int, cores: int):
    """(run(n batches), batches to read before timing: the DataLoader's prefetch, 2 a worker)."""
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
    return run, 2 * cores


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
        rates = alternated({"vipr": bench_vipr(root, args.batch, cores, fused=True),
                            "vipr_eager": bench_vipr(root, args.batch, cores, fused=False),
                            "torchvision": bench_torchvision(root, args.batch, cores)}, args.batch, args.batches)
        vipr, eager, tv = rates["vipr"], rates["vipr_eager"], rates["torchvision"]
    machine = machine_info()  # the pipelines' thread setting, before the step takes every core
    step, model = step_img_s(cores)
    print(json.dumps({"benchmark": "encoded_pipeline", **machine, "cores_used": cores, "side": SIDE,
                      "photo": f"{SHAPE[0]}x{SHAPE[1]} JPEG q90, {jpeg_kb:.0f} KB", "batch": args.batch,
                      "vipr_img_s": vipr, "vipr_eager_img_s": eager, "torchvision_img_s": tv,
                      "ratio": round(vipr / tv, 2), "ratio_eager": round(eager / tv, 2),
                      "step_img_s": round(step, 2), "model_img_s": round(model, 2),
                      "end_to_end_bound": round(1 + model / tv, 3)}))


def step_img_s(cores: int, batch: int = 16, steps: int = 3) -> tuple[float, float]:
    """vipr's MoCo v2 training step, ResNet-18 at 224 px, fp32, on every core, in images/s: the whole step,
    and the model's share (the step less drawing the same batches' views)."""
    from pretrain_throughput import vipr_trainer

    torch.set_num_threads(cores)
    trainer = vipr_trainer("fp32", batch, SIDE)
    trainer.loader.set_epoch(0)
    stream = iter(trainer.loader.iter_from(0))
    trainer.train_step(next(stream))  # warm-up
    batches = [next(stream) for _ in range(steps)]
    start = time.perf_counter()
    for b in batches:
        trainer.train_step(b)
    step_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for b in batches:
        trainer.model.views(b.images)
    views_seconds = time.perf_counter() - start
    images = batch * steps
    return images / step_seconds, images / (step_seconds - views_seconds)


if __name__ == "__main__":
    main()
