"""vipr.transfer.metrics: COCO AP of ground truth fed back is 100, hand-computed COCO / VOC / mIoU cases."""

import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from vipr.data.dense import open_dense
from vipr.data.dense.export import coco_ground_truth
from vipr.transfer.metrics import SegmentationMeter, coco_metrics, detections_to_coco, metric_names, voc_map

CANVAS = 128
# (image_id, x, y, side, category_id): 8 images, 16 squares; sides 12-20 small, 40-60 medium, 100 large
SQUARES = [(1, 4, 4, 12, 1), (2, 10, 10, 40, 1), (2, 70, 70, 20, 2), (3, 0, 0, 100, 2), (3, 104, 104, 16, 1),
           (3, 104, 0, 20, 1), (4, 30, 30, 60, 2), (5, 0, 0, 50, 1), (5, 60, 60, 50, 1), (6, 20, 20, 100, 1),
           (6, 2, 2, 14, 2), (7, 64, 0, 60, 2), (7, 0, 64, 40, 2), (7, 80, 80, 16, 1), (8, 8, 8, 48, 2),
           (8, 70, 8, 18, 1)]


def _square_mask(x, y, side, size=CANVAS):
    mask = np.zeros((size, size), np.uint8)
    mask[y:y + side, x:x + side] = 1
    return mask


def _ground_truth(squares=SQUARES, images=range(1, 9), size=CANVAS):
    anns = []
    for k, (image, x, y, side, cat) in enumerate(squares, 1):
        rle = mask_utils.encode(np.asfortranarray(_square_mask(x, y, side, size)))
        anns.append({"id": k, "image_id": image, "category_id": cat, "bbox": [x, y, side, side], "iscrowd": 0,
                     "area": float(side * side),
                     "segmentation": {"size": [size, size], "counts": rle["counts"].decode()}})
    return {"images": [{"id": i, "width": size, "height": size} for i in images], "annotations": anns,
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}


def _fed_back(gt, *, score=1.0):
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": score,
             "segmentation": dict(a["segmentation"])} for a in gt["annotations"]]


def test_ground_truth_fed_back_scores_100_on_both_types():
    gt = _ground_truth()
    figures = coco_metrics(gt, _fed_back(gt), iou_types=("bbox", "segm"))
    assert list(figures) == metric_names("instance")[:-1]
    for t in ("bbox", "segm"):
        for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"):
            assert figures[f"{t}_{name}"] == pytest.approx(100.0), (t, name)
    json.dumps(figures)  # None / floats only


def test_through_coco_ground_truth_of_scenes(tmp_path):
    ds = open_dense("builtin:scenes?size=64&train=1&test=6&classes=3&objects=3", cache_dir=tmp_path)
    gt, split = coco_ground_truth(ds, "test"), ds.test
    outputs = []
    for i in range(len(split)):
        target = split.target(i)
        outputs.append({"boxes": target["boxes"], "labels": target["labels"],
                        "scores": torch.ones(len(target["labels"])),
                        "masks": target["masks"][:, None].float() * 0.9})  # (N, 1, S, S) "probabilities"
    results = detections_to_coco(outputs, split.image_ids.tolist(), ds.category_ids)
    assert len(results) == len(gt["annotations"])
    figures = coco_metrics(gt, results, iou_types=("bbox", "segm"))
    for t in ("bbox", "segm"):
        assert figures[f"{t}_AP"] == figures[f"{t}_AP50"] == figures[f"{t}_AP75"] == pytest.approx(100.0)
    assert voc_map(gt, results)["voc_mAP50"] == pytest.approx(100.0)


