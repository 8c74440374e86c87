"""COCO-format detection results and their scores: pycocotools' 12 COCO numbers and Pascal VOC mAP.

Every figure is in **percent (0-100)**, the scale papers report AP in, the same scale as the
segmentation figures of ``vipr.transfer.seg_metrics``; a figure that is undefined (pycocotools'
-1 for a size bucket without ground truth, a VOC class without positives) is ``None``, so the
dicts stay JSON-able and an undefined figure cannot be averaged in by mistake.

Ground truth is a COCO instances dict (``vipr.data.dense.export.coco_ground_truth``); results are
COCO result dicts (``detections_to_coco``). Boxes are continuous pixel edges (xyxy with exclusive
x1, y1; COCO xywh), the frame of torchvision and pycocotools.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# the order of COCOeval.stats (pycocotools' summarize): AP@[.5:.95], AP50, AP75, AP by area, AR@1/10/100, AR by area
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = ("bbox", "segm")


def detections_to_coco(outputs: list[dict[str, torch.Tensor]], image_ids, category_ids, *,
                       mask_threshold: float = 0.5) -> list[dict]:
    """torchvision detector outputs (eval mode) to COCO result dicts, one per detection.

    Args:
        outputs: one dict per image, on any device: ``boxes`` (N, 4) float xyxy, ``labels`` (N,)
            int64 class indices 1..K, ``scores`` (N,), and optionally ``masks`` (N, 1, H, W) or
            (N, H, W) probabilities (Mask R-CNN) or binary masks.
        image_ids: (B,) the ground truth's image id of each output.
        category_ids: (K + 1,) COCO category id of each class index (``DenseDataset.category_ids``).
        mask_threshold: a mask pixel is foreground where its probability is above this.

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"(, "segmentation")}]`` with
        Python scalars; ``segmentation`` is a compressed RLE whose ``counts`` is a str (JSON-able).

    Examples:
        >>> out = [{"boxes": torch.tensor([[1., 2., 11., 22.]]), "labels": torch.tensor([1]),
        ...         "scores": torch.tensor([.9])}]
        >>> detections_to_coco(out, [7], [0, 3])[0]["bbox"]
        [1.0, 2.0, 10.0, 20.0]
    """
    if len(outputs) != len(image_ids):
        raise ValueError(f"{len(outputs)} outputs but {len(image_ids)} image ids; pass one id per output")
    lookup = np.asarray(category_ids, np.int64)
    results = []
    for output, image_id in zip(outputs, image_ids):
        results.extend(_image_results(output, int(image_id), lookup, mask_threshold))
    return results


def _image_results(output: dict[str, torch.Tensor], image_id: int, lookup: np.ndarray, threshold: float) -> list[dict]:
    """The COCO result dicts of one image's detections (see ``detections_to_coco``)."""
    boxes = output["boxes"].detach().to("cpu", torch.float64).numpy().reshape(-1, 4)  # (N, 4) xyxy
    if len(boxes) == 0:
        return []
    labels = output["labels"].detach().cpu().numpy()
    if labels.min() < 1 or labels.max() >= len(lookup):
        raise ValueError(f"labels of image {image_id} span {labels.min()}..{labels.max()}, "
                         f"but category_ids maps class indices 1..{len(lookup) - 1}")
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).tolist()
    scores = output["scores"].detach().to("cpu", torch.float64).tolist()
    fields = [{"image_id": image_id, "category_id": c, "bbox": b, "score": s}
              for c, b, s in zip(lookup[labels].tolist(), xywh, scores)]
    if "masks" in output:
        for entry, rle in zip(fields, _encode_masks(output["masks"], threshold)):
            entry["segmentation"] = rle
    return fields


