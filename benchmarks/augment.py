"""Two-view augmentation throughput: vipr's batched pipeline vs torchvision's per-image pipeline.

Prints ONE JSON line. Recipe moco_v2 (crop scale 0.2-1, flip, jitter 0.4/0.4/0.4/0.1 at
p 0.8, grayscale 0.2, blur p 0.5 at 224 px only), each image yielding 2 views, in
images per second (median of 3 timed runs after a warm-up):

- 32 px: 32x32 uint8 store, batch 256;  224 px: 256x256 uint8 store, batch 64;
- ``vipr_batched_cpu``: ``augment_views`` on uint8 CPU batches, 2 torch threads (and
  ``_1thread``: 1 thread, per-core and immune to other jobs stalling a thread);
- ``vipr_fused_cpu`` (224 px, as ``vipr pretrain`` runs views from 128 px): the same with the
  per-pixel ops compiled (``vipr.data.fusion``; compiled in the warm-up batch);
- ``torchvision_dataloader_2workers``: transforms.v2 on PIL images in a DataLoader with
  num_workers=2, the usual peer set-up (PIL images decoded beforehand, no JPEG cost);
- ``torchvision_inprocess_1thread``: the same transform in a plain loop, 1 torch thread.

Usage: PYTHONPATH=src python benchmarks/augment.py [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2 as T
from PIL import Image

from vipr.data.augment import IMAGENET_MEAN, IMAGENET_STD, augment_views, get_recipe
from vipr.data.augment_ops import blur_kernel_size
from vipr.data.fusion import FUSED_MIN_SIDE, fused_kernels

sys.path.insert(0, str(Path(__file__).parent))
from augment_ops import cpu_seconds, machine, other_jobs_cores  # noqa: E402  (sibling script)

SETTINGS = {32: (256, 32), 224: (64, 256)}  # crop side -> (batch, stored image side)
STORE_IMAGES = {32: 2048, 224: 256}  # distinct images in the synthetic store


def torchvision_transform(size: int) -> T.Compose:
    """MoCo v2's per-image pipeline in transforms.v2; blur only where vipr's recipe has it."""
    steps = [
        T.RandomResizedCrop(size, scale=(0.2, 1.0), antialias=True),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
    ]
    if get_recipe("moco_v2", size)[0].blur_p > 0:
        steps.append(T.RandomApply([T.GaussianBlur(blur_kernel_size(size), sigma=(0.1, 2.0))], p=0.5))
    steps += [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(steps)


class TwoViewDataset(torch.utils.data.Dataset):
    """PIL images in memory, each item two independently transformed views."""

    def __init__(self, pil_images: list[Image.Image], transform: T.Compose, length: int) -> None:
        self.pil_images, self.transform, self.length = pil_images, transform, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.pil_images[index % len(self.pil_images)]
        return self.transform(image), self.transform(image)


def throughput(run_batches: Callable[[int], None], batch: int, batches: int, warmup: int = 1) -> float:
    """Median images/s over 3 timed runs of ``batches`` batches, after ``warmup`` batches."""
    run_batches(warmup)
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        run_batches(batches)
        rates.append(batch * batches / (time.perf_counter() - start))
    return round(statistics.median(rates), 1)


def bench_vipr(store: torch.Tensor, size: int, batch: int, batches: int, threads: int = 2, fused: bool = False) -> float:
    views, g = get_recipe("moco_v2", size), torch.Generator().manual_seed(0)
    torch.set_num_threads(threads)

    def run(n: int) -> None:
        for i in range(n):
            start = (i * batch) % (len(store) - batch + 1)
            with fused_kernels(fused):
                augment_views(store[start : start + batch], views, generator=g)

    rate = throughput(run, batch, batches)
    torch.set_num_threads(2)
    return rate


def bench_dataloader(pil_images: list[Image.Image], size: int, batch: int, batches: int) -> float:
    """Steady state of one DataLoader stream: the 2 warm-up batches start both workers and drain
    the batches they built in parallel; each timed run takes an even number of batches, so it
    waits for whole rounds of the 2 workers."""
    workers, batches = 2, 2 * math.ceil(batches / 2)
    length = batch * (workers + 3 * batches + 2 * workers)  # + the prefetch left when timing stops
    dataset = TwoViewDataset(pil_images, torchvision_transform(size), length=length)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=workers)
    iterator = iter(loader)

    def run(n: int) -> None:
        for _ in range(n):
            next(iterator)

    rate = throughput(run, batch, batches, warmup=workers)
    del iterator  # shuts the workers down
    return rate


def bench_inprocess(pil_images: list[Image.Image], size: int, batch: int, batches: int) -> float:
    dataset = TwoViewDataset(pil_images, torchvision_transform(size), length=len(pil_images))
    torch.set_num_threads(1)
    counter = iter(range(10**9))

    def run(n: int) -> None:
        for _ in range(n):
            items = [dataset[next(counter)] for _ in range(batch)]
            torch.utils.data.default_collate(items)

    rate = throughput(run, batch, batches)
    torch.set_num_threads(2)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one batch per timed run, for a smoke run")
    args = parser.parse_args()
    torch.manual_seed(0)  # torchvision's transforms draw from the global generator
    start, wall_start = cpu_seconds(), time.perf_counter()
    result: dict[str, object] = {"benchmark": "augment_two_view_throughput", "unit": "images/s (2 views each)"}
    result.update(machine(), recipe="moco_v2")
    result["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    for size, (batch, side) in SETTINGS.items():
        store = torch.randint(0, 256, (STORE_IMAGES[size], 3, side, side), dtype=torch.uint8)
        pil_images = [Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy())) for image in store]
        vipr_batches = 1 if args.quick else (20 if size == 32 else 3)
        peer_batches = 1 if args.quick else (4 if size == 32 else 2)
        rates = {
            "vipr_batched_cpu": bench_vipr(store, size, batch, vipr_batches),
            "vipr_batched_cpu_1thread": bench_vipr(store, size, batch, vipr_batches, threads=1),
            **({"vipr_fused_cpu": bench_vipr(store, size, batch, vipr_batches, fused=True),
                "vipr_fused_cpu_1thread": bench_vipr(store, size, batch, vipr_batches, threads=1, fused=True)}
               if size >= FUSED_MIN_SIDE else {}),
            "torchvision_dataloader_2workers": bench_dataloader(pil_images, size, batch, peer_batches),
            "torchvision_inprocess_1thread": bench_inprocess(pil_images, size, batch, peer_batches),
        }
        default = "vipr_fused_cpu" if size >= FUSED_MIN_SIDE else "vipr_batched_cpu"  # what vipr pretrain runs
        rates["speedup_vs_dataloader"] = round(rates[default] / rates["torchvision_dataloader_2workers"], 2)
        result[f"{size}px_batch{batch}_store{side}"] = rates
    result["other_jobs_cores_during_run"] = other_jobs_cores(start, time.perf_counter() - wall_start)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