def test_missing_detections():
    gt = _ground_truth([(1, 10, 10, 40, 1), (2, 10, 10, 40, 1)], images=[1, 2])
    one = [r for r in _fed_back(gt) if r["image_id"] == 1]
    figures = coco_metrics(gt, one, iou_types=("bbox", "segm"))
    # recall reaches 1/2 at precision 1: 51 of COCO's 101 recall thresholds (0, .01, .., .50) score 1
    assert figures["bbox_AP50"] == figures["segm_AP"] == pytest.approx(100 * 51 / 101)
    assert figures["bbox_AR100"] == pytest.approx(50.0)
    none = coco_metrics(gt, [], iou_types=("bbox", "segm"))  # pycocotools' loadRes([]) would raise IndexError
    for t in ("bbox", "segm"):
        assert none[f"{t}_AP"] == none[f"{t}_AP50"] == none[f"{t}_APm"] == none[f"{t}_AR100"] == 0.0
        assert none[f"{t}_APs"] is None and none[f"{t}_ARl"] is None  # no small or large ground truth
    assert voc_map(gt, [])["voc_mAP50"] == 0.0


def test_shifted_box_counts_at_ap50_not_ap75():
    gt = _ground_truth([(1, 10, 10, 40, 1)], images=[1])
    del gt["annotations"][0]["segmentation"]
    shifted = [{"image_id": 1, "category_id": 1, "bbox": [19.0, 10.0, 40.0, 40.0], "score": 0.8}]
    figures = coco_metrics(gt, shifted)
    # IoU = 31*40 / (2*1600 - 31*40) = 31/49 = 0.633: a hit at thresholds .50, .55, .60, a miss at the other 7
    assert figures["bbox_AP50"] == pytest.approx(100.0) and figures["bbox_AP75"] == 0.0
    assert figures["bbox_AP"] == pytest.approx(30.0) and figures["bbox_APm"] == pytest.approx(30.0)
    assert figures["bbox_APs"] is None and figures["bbox_APl"] is None


def test_coco_errors():
    gt = _ground_truth([(1, 10, 10, 40, 1)], images=[1])
    with pytest.raises(ValueError, match="image_ids not in the ground truth"):
        coco_metrics(gt, [{"image_id": 9, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}])
    with pytest.raises(ValueError, match="category_ids"):
        coco_metrics(gt, [{"image_id": 1, "category_id": 7, "bbox": [0, 0, 1, 1], "score": 1.0}])
    with pytest.raises(ValueError, match="start at 1"):
        coco_metrics({**gt, "annotations": [{**gt["annotations"][0], "id": 0}]}, [])
    with pytest.raises(ValueError, match="segmentation"):
        coco_metrics(gt, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}], ("bbox", "segm"))


# VOC case, boxes xywh. Class a: 3 positives + 1 difficult; class b: 1 positive; class c: no ground truth.
VOC_GT = [(1, [0, 0, 10, 10], 1, 0), (1, [20, 20, 10, 10], 1, 0), (2, [0, 0, 10, 10], 1, 0),
          (2, [30, 30, 10, 10], 1, 1), (1, [50, 50, 20, 20], 2, 0)]  # (image, bbox, category, difficult)
VOC_DT = [(1, [0, 0, 10, 10], 1, 0.9),  # TP on a1
          (1, [1, 0, 10, 10], 1, 0.8),  # IoU 9/11 with a1, already matched: FP (duplicate)
          (2, [30, 30, 10, 10], 1, 0.7),  # on the difficult object: neither
          (2, [0, 0, 10, 10], 1, 0.6),  # TP
          (2, [60, 60, 10, 10], 1, 0.5),  # background: FP
          (1, [20, 20, 10, 10], 1, 0.4),  # TP
          (2, [50, 50, 20, 20], 2, 0.95),  # no b in image 2: FP
          (1, [55, 50, 20, 20], 2, 0.3),  # IoU 15/25 = 0.6 with b1: TP
          (1, [0, 0, 5, 5], 3, 0.5)]  # class c has no positives