def _encode_masks(masks: torch.Tensor, threshold: float) -> list[dict]:
    """(N, 1, H, W) or (N, H, W) mask probabilities to N compressed RLEs, in one pycocotools call."""
    binary = (masks.detach() > threshold).reshape(len(masks), *masks.shape[-2:])  # (N, H, W) on the device
    binary = binary.to(torch.uint8).cpu().numpy()  # uint8 before the copy: 1 byte a pixel crosses
    rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))  # (H, W, N), pycocotools' layout
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def coco_metrics(ground_truth: dict, results: list[dict], iou_types=("bbox",)) -> dict[str, float | None]:
    """pycocotools COCOeval figures of ``results`` against ``ground_truth``, in percent, silently.

    Args:
        ground_truth: COCO instances dict with ``images``, ``annotations`` (ids from 1), ``categories``;
            ``info`` / ``licenses`` may be absent.
        results: COCO result dicts (``detections_to_coco``); ``segmentation`` needed for ``"segm"``.
        iou_types: any of ``"bbox"``, ``"segm"``.

    Returns:
        ``{f"{t}_{name}": value}`` for each type t and the 12 names of ``STAT_NAMES`` (AP over IoU
        .50:.95, AP50, AP75, AP small/medium/large, AR@1/10/100, AR small/medium/large), in percent;
        ``None`` where pycocotools gives -1 (no ground truth in that size bucket). No results at
        all: 0.0 for every figure that has ground truth.
    """
    unknown = sorted(set(iou_types) - set(IOU_TYPES))
    if unknown:
        raise ValueError(f"unknown iou_types {unknown}; use any of {IOU_TYPES}")
    gt = _load_ground_truth(ground_truth, need_masks="segm" in iou_types)
    check_results(ground_truth, results)
    figures = {}
    for iou_type in iou_types:
        evaluator = COCOeval(gt, _load_results(gt, results, iou_type), iou_type)
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and the table
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        figures.update({f"{iou_type}_{name}": _percent(v) for name, v in zip(STAT_NAMES, evaluator.stats)})
    return figures


def _percent(value: float) -> float | None:
    return None if value < 0 else 100.0 * float(value)


def check_results(ground_truth: dict, results: list[dict]) -> None:
    """Raise ValueError if ``results`` name an image or a category the ground truth lacks."""
    for key, field in (("images", "image_id"), ("categories", "category_id")):
        known = {entry["id"] for entry in ground_truth[key]}
        stray = sorted({r[field] for r in results} - known)
        if stray:
            raise ValueError(f"results name {len(stray)} {field}s not in the ground truth's {key}: "
                             f"{stray[:10]}; evaluate against the split the detections were made on")


def _load_ground_truth(ground_truth: dict, *, need_masks: bool) -> COCO:
    """A pycocotools COCO of ``ground_truth``, checked for what COCOeval silently gets wrong."""
    missing = [key for key in ("images", "annotations", "categories") if key not in ground_truth]
    if missing:
        raise ValueError(f"ground truth lacks {missing}; it needs COCO's images, annotations and categories")
    ids = [ann["id"] for ann in ground_truth["annotations"]]
    if ids and (min(ids) < 1 or len(set(ids)) != len(ids)):
        raise ValueError(f"annotation ids must be unique and start at 1 (COCOeval takes id 0 for 'unmatched'); "
                         f"got min {min(ids)}, {len(ids) - len(set(ids))} duplicates")
    if need_masks and any("segmentation" not in ann for ann in ground_truth["annotations"]):
        raise ValueError("iou_types has 'segm' but some ground-truth annotations have no 'segmentation'")
    gt = COCO()
    gt.dataset = {"info": {}, "licenses": [], **ground_truth}  # some pycocotools versions' loadRes read 'info'
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def _load_results(gt: COCO, results: list[dict], iou_type: str) -> COCO:
    """The detections as pycocotools' result COCO, on copies (loadRes writes id, area, iscrowd into them)."""
    field = "bbox" if iou_type == "bbox" else "segmentation"
    if any(field not in r for r in results):
        raise ValueError(f"iou_type {iou_type!r} needs {field!r} in every result; "
                         f"pass masks to detections_to_coco or evaluate 'bbox' only")
    if iou_type == "segm":  # without a bbox loadRes takes the mask area for the size buckets (detectron2 does the same)
        copies = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    else:
        copies = [dict(r) for r in results]
    if not copies:  # loadRes([]) indexes anns[0] and raises IndexError
        empty = COCO()
        empty.dataset = {"images": list(gt.dataset["images"]), "categories": list(gt.dataset["categories"]),
                         "annotations": []}
        with contextlib.redirect_stdout(io.StringIO()):
            empty.createIndex()
        return empty
    with contextlib.redirect_stdout(io.StringIO()):
        return gt.loadRes(copies)


