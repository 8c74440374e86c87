"""Evaluation of downstream transfer: the figures of each task, all in percent (0-100).

One surface over ``coco_eval`` (COCO AP/AR via pycocotools, Pascal VOC mAP) and ``seg_metrics``
(confusion-matrix mIoU). Conventions, shared by every figure:

- percent, the scale papers report both AP and mIoU in (pycocotools' fractions times 100);
- ``None`` for an undefined figure (pycocotools' -1 size bucket without ground truth, a VOC
  class without positives, a segmentation class in neither target nor prediction): JSON-able,
  and it cannot be averaged in unnoticed the way -1 or NaN can;
- boxes on continuous pixel edges (torchvision / pycocotools), no VOC "+1".

Examples:
    >>> metric_names("detect")[:3]
    ['bbox_AP', 'bbox_AP50', 'bbox_AP75']
"""

from __future__ import annotations

from vipr.transfer.coco_eval import STAT_NAMES, box_iou, coco_metrics, detections_to_coco, voc_map
from vipr.transfer.seg_metrics import SegmentationMeter

__all__ = ["SegmentationMeter", "box_iou", "coco_metrics", "detections_to_coco", "metric_names", "voc_map",
           "TASKS"]

TASKS = ("detect", "instance", "segment")


def metric_names(task: str) -> list[str]:
    """The ordered scalar figure names a ``task`` (detect | instance | segment) reports."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use one of {TASKS}")
    if task == "segment":
        return ["mIoU", "pixel_acc", "mean_acc"]
    types = ("bbox",) if task == "detect" else ("bbox", "segm")
    return [f"{t}_{name}" for t in types for name in STAT_NAMES] + ["voc_mAP50"]