def _voc_case(ignore_key="difficult"):
    anns = [{"id": k, "image_id": i, "bbox": b, "category_id": c, ignore_key: d}
            for k, (i, b, c, d) in enumerate(VOC_GT, 1)]
    gt = {"images": [{"id": 1}, {"id": 2}], "annotations": anns,
          "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]}
    return gt, [{"image_id": i, "bbox": b, "category_id": c, "score": s} for i, b, c, s in VOC_DT]


def test_voc_map_against_hand_computation():
    # class a, counted detections TP FP TP FP TP: recall 1/3 1/3 2/3 2/3 1, precision 1 1/2 2/3 1/2 3/5;
    # interpolated precision 1 on (0, 1/3], 2/3 on (1/3, 2/3], 3/5 on (2/3, 1]
    ap_a_area = 1 / 3 * 1 + 1 / 3 * 2 / 3 + 1 / 3 * 3 / 5  # = 34/45
    ap_a_11 = (4 * 1 + 3 * 2 / 3 + 4 * 3 / 5) / 11  # t = 0..0.3 -> 1, 0.4..0.6 -> 2/3, 0.7..1 -> 3/5
    ap_b = 0.5  # FP then TP: precision 1/2 at recall 1, for both rules
    for key in ("difficult", "iscrowd"):
        gt, dt = _voc_case(key)
        area = voc_map(gt, dt)
        assert area["voc_AP50_per_class"] == pytest.approx({"a": 100 * ap_a_area, "b": 100 * ap_b, "c": None})
        assert area["voc_mAP50"] == pytest.approx(100 * (ap_a_area + ap_b) / 2)
        eleven = voc_map(gt, dt, use_07_metric=True)
        assert eleven["voc_AP50_per_class"]["a"] == pytest.approx(100 * ap_a_11)
        assert eleven["voc_mAP50"] == pytest.approx(100 * (ap_a_11 + ap_b) / 2)
    strict = voc_map(gt, dt, iou=0.7)  # b's IoU-0.6 detection no longer counts; a's duplicate (0.818) still does
    assert strict["voc_AP70_per_class"]["b"] == 0.0 and strict["voc_AP70_per_class"]["a"] == pytest.approx(
        100 * ap_a_area)


def _devkit_ap(gt, dt, category, iou):
    """VOCevaldet.m's loop, transcribed: one detection at a time in descending score, area AP (fraction)."""
    objects = [a for a in gt["annotations"] if a["category_id"] == category]
    found = [False] * len(objects)
    dets = sorted((d for d in dt if d["category_id"] == category), key=lambda d: -d["score"])
    tp, fp = [], []
    for d in dets:
        x, y, w, h = d["bbox"]
        best, jbest = -1.0, -1
        for j, a in enumerate(objects):
            if a["image_id"] != d["image_id"]:
                continue
            ax, ay, aw, ah = a["bbox"]
            iw, ih = min(x + w, ax + aw) - max(x, ax), min(y + h, ay + ah) - max(y, ay)
            if iw > 0 and ih > 0 and iw * ih / (w * h + aw * ah - iw * ih) > best:
                best, jbest = iw * ih / (w * h + aw * ah - iw * ih), j
        if best >= iou and objects[jbest]["difficult"]:
            tp.append(0), fp.append(0)
        elif best >= iou and not found[jbest]:
            found[jbest] = True
            tp.append(1), fp.append(0)
        else:
            tp.append(0), fp.append(1)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec = tp / sum(not a["difficult"] for a in objects)
    prec = tp / np.maximum(tp + fp, 1)
    mrec, mpre = [0.0, *rec, 1.0], [0.0, *prec, 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1) if mrec[i + 1] != mrec[i])


def test_voc_map_matches_the_devkit_loop_on_random_boxes():
    rng = np.random.default_rng(0)
    boxes = lambda n: np.c_[rng.uniform(0, 40, (n, 2)), rng.uniform(5, 25, (n, 2))].round(1).tolist()
    anns = [{"id": k + 1, "image_id": int(i), "category_id": int(c), "bbox": b, "difficult": int(d)}
            for k, (i, c, b, d) in enumerate(zip(rng.integers(1, 5, 30), rng.integers(1, 3, 30), boxes(30),
                                                 rng.random(30) < 0.15))]
    gt = {"images": [{"id": i} for i in range(1, 5)], "annotations": anns,
          "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    dt = [{"image_id": int(i), "category_id": int(c), "bbox": b, "score": float(s)}
          for i, c, b, s in zip(rng.integers(1, 5, 80), rng.integers(1, 3, 80), boxes(80), rng.random(80))]
    dt += [{**a, "bbox": [v + 1 for v in a["bbox"]], "score": 0.5} for a in anns[:10]]  # near hits and duplicates
    for iou in (0.3, 0.5):
        per_class = voc_map(gt, dt, iou)[f"voc_AP{round(100 * iou)}_per_class"]
        expected = {"a": 100 * _devkit_ap(gt, dt, 1, iou), "b": 100 * _devkit_ap(gt, dt, 2, iou)}
        assert per_class == pytest.approx(expected)