def voc_map(ground_truth: dict, results: list[dict], iou: float = 0.5, *, use_07_metric: bool = False) -> dict:
    """Pascal VOC mean average precision of ``results`` at IoU ``iou``, in percent.

    VOC's rules (devkit ``VOCevaldet.m``, mmdet ``eval_map``): per class, detections in descending
    score (ties in the results' order) are matched to the ground truth of their image and class
    with the highest IoU; IoU >= ``iou`` with an unmatched object is a true positive, with an
    object already matched a false positive (a duplicate), below ``iou`` a false positive.
    Objects with a true ``difficult`` (or ``iscrowd``) key are not positives and detections
    matched to them count neither way. AP is the area under the interpolated precision-recall
    curve (VOC2010+, all points), or the mean of 11 interpolated precisions at recall 0, .1, .., 1
    (VOC2007) with ``use_07_metric``. IoU is on continuous pixel edges, without VOC's "+1": the
    vipr VOC reader already turns the 1-based inclusive corners into edges (``x0 = xmin - 1``).

    Returns:
        ``{"voc_mAP50": mean over classes with positives, "voc_AP50_per_class": {name: AP}}``
        (50 = ``round(100 * iou)``); a class without positives has AP ``None`` and is left out
        of the mean, which is ``None`` if no class has positives.
    """
    check_results(ground_truth, results)
    tag = f"{round(100 * iou)}"
    gts, dts = _by_category(ground_truth["annotations"]), _by_category(results)
    per_class = {cat["name"]: _class_ap(gts.get(cat["id"], []), dts.get(cat["id"], []), iou, use_07_metric)
                 for cat in ground_truth["categories"]}
    aps = [ap for ap in per_class.values() if ap is not None]
    return {f"voc_mAP{tag}": float(np.mean(aps)) if aps else None, f"voc_AP{tag}_per_class": per_class}


def _by_category(entries: list[dict]) -> dict[int, list[dict]]:
    groups: dict[int, list[dict]] = {}
    for entry in entries:
        groups.setdefault(entry["category_id"], []).append(entry)
    return groups


def _xyxy(entries: list[dict]) -> np.ndarray:
    """(N, 4) float64 xyxy boxes of COCO dicts' xywh ``bbox``."""
    xywh = np.asarray([e["bbox"] for e in entries], np.float64).reshape(-1, 4)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


def _class_ap(gts: list[dict], dts: list[dict], iou: float, use_07_metric: bool) -> float | None:
    """VOC AP (percent) of one class's detections ``dts`` against its ground truth ``gts``."""
    ignore = np.asarray([bool(a.get("difficult", 0)) or bool(a.get("iscrowd", 0)) for a in gts], bool)
    positives = int((~ignore).sum())
    if positives == 0:
        return None
    gt_boxes, gt_rows = _xyxy(gts), {}
    for k, ann in enumerate(gts):
        gt_rows.setdefault(ann["image_id"], []).append(k)
    scores = np.asarray([d["score"] for d in dts], np.float64)
    order = np.lexsort((np.arange(len(dts)), -scores))  # descending score, ties in the results' order
    dt_images, dt_boxes = np.asarray([d["image_id"] for d in dts], np.int64)[order], _xyxy(dts)[order]
    tp, fp = np.zeros(len(dts), bool), np.zeros(len(dts), bool)
    by_image = np.argsort(dt_images, kind="stable")  # grouped by image, score order kept within each
    starts = np.flatnonzero(np.diff(dt_images[by_image])) + 1
    for rows in np.split(by_image, starts) if len(dts) else []:  # one image's matches never depend on another's
        own = gt_rows.get(int(dt_images[rows[0]]), [])
        tp[rows], fp[rows] = _match_image(dt_boxes[rows], gt_boxes[own], ignore[own], iou)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall, precision = tp / positives, tp / np.maximum(tp + fp, 1)
    return 100.0 * _average_precision(recall, precision, use_07_metric)


def _match_image(dt_boxes: np.ndarray, gt_boxes: np.ndarray, ignore: np.ndarray, iou: float):
    """(tp, fp) bool (D,) of one image's detections (D, 4) in descending score against (G, 4) objects."""
    if len(gt_boxes) == 0:
        return np.zeros(len(dt_boxes), bool), np.ones(len(dt_boxes), bool)
    overlaps = box_iou(dt_boxes, gt_boxes)  # (D, G)
    best = overlaps.argmax(axis=1)  # VOC: the highest-IoU object, matched or not
    hit = overlaps[np.arange(len(dt_boxes)), best] >= iou
    counted = hit & ~ignore[best]
    rows = np.nonzero(counted)[0]
    first = np.zeros(len(dt_boxes), bool)
    first[rows[np.unique(best[rows], return_index=True)[1]]] = True  # the top-scored hit on each object
    return first, ~hit | (counted & ~first)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of (N, 4) and (M, 4) xyxy boxes on continuous pixel edges (no "+1")."""
    lo, hi = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(axis=2)
    area_a, area_b = (a[:, 2:] - a[:, :2]).prod(axis=1), (b[:, 2:] - b[:, :2]).prod(axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, np.finfo(np.float64).tiny)


def _average_precision(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """Area under the interpolated PR curve (VOC2010+) or its 11-point mean (VOC2007), as a fraction."""
    if use_07_metric:
        points = [np.max(precision, where=recall >= t, initial=0.0) for t in np.linspace(0, 1, 11)]
        return float(np.mean(points))
    recall, precision = np.r_[0.0, recall, 1.0], np.r_[0.0, precision, 0.0]
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at any higher recall
    steps = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))
