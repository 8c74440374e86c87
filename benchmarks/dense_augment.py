"""Dense training augmentation throughput: vipr's batched on-device path vs torchvision's per-image path.

Prints ONE JSON line, in images per second (median of 5 timed passes over the data after a
warm-up pass; 2 with --quick), on ``builtin:scenes`` (256 images at 128 px, boxes, instance
masks and semantic maps; 64 images with --quick), batch 8, scales (0.75, 1.0, 1.25) -> sides
96 / 128 / 160 px, horizontal flip p 0.5, ImageNet mean / std:

- ``detection``: boxes + labels + instance masks;
  ``vipr_batched``: ``vipr.transfer.augment.augment_detection`` on the uint8 batch, one side per batch;
  ``torchvision_v2_per_image``: torchvision's detection reference recipe (references/detection/presets.py,
  "multiscale": RandomHorizontalFlip + RandomShortestSize over the same sides -- on square canvases the
  same square resize -- then ToDtype, SanitizeBoundingBoxes, and the model transform's Normalize),
  one image at a time on tv_tensors (Image, BoundingBoxes, Mask), as a DataLoader worker runs it;
  its side is drawn per image, so its output is a list, not one tensor.
- ``segmentation``: image + semantic map (Mask); vipr's ``augment_segmentation`` vs the same v2
  steps with torchvision's segmentation reference's ToDtype (Mask -> int64).

Batches (``DenseSplit.batch``, masks decoded from RLE) are built before timing: data loading
costs both paths the same. Torch threads: as the process finds them (OMP_NUM_THREADS).

Usage: PYTHONPATH=src python benchmarks/dense_augment.py [--quick] [--device cpu] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision.transforms.v2 as T
from torchvision import tv_tensors

from vipr.data.augment import IMAGENET_MEAN, IMAGENET_STD
from vipr.data.dense.sources import open_dense
from vipr.transfer.augment import DenseAugment, augment_detection, augment_segmentation

sys.path.insert(0, str(Path(__file__).parent))
from augment_ops import cpu_seconds, machine, other_jobs_cores  # noqa: E402  (sibling script)

SCALES = (0.75, 1.0, 1.25)
BATCH = 8


def reference_detection(sides: tuple[int, ...], hflip: float) -> T.Compose:
    """torchvision's per-image detection recipe over the same sides, normalised like the model transform."""
    return T.Compose([T.RandomHorizontalFlip(hflip), T.RandomShortestSize(min_size=list(sides)),
                      T.ToDtype(torch.float32, scale=True), T.SanitizeBoundingBoxes(min_size=1),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def reference_segmentation(sides: tuple[int, ...], hflip: float) -> T.Compose:
    """torchvision's per-image segmentation steps (flip, resize, ToDtype image float / mask int64, Normalize)."""
    dtypes = {tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None}
    return T.Compose([T.RandomHorizontalFlip(hflip), T.RandomShortestSize(min_size=list(sides)),
                      T.ToDtype(dtypes, scale=True), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def per_image_detection(transform: T.Compose, images: torch.Tensor, targets: list[dict]) -> list:
    """One batch through ``transform`` image by image, wrapping tensors as tv_tensors (part of the cost)."""
    out = []
    canvas = images.shape[-2:]
    for image, t in zip(images, targets, strict=True):
        target = {"boxes": tv_tensors.BoundingBoxes(t["boxes"], format="XYXY", canvas_size=canvas),
                  "labels": t["labels"], "masks": tv_tensors.Mask(t["masks"])}
        out.append(transform(tv_tensors.Image(image), target))
    return out


def per_image_segmentation(transform: T.Compose, images: torch.Tensor, maps: torch.Tensor) -> list:
    return [transform(tv_tensors.Image(image), tv_tensors.Mask(label_map)) for image, label_map in zip(images, maps)]


def images_per_s(step: Callable[[int], object], batches: int, images: int, repeats: int, device: str) -> float:
    """Median over ``repeats`` passes of images / s, each pass calling ``step(b)`` for every batch; one warm-up pass."""
    rates = []
    for r in range(repeats + 1):
        start = time.perf_counter()
        for b in range(batches):
            step(b)
        if device != "cpu":
            torch.cuda.synchronize()
        if r:  # pass 0 warms up allocator and kernels
            rates.append(images / (time.perf_counter() - start))
    return round(statistics.median(rates), 1)


def load_batches(n: int, size: int, device: str, cache_dir: str | None):
    """(uint8 image batches, their targets, their semantic maps) of builtin:scenes, on ``device``."""
    split = open_dense(f"builtin:scenes?size={size}&train={n}&test=0&seed=0", cache_dir=cache_dir).train
    images, targets, maps = [], [], []
    for start in range(0, n, BATCH):
        index = list(range(start, min(n, start + BATCH)))
        batch_images, batch_targets = split.batch(index)
        images.append(batch_images.to(device))
        targets.append([{k: v.to(device) for k, v in t.items()} for t in batch_targets])
        maps.append(torch.stack([split.semantic(i) for i in index]).to(device))
    return images, targets, maps, len(split.instances) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 images, 2 timed passes: a smoke run")
    parser.add_argument("--device", default="cpu", help="where vipr's batched path runs (the reference stays on CPU)")
    parser.add_argument("--cache-dir", default=None, help="vipr cache for the scenes store (default: VIPR_CACHE)")
    args = parser.parse_args()
    n, size, repeats = (64, 128, 2) if args.quick else (256, 128, 5)
    torch.manual_seed(0)  # torchvision's transforms draw from the global generator
    images, targets, maps, per_image = load_batches(n, size, args.device, args.cache_dir)
    cpu_images, cpu_targets, cpu_maps, _ = load_batches(n, size, "cpu", args.cache_dir)
    aug = DenseAugment(scales=SCALES, hflip=0.5)
    sides = aug.sides(size)
    g = torch.Generator().manual_seed(0)
    det_ref, seg_ref = reference_detection(sides, aug.hflip), reference_segmentation(sides, aug.hflip)
    start, wall_start = cpu_seconds(), time.perf_counter()
    result = {"benchmark": "dense_augment", "unit": "images per second", **machine(),
              "processor": platform.processor(), "device": args.device,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "data": f"builtin:scenes {n} images at {size} px, {per_image:.2f} instances per image",
              "batch": BATCH, "scales": SCALES, "sides_px": sides, "hflip": aug.hflip, "timed_passes": repeats}
    nb = len(images)
    result["detection"] = {
        "vipr_batched": images_per_s(lambda b: augment_detection(images[b], targets[b], aug, g), nb, n, repeats,
                                     args.device),
        "torchvision_v2_per_image": images_per_s(lambda b: per_image_detection(det_ref, cpu_images[b], cpu_targets[b]),
                                                 nb, n, repeats, "cpu"),
    }
    result["segmentation"] = {
        "vipr_batched": images_per_s(lambda b: augment_segmentation(images[b], maps[b], aug, g), nb, n, repeats,
                                     args.device),
        "torchvision_v2_per_image": images_per_s(lambda b: per_image_segmentation(seg_ref, cpu_images[b], cpu_maps[b]),
                                                 nb, n, repeats, "cpu"),
    }
    for task in ("detection", "segmentation"):
        r = result[task]
        r["speedup"] = round(r["vipr_batched"] / r["torchvision_v2_per_image"], 2)
    result["other_jobs_cores_during_run"] = other_jobs_cores(start, time.perf_counter() - wall_start)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
