"""Detection fine-tuning throughput: vipr's training path vs torchvision's detection reference recipe.

Prints ONE JSON line. Both sides train the same Mask R-CNN with FPN on ResNet-18 (one module,
built by vipr.transfer with torchvision's widths: 256-channel FPN, 1,024-wide box head, 4 x 256
mask head; copied for the reference), on the same images (builtin:scenes, S x S px), batch,
optimizer (SGD lr 0.02 x B / 16, momentum 0.9, weight decay 1e-4) and horizontal flip p 0.5,
at the same image size (no multi-scale on either side), with the torch threads the process has:

- ``torchvision_reference``: torchvision's references/detection recipe: the images as PNG files
  with a COCO instances JSON (vipr.data.dense.export.write_coco), read per image in DataLoader
  workers (PIL decode, polygons / RLE -> masks as its ConvertCocoPolysToMask, RandomHorizontalFlip,
  PILToTensor, ToDtype), collated into lists; train_one_epoch's step, fp32 (its default: no --amp).
- ``vipr``: `vipr transfer instance`'s path: the decoded store (uint8 canvases, RLE masks),
  vipr.data.loader.BatchIterator, vipr.transfer.task.DetectionTask (batched flip on the device)
  and the engine's step (vipr.engine.trainer.Trainer.train_step) at precision auto (bf16 where
  the CPU has AMX, vipr.engine.device), and the same at fp32 (``vipr_fp32``) to separate what
  the precision gives from what the data path gives.

``data_share``: the fraction of a step's wall time spent on data. Reference: waiting for the
DataLoader (its workers decode beside the step, on the same cores). vipr: the loader's read plus
the targets and the augmentation, timed alone on the same batches (they run inside the step).

Usage: PYTHONPATH=src python benchmarks/detect_throughput.py [--quick] [--size PX] [--steps N]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from vipr.data.dense.export import write_coco
from vipr.data.dense.sources import open_dense
from vipr.data.loader import BatchIterator
from vipr.engine.device import resolve_precision
from vipr.models.backbones import create_backbone
from vipr.transfer.augment import DenseAugment, augment_detection
from vipr.transfer.models import create_transfer_model
from vipr.transfer.task import UNIT, DetectionTask, LabelRows

sys.path.insert(0, str(Path(__file__).parent))
from augment_ops import cpu_seconds, machine, other_jobs_cores  # noqa: E402  (sibling script)
from detect_reference import CocoFiles, collate  # noqa: E402

BATCH = 4
TORCHVISION_RPN = {"pre_nms_top_n": {"training": 2000, "testing": 1000},
                   "post_nms_top_n": {"training": 2000, "testing": 1000}}  # torchvision's MaskRCNN defaults


def build_model(num_classes: int, size: int) -> torch.nn.Module:
    """Mask R-CNN R18-FPN at torchvision's widths and proposal counts, random init (seed 0), BN trainable."""
    torch.manual_seed(0)
    model = create_transfer_model("mask_rcnn", create_backbone("resnet18"), num_classes, size, mean=[0.485, 0.456, 0.406],
                                  std=[0.229, 0.224, 0.225], fpn_channels=256, head_channels=1024, norm="bn")
    model.rpn._pre_nms_top_n, model.rpn._post_nms_top_n = TORCHVISION_RPN["pre_nms_top_n"], TORCHVISION_RPN["post_nms_top_n"]
    model.roi_heads.fg_bg_sampler.batch_size_per_image = 512
    return model


def sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=0.02 * BATCH / 16, momentum=0.9, weight_decay=1e-4)


def time_reference(model, root: Path, warmup: int, steps: int, workers: int) -> dict:
    """train_one_epoch's step over DataLoader batches; the seconds spent waiting for each batch."""
    loader = DataLoader(CocoFiles(root, "train"), batch_size=BATCH, shuffle=True, num_workers=workers,
                        collate_fn=collate, persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))
    optimizer, model = sgd(model), model.train()
    step_s, wait_s, it = [], [], iter(loader)
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        try:
            images, targets = next(it)
        except StopIteration:
            it = iter(loader)
            images, targets = next(it)
        t1 = time.perf_counter()
        losses = sum(model(list(images), list(targets)).values())
        optimizer.zero_grad()
        losses.backward()
        optimizer.step()
        if step >= warmup:
            step_s.append(time.perf_counter() - t0)
            wait_s.append(t1 - t0)
    return _rates(step_s, wait_s)


