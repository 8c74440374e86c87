"""Semantic segmentation scores from a dataset-level confusion matrix: mIoU, pixel and mean accuracy.

The figures are mmseg's ``IoUMetric`` (mIoU, aAcc, mAcc) and torchvision's reference
``ConfusionMatrix``: intersections and unions are summed over the whole dataset before the
division, not averaged over images (torchmetrics' ``segmentation.MeanIoU`` averages per image
and gives a different number). Every figure is in percent (0-100), like the detection figures
of ``vipr.transfer.coco_eval``.
"""

from __future__ import annotations

import torch

from vipr.data.dense.types import IGNORE


class SegmentationMeter:
    """Accumulates a (K, K) int64 confusion matrix (rows: target class, columns: predicted class).

    Target pixels equal to 255 (``IGNORE``), or outside 0..K-1, count for nothing. The matrix lives
    on the device of the first batch, so ``update`` needs no host copy.

    Examples:
        >>> meter = SegmentationMeter(3)
        >>> meter.update(torch.tensor([[[0, 1], [2, 2]]]), torch.tensor([[[0, 1], [2, 255]]], dtype=torch.uint8))
        >>> meter.compute()["mIoU"]
        100.0
    """

    def __init__(self, num_classes: int):
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.confusion: torch.Tensor | None = None  # (K, K) int64 once a batch came in

    def reset(self) -> None:
        self.confusion = None

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``pred`` (B, H, W) int64 class indices in 0..K-1, ``target`` (B, H, W) uint8/int64."""
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have one shape; "
                             f"take pred.argmax(1) of (B, K, H, W) logits")
        k = self.num_classes
        pred = pred.reshape(-1).long()
        if pred.numel():
            low, high = (int(v) for v in torch.aminmax(pred))  # one sync; a stray index would land in a wrong cell
            if low < 0 or high >= k:
                raise ValueError(f"predictions span class indices {low}..{high}, outside 0..{k - 1} (num_classes={k})")
        target = target.to(pred.device, torch.int64).reshape(-1)
        keep = (target >= 0) & (target < k) & (target != IGNORE)  # 255 is ignore even with K > 255 classes
        counts = torch.bincount(target[keep] * k + pred[keep], minlength=k * k).reshape(k, k)
        self.confusion = counts if self.confusion is None else self.confusion + counts.to(self.confusion.device)

    def compute(self, class_names: list[str] | None = None) -> dict:
        """The figures so far, in percent.

        Returns:
            ``mIoU``: mean IoU over the classes present in the target or the prediction (a class
            with an empty union has IoU NaN and is skipped, mmseg's nanmean); ``pixel_acc``:
            correct / counted pixels (mmseg's aAcc); ``mean_acc``: mean over classes present in
            the target of their pixel accuracy (mAcc); ``per_class_IoU``: {name: IoU}, names
            from ``class_names`` (default the class index as a str). Undefined figures are None.
        """
        k = self.num_classes
        names = [str(c) for c in range(k)] if class_names is None else list(class_names)
        if len(names) != k:
            raise ValueError(f"{len(names)} class names for {k} classes")
        confusion = (torch.zeros(k, k) if self.confusion is None else self.confusion.cpu()).double()
        hits, targets, predictions = confusion.diagonal(), confusion.sum(1), confusion.sum(0)
        iou = hits / (targets + predictions - hits)  # NaN where the class is in neither
        accuracy = hits / targets  # NaN where the class is not in the target
        total = confusion.sum()
        return {"mIoU": _percent(iou.nanmean()), "pixel_acc": _percent(hits.sum() / total),
                "mean_acc": _percent(accuracy.nanmean()),
                "per_class_IoU": {name: _percent(v) for name, v in zip(names, iou)}}


def _percent(value: torch.Tensor) -> float | None:
    value = float(value)
    return None if value != value else 100.0 * value  # NaN (nothing to measure) -> None, JSON-able
