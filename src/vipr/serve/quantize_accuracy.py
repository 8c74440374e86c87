"""How much INT8 costs: the float and the int8 ONNX models measured on the same held-out images.

Every measure returns ``{"metric", "float", "int8", "delta", ...}`` in percent, ``delta`` =
int8 - float in points (negative: int8 is worse):

* classifier: top-1 against the labels, and ``agreement``, the share of images whose top-1
  class is the same under both;
* backbone (features, no head): kNN top-1, the held-out features voting over a bank of the
  calibration images' features of the same model (float bank for the float model, int8 for the
  int8 one; cosine, k = 20, temperature 0.07: vipr.eval.knn). It asks what a user of the
  features asks (do the neighbours still carry the class?). ``cosine``: the mean cosine
  similarity of the two models' features of each image, which needs no labels;
* segmenter: pixel accuracy against the label maps (255 ignored), and the pixels whose class
  agrees;
* detector: the float model's detections scoring at least ``DETECTION_SCORE`` that the int8
  model finds too (same label, IoU at least ``DETECTION_IOU``): an agreement, not an mAP.
"""

from __future__ import annotations

import numpy as np

KNN_NEIGHBOURS = 20  # of a bank of a few hundred calibration images
KNN_TEMPERATURE = 0.07  # InstDisc's, as `vipr eval knn`
DETECTION_SCORE = 0.5  # the serving default of score_threshold
DETECTION_IOU = 0.5


def report(metric: str, float_value: float, int8_value: float, **extra) -> dict:
    return {"metric": metric, "float": round(float_value, 4), "int8": round(int8_value, 4),
            "delta": round(int8_value - float_value, 4), **extra}


def classifier_accuracy(float_logits: np.ndarray, int8_logits: np.ndarray, labels: np.ndarray) -> dict:
    """Top-1 (%) of (N, C) logits of both models on images with ``labels`` (-1: unlabelled, skipped)."""
    known = labels >= 0
    if not known.any():
        return report("agreement", 100.0, _percent(float_logits.argmax(1) == int8_logits.argmax(1)),
                      images=len(labels))
    float_top1 = _percent(float_logits[known].argmax(1) == labels[known])
    int8_top1 = _percent(int8_logits[known].argmax(1) == labels[known])
    return report("top1", float_top1, int8_top1, agreement=_percent(float_logits.argmax(1) == int8_logits.argmax(1)),
                  images=int(known.sum()))


def backbone_agreement(banks: tuple[np.ndarray, np.ndarray], bank_labels: np.ndarray,
                       queries: tuple[np.ndarray, np.ndarray], query_labels: np.ndarray) -> dict:
    """kNN top-1 (%) of float and int8 features, and their mean cosine similarity (module docstring).

    Args:
        banks: (float, int8) features (N_bank, D) of the calibration images.
        queries: (float, int8) features (N, D) of the held-out images.
    """
    cosine = float(np.mean(np.sum(_unit(queries[0]) * _unit(queries[1]), axis=1)))
    known, bank_known = query_labels >= 0, bank_labels >= 0
    if not known.any() or not bank_known.any():
        return report("cosine", 100.0, 100 * cosine, cosine=round(cosine, 6), images=len(query_labels))
    top1 = [_knn_top1(bank[bank_known], bank_labels[bank_known], query[known], query_labels[known])
            for bank, query in zip(banks, queries)]
    return report("knn_top1", *top1, cosine=round(cosine, 6), k=KNN_NEIGHBOURS, bank=int(bank_known.sum()),
                  images=int(known.sum()))


def _knn_top1(bank: np.ndarray, bank_labels: np.ndarray, query: np.ndarray, labels: np.ndarray) -> float:
    import torch

    from vipr.eval.knn import knn_predict

    num_classes = int(max(bank_labels.max(), labels.max())) + 1
    scores = knn_predict(torch.from_numpy(bank), torch.from_numpy(bank_labels), torch.from_numpy(query),
                         k=min(KNN_NEIGHBOURS, len(bank)), temperature=KNN_TEMPERATURE, num_classes=num_classes)
    return _percent(scores.argmax(1).numpy() == labels)


def segment_accuracy(float_logits: np.ndarray, int8_logits: np.ndarray, maps: np.ndarray | None) -> dict:
    """Pixel accuracy (%) of (N, K, S, S) logits against (N, S, S) label maps (255 ignored); agreement of classes."""
    float_labels, int8_labels = float_logits.argmax(1), int8_logits.argmax(1)  # (N, S, S)
    agreement = _percent(float_labels == int8_labels)
    if maps is None or not (maps != 255).any():
        return report("pixel_agreement", 100.0, agreement, images=len(float_logits))
    valid = maps != 255
    return report("pixel_accuracy", _percent(float_labels[valid] == maps[valid]),
                  _percent(int8_labels[valid] == maps[valid]), agreement=agreement, images=len(float_logits))


def detection_agreement(float_dets: list[dict], int8_dets: list[dict]) -> dict:
    """Share (%) of the float model's confident detections that the int8 model finds too (module docstring)."""
    found = total = 0
    for expected, actual in zip(float_dets, int8_dets):
        keep = expected["scores"] >= DETECTION_SCORE
        mine = actual["scores"] >= DETECTION_SCORE
        for box, label in zip(expected["boxes"][keep], expected["labels"][keep]):
            twins = actual["boxes"][mine & (actual["labels"] == label)]
            found += bool(len(twins)) and float(_iou(box, twins).max()) >= DETECTION_IOU
            total += 1
    int8_total = sum(int((d["scores"] >= DETECTION_SCORE).sum()) for d in int8_dets)
    return report("detection_agreement", 100.0, 100.0 * found / total if total else 100.0,
                  float_detections=total, int8_detections=int8_total, score=DETECTION_SCORE, iou=DETECTION_IOU,
                  images=len(float_dets))


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with each of (M, 4) boxes."""
    lo, hi = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2]) + np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) - inter
    return inter / np.maximum(area, 1e-9)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _percent(hits: np.ndarray) -> float:
    return 100.0 * float(np.mean(hits)) if hits.size else 0.0