def time_vipr(model, ds, precision: str, warmup: int, steps: int) -> dict:
    """The engine's step on the store's batches (as `vipr transfer instance` runs it)."""
    from vipr.engine.card import make_card
    from vipr.engine.trainer import LoopSettings, Trainer

    generator = torch.Generator().manual_seed(0)
    task = DetectionTask(model, ds.train, DenseAugment(scales=(1.0,), hflip=0.5), generator, masks=True)
    loader = BatchIterator(LabelRows(ds.train), BATCH, shuffle=True, seed=0)
    card = make_card(architecture="mask_rcnn", architecture_kwargs={}, image_size=ds.train.canvas_size,
                     mean=UNIT[0], std=UNIT[1], method="benchmark")
    trainer = Trainer(task, sgd(model), loader, LoopSettings(epochs=1000, precision=precision, progress=False),
                      None, card, torch.device("cpu"), generator)
    step_s, batches, epoch = [], [], 0
    while len(step_s) < steps:
        loader.set_epoch(epoch)
        for batch in loader:
            t0 = time.perf_counter()
            trainer.train_step(batch)
            if trainer.step > warmup:
                step_s.append(time.perf_counter() - t0)
                batches.append(batch)
            if len(step_s) == steps:
                break
        epoch += 1
    data_s = [_vipr_data_seconds(ds, batch, generator) for batch in batches]
    return _rates(step_s, data_s)


def _vipr_data_seconds(ds, batch, generator) -> float:
    """The data part of one vipr step, alone: read the rows, build the targets, augment on the device."""
    t0 = time.perf_counter()
    rows = batch.indices.numpy()
    images = torch.from_numpy(ds.train.images[rows])
    targets = [ds.train.target(int(i)) for i in rows]
    augment_detection(images, targets, DenseAugment(scales=(1.0,), hflip=0.5, mean=UNIT[0], std=UNIT[1]), generator)
    return time.perf_counter() - t0


def _rates(step_s: list[float], data_s: list[float]) -> dict:
    step = statistics.median(step_s)
    return {"images_per_s": round(BATCH / step, 3), "step_s": round(step, 3),
            "data_share": round(statistics.median(data_s) / step, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128 px, 32 images, 1 + 3 steps")
    parser.add_argument("--size", type=int, default=256, help="canvas side in px (default 256)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per side (default 8, after 2 warm-up)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="reference DataLoader workers")
    args = parser.parse_args()
    size, images, warmup, steps = (128, 32, 1, 3) if args.quick else (args.size, 64, 2, args.steps)
    ds = open_dense(f"builtin:scenes?size={size}&train={images}&test=0&classes=6&objects=4")
    precision = resolve_precision("auto", torch.device("cpu"))
    model = build_model(ds.num_classes, size)
    start, t0 = cpu_seconds(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        write_coco(ds, tmp)
        reference = time_reference(copy.deepcopy(model), Path(tmp), warmup, steps, args.workers)
    ours = time_vipr(copy.deepcopy(model), ds, precision, warmup, steps)
    ours_fp32 = time_vipr(copy.deepcopy(model), ds, "fp32", warmup, steps) if precision != "fp32" else ours
    print(json.dumps({
        "benchmark": "detect_throughput", **machine(), "unit": "training images per second",
        "model": "Mask R-CNN, ResNet-18 FPN 256, random init", "size_px": size, "batch": BATCH,
        "images": images, "timed_steps": steps, "reference_workers": args.workers,
        "torchvision_reference": reference, "vipr": {**ours, "precision": precision}, "vipr_fp32": ours_fp32,
        "speedup": round(ours["images_per_s"] / reference["images_per_s"], 2),
        "speedup_fp32": round(ours_fp32["images_per_s"] / reference["images_per_s"], 2),
        "other_jobs_cores_during_run": other_jobs_cores(start, time.perf_counter() - t0)}))


if __name__ == "__main__":
    main()
