"""Score a detection or segmentation model on a dense split: COCO AP / AR and VOC mAP, or mIoU.

Predictions are made on the S x S canvases (the frame of ``coco_ground_truth``), in eval mode,
without gradients, batch by batch; the figures are vipr.transfer.metrics', in percent.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from vipr.data.dense.export import coco_ground_truth
from vipr.data.dense.types import DenseDataset, DenseSplit
from vipr.transfer.metrics import SegmentationMeter, coco_metrics, detections_to_coco, voc_map


def canvases(split: DenseSplit, batch_size: int, device: torch.device, progress: bool = False,
             desc: str = "eval") -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """(rows, float (B, 3, S, S) images in [0, 1] on ``device``) over the whole split, in order."""
    starts = range(0, len(split), batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", file=sys.stderr, leave=False, disable=not progress):
        rows = np.arange(start, min(start + batch_size, len(split)))
        images = torch.from_numpy(np.ascontiguousarray(split.images[rows])).to(device)
        yield rows, images.float().div_(255)


@torch.no_grad()
def predict_detections(model: nn.Module, split: DenseSplit, category_ids: list[int], batch_size: int,
                       device: torch.device, progress: bool = False) -> list[dict]:
    """COCO result dicts of ``model`` (a torchvision detector) over every image of ``split``."""
    model.eval()
    results = []
    for rows, images in canvases(split, batch_size, device, progress, desc="detect"):
        outputs = model(list(images))
        results += detections_to_coco([{k: v.cpu() for k, v in o.items()} for o in outputs],
                                      split.image_ids[rows].tolist(), category_ids)
    return results


def evaluate_detection(model: nn.Module, ds: DenseDataset, task: str, batch_size: int, device: torch.device,
                       progress: bool = False) -> dict:
    """bbox (and, for ``instance``, segm) COCO figures and VOC mAP@0.5 on the test split."""
    results = predict_detections(model, ds.test, ds.category_ids, batch_size, device, progress)
    truth = coco_ground_truth(ds, "test")
    types = ("bbox", "segm") if task == "instance" else ("bbox",)
    figures = coco_metrics(truth, results, iou_types=types)
    voc = voc_map(truth, results)
    return {**figures, "voc_mAP50": voc["voc_mAP50"], "voc_AP50_per_class": voc["voc_AP50_per_class"],
            "detections": len(results), "num_test": len(ds.test)}


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, ds: DenseDataset, batch_size: int, device: torch.device,
                          progress: bool = False) -> dict:
    """mIoU, pixel and mean accuracy, per-class IoU over the test split (dataset-level counts)."""
    model.eval()
    meter = SegmentationMeter(ds.num_classes)
    for rows, images in canvases(ds.test, batch_size, device, progress, desc="segment"):
        prediction = model(images).argmax(1)  # (B, S, S)
        target = torch.from_numpy(np.ascontiguousarray(ds.test.semantic_maps[rows])).to(device)
        meter.update(prediction, target)
    return {**meter.compute(list(ds.classes)), "num_test": len(ds.test)}


def evaluate(model: nn.Module, ds: DenseDataset, task: str, batch_size: int, device: torch.device,
             progress: bool = False) -> dict:
    """The task's figures (vipr.transfer.metrics.metric_names) on ``ds``'s test split."""
    if task == "segment":
        return evaluate_segmentation(model, ds, batch_size, device, progress)
    return evaluate_detection(model, ds, task, batch_size, device, progress)