def test_detections_to_coco_round_trip():
    masks = torch.zeros(2, 1, 16, 20)
    masks[0, 0, 2:6, 3:9], masks[1, 0, 10:16, 0:4] = 0.7, 0.9
    masks[1, 0, 0, 0] = 0.4  # below the threshold: background
    outputs = [{"boxes": torch.tensor([[3.0, 2.0, 9.0, 6.0], [0.0, 10.0, 4.0, 16.0]]), "labels": torch.tensor([2, 1]),
                "scores": torch.tensor([0.5, 0.25]), "masks": masks},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0),
                "masks": torch.zeros(0, 1, 16, 20)}]
    results = detections_to_coco(outputs, [5, 6], [0, 11, 12])
    assert [(r["image_id"], r["category_id"], r["score"]) for r in results] == [(5, 12, 0.5), (5, 11, 0.25)]
    assert results[0]["bbox"] == [3.0, 2.0, 6.0, 4.0] and results[1]["bbox"] == [0.0, 10.0, 4.0, 6.0]
    json.dumps(results)  # counts decoded to str
    for r, m in zip(results, masks):
        np.testing.assert_array_equal(mask_utils.decode(r["segmentation"]), (m[0] > 0.5).numpy().astype(np.uint8))
    with pytest.raises(ValueError, match="category_ids"):
        detections_to_coco([{**outputs[0], "labels": torch.tensor([3, 1])}], [5], [0, 11, 12])


def test_miou_hand_computed():
    target = torch.tensor([[[0, 0, 1], [1, 255, 2]]], dtype=torch.uint8)
    pred = torch.tensor([[[0, 1, 1], [1, 2, 0]]])
    meter = SegmentationMeter(4)  # class 3 in neither: IoU None, left out of the mean
    meter.update(pred, target)
    meter.update(torch.tensor([[[1, 2]]]), torch.tensor([[[7, 255]]]))  # labels >= K and 255: ignored
    figures = meter.compute(["bg", "x", "y", "z"])
    # class 0: I 1, U 2+2-1=3; class 1: I 2, U 2+3-2=3; class 2: I 0, U 1 (its prediction lies on the 255 pixel)
    assert figures["per_class_IoU"] == pytest.approx({"bg": 100 / 3, "x": 200 / 3, "y": 0.0, "z": None})
    assert figures["mIoU"] == pytest.approx(100 / 3)
    assert figures["pixel_acc"] == pytest.approx(60.0)  # 3 of 5 counted pixels
    assert figures["mean_acc"] == pytest.approx(50.0)  # (1/2 + 2/2 + 0/1) / 3
    assert SegmentationMeter(3).compute()["mIoU"] is None
    with pytest.raises(ValueError, match="num_classes"):
        meter.update(torch.tensor([[[4]]]), torch.tensor([[[0]]]))


def test_accumulation_equals_one_batch():
    gen = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 5, (6, 8, 9), generator=gen)
    target = torch.randint(0, 6, (6, 8, 9), generator=gen).to(torch.uint8)
    target[target == 5] = 255
    split, whole = SegmentationMeter(5), SegmentationMeter(5)
    split.update(pred[:2], target[:2])
    split.update(pred[2:], target[2:].long())
    whole.update(pred, target)
    assert torch.equal(split.confusion, whole.confusion) and split.compute() == whole.compute()
    assert int(whole.confusion.sum()) == int((target != 255).sum())


def test_metric_names():
    assert len(metric_names("detect")) == 13 and metric_names("detect")[-1] == "voc_mAP50"
    assert metric_names("instance")[12:14] == ["segm_AP", "segm_AP50"] and len(metric_names("instance")) == 25
    assert metric_names("segment") == ["mIoU", "pixel_acc", "mean_acc"]
    with pytest.raises(ValueError, match="unknown task"):
        metric_names("classify")
