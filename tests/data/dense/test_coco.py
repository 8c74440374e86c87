"""coco:ROOT on a tiny COCO tree the test writes: polygons, RLE, crowds, and every bad record."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from vipr.data.dense import is_dense_source, open_dense
from vipr.data.dense.info import dense_info
from vipr.errors import DataError

W, H, CANVAS = 40, 30, 20  # canvas / image = 0.5 on both axes


def rle_square(top, left, side):
    """A compressed RLE of a side x side square on an H x W image, and the full mask."""
    mask = np.zeros((H, W), np.uint8)
    mask[top:top + side, left:left + side] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": [H, W], "counts": rle["counts"].decode()}, mask


def write_coco(root: Path, annotations=None, images=None, categories=None, split="train", raw=None):
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / f"{split}2017").mkdir(exist_ok=True)
    for name in ("a.png", "b.png"):
        Image.new("RGB", (W, H), (90, 20, 200)).save(root / f"{split}2017" / name)
    data = {"images": images if images is not None else
            [{"id": 1, "file_name": "a.png", "width": W, "height": H},
             {"id": 2, "file_name": "b.png", "width": W, "height": H}],
            "annotations": annotations if annotations is not None else good_annotations(),
            "categories": categories or [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]}
    (root / "annotations" / f"instances_{split}2017.json").write_text(raw if raw is not None else json.dumps(data))


def good_annotations():
    rle, _ = rle_square(10, 20, 10)
    crowd = mask_utils.encode(np.asfortranarray(rle_square(0, 0, 4)[1]))
    return [
        {"id": 10, "image_id": 1, "category_id": 3, "bbox": [4, 6, 10, 8], "iscrowd": 0, "area": 80,
         "segmentation": [[4, 6, 14, 6, 14, 14, 4, 14]]},
        {"id": 11, "image_id": 1, "category_id": 7, "bbox": [20, 10, 10, 10], "iscrowd": 0, "segmentation": rle},
        {"id": 12, "image_id": 2, "category_id": 7, "bbox": [0, 0, 4, 4], "iscrowd": 1,  # uncompressed crowd RLE
         "segmentation": {"size": [H, W], "counts": _uncompressed(crowd)}},
    ]


def _uncompressed(rle):
    mask = mask_utils.decode(rle).ravel(order="F")
    runs, value, count = [], 0, 0
    for v in mask:
        if v != value:
            runs.append(count)
            value, count = v, 0
        count += 1
    return runs + [count]


def test_round_trip_boxes_masks_and_classes(tmp_path):
    root = tmp_path / "coco"
    write_coco(root)
    write_coco(root, split="val", annotations=good_annotations()[:1])
    assert is_dense_source(str(root)) and is_dense_source(f"coco:{root}")
    ds = open_dense(f"coco:{root}", store_size=CANVAS, cache_dir=tmp_path / "cache")
    assert ds.classes == ["background", "cat", "dog"] and ds.category_ids == [0, 3, 7]
    assert len(ds.train) == 2 and len(ds.test) == 2 and ds.skipped == []
    assert ds.test.instances.ann_ids.tolist() == [10]
    a = ds.train[0]
    assert a.image.shape == (3, CANVAS, CANVAS) and a.size == (15, 20) and a.orig_size == (H, W)
    assert (a.image[:, 15:] == 0).all() and a.image[2, 0, 0] == 200  # padding below, pixels kept
    np.testing.assert_allclose(a.boxes.numpy(), [[2, 3, 7, 7], [10, 5, 15, 10]])  # xyxy * 0.5
    assert a.labels.tolist() == [1, 2] and a.iscrowd.tolist() == [0, 0]
    masks = a.masks.numpy()
    assert masks.shape == (2, CANVAS, CANVAS) and masks.dtype == np.uint8
    expected = np.zeros((CANVAS, CANVAS), np.uint8)
    expected[3:7, 2:7] = 1  # the polygon scaled by 0.5 covers pixel centres x 2..6, y 3..6
    np.testing.assert_array_equal(masks[0], expected)
    expected = np.zeros((CANVAS, CANVAS), np.uint8)
    expected[:15, :20] = rle_square(10, 20, 10)[1][1::2, 1::2]  # nearest downscale samples odd pixels
    np.testing.assert_array_equal(masks[1], expected)
    semantic = a.semantic.numpy()
    assert (semantic[15:] == 255).all() and (semantic[masks[1] == 1] == 2).all() and semantic[0, 0] == 0
    b = ds.train[1]
    assert b.iscrowd.tolist() == [1] and b.masks.numpy()[0, :2, :2].all() and b.masks.numpy().sum() == 4
    assert (b.semantic.numpy()[:2, :2] == 255).all()  # crowds are ignored in the semantic map
    again = open_dense(f"coco:{root}", store_size=CANVAS, cache_dir=tmp_path / "cache")
    assert again.digest == ds.digest and isinstance(again.train.images, np.memmap)


def test_bad_annotations_are_skipped_with_their_ids(tmp_path):
    root = tmp_path / "coco"
    bad = good_annotations() + [
        {"id": 20, "image_id": 1, "category_id": 3, "bbox": [5, 5, 0, 4]},  # zero area
        {"id": 21, "image_id": 1, "category_id": 3, "bbox": [50, 40, 5, 5]},  # entirely outside
        {"id": 22, "image_id": 1, "category_id": 3, "bbox": [30, 20, 20, 20],  # partly outside: clipped
         "segmentation": [[30, 20, 39, 20, 39, 29, 30, 29]]},
        {"id": 23, "image_id": 1, "category_id": 99, "bbox": [1, 1, 2, 2]},  # unknown category
        {"id": 10, "image_id": 2, "category_id": 3, "bbox": [1, 1, 2, 2]},  # duplicate id
        {"id": 24, "image_id": 77, "category_id": 3, "bbox": [1, 1, 2, 2]},  # no such image
        {"id": 25, "image_id": 3, "category_id": 3, "bbox": [1, 1, 2, 2],  # image file missing on disk
         "segmentation": [[1, 1, 3, 1, 3, 3]]},
        {"id": 26, "image_id": 2, "category_id": 3, "bbox": [1, 1, 2, 2], "segmentation": [[1, 1]]},
    ]
    images = [{"id": 1, "file_name": "a.png", "width": W, "height": H},
              {"id": 2, "file_name": "b.png", "width": W, "height": H},
              {"id": 3, "file_name": "gone.png", "width": W, "height": H},
              {"id": 2, "file_name": "a.png", "width": W, "height": H}]  # duplicate image id
    write_coco(root, annotations=bad, images=images)
    ds = open_dense(str(root), store_size=CANVAS, cache_dir=tmp_path / "cache")
    reasons = {item[2]: item[3] for item in ds.skipped}
    assert set(reasons) == {"annotation 20", "annotation 21", "annotation 23", "annotation 10", "annotation 24",
                            "image 3", "annotation 25", "annotation 26", "image 2"}
    assert "zero-area" in reasons["annotation 20"] and "outside" in reasons["annotation 21"]
    assert "category_id 99" in reasons["annotation 23"] and "duplicate annotation id" in reasons["annotation 10"]
    assert "image_id 77" in reasons["annotation 24"] and "gone.png" in reasons["image 3"]
    assert "polygons" in reasons["annotation 26"] and "duplicate image id" in reasons["image 2"]
    assert len(ds.train) == 2 and ds.clipped == 1
    np.testing.assert_allclose(ds.train.boxes(0).numpy()[-1], [15, 10, 20, 15])  # clipped to 40x30, then * 0.5
    lines = Path(ds.skipped_file).read_text().splitlines()
    assert len(lines) == 9 and lines[0].split("\t")[1] == "annotations/instances_train2017.json"
    info = dense_info(ds)
    assert info["skipped"]["count"] == 9 and info["clipped_boxes"] == 1
    by_reason = info["skipped"]["by_reason"]
    assert sum(by_reason.values()) == 9 and by_reason["unknown category_id N"] == 1
    assert info["splits"]["train"]["instances_per_class"] == {"cat": 2, "dog": 1}
    assert sum(info["splits"]["train"]["box_sizes"].values()) == 3 and info["splits"]["train"]["crowd"] == 1


@pytest.mark.parametrize("raw, field", [
    ('{"images": [1, 2', "line 1, column"),
    ('[1, 2]', "top level"),
    ('{"images": [], "annotations": []}', "'categories'"),
    ('{"images": {}, "annotations": [], "categories": []}', "'images' must be a list"),
    ('{"images": [], "annotations": [], "categories": [{"id": "x", "name": "a"}]}', "categories[0].id"),
    ('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]}',
     "categories[1].id"),
])
def test_unusable_file_names_file_and_field(tmp_path, raw, field):
    root = tmp_path / "coco"
    write_coco(root, raw=raw)
    with pytest.raises(DataError) as err:
        open_dense(f"coco:{root}", store_size=CANVAS, cache_dir=tmp_path / "cache")
    assert "instances_train2017.json" in str(err.value) and field in str(err.value)


def test_images_by_file_name_relative_to_root_and_no_train_file(tmp_path):
    root = tmp_path / "coco"
    write_coco(root, images=[{"id": 1, "file_name": "pics/a.png", "width": W, "height": H}],
               annotations=good_annotations()[:1])
    (root / "pics").mkdir()
    Image.new("RGB", (W, H)).save(root / "pics" / "a.png")
    ds = open_dense(f"coco:{root}", store_size=CANVAS, cache_dir=tmp_path / "cache")
    assert ds.train.names == ["pics/a.png"] and ds.test is None
    (root / "annotations" / "instances_train2017.json").rename(root / "annotations" / "instances_other.json")
    with pytest.raises(DataError, match="instances_train"):
        open_dense(f"coco:{root}", store_size=CANVAS, cache_dir=tmp_path / "cache")


def test_scenes_written_as_coco_read_back_the_same(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from vipr.data.dense.export import coco_ground_truth, write_coco

    scenes = open_dense("builtin:scenes?size=48&train=5&test=3&classes=4", cache_dir=tmp_path / "cache")
    root = write_coco(scenes, tmp_path / "as-coco")
    back = open_dense(f"coco:{root}", store_size=48, cache_dir=tmp_path / "cache")
    assert back.classes == scenes.classes and back.skipped == [] and len(back.test) == 3
    for a, b in ((scenes.train, back.train), (scenes.test, back.test)):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.semantic_maps, b.semantic_maps)  # painted from the masks again
        for i in range(len(a)):
            np.testing.assert_allclose(a.boxes(i), b.boxes(i))
            assert torch_equal(a.masks(i), b.masks(i)) and torch_equal(a.labels(i), b.labels(i))
    gt = COCO()
    gt.dataset = coco_ground_truth(scenes, "test")
    gt.createIndex()
    results = [{**{k: a[k] for k in ("image_id", "category_id", "bbox", "segmentation")}, "score": 1.0}
               for a in gt.dataset["annotations"]]
    for kind in ("bbox", "segm"):  # ground truth fed back as detections scores AP 1
        ev = COCOeval(gt, gt.loadRes(results), kind)
        ev.evaluate(), ev.accumulate(), ev.summarize()
        assert np.isclose(ev.stats[0], 1.0) and np.isclose(ev.stats[1], 1.0)  # AP and AP50


def torch_equal(a, b):
    return bool((a == b).all()) and a.shape == b.shape


def test_size_mismatch_skips_the_image_and_nothing_usable_is_an_error(tmp_path):
    root = tmp_path / "coco"
    write_coco(root, images=[{"id": 1, "file_name": "a.png", "width": W + 10, "height": H},
                             {"id": 2, "file_name": "b.png", "width": W, "height": H}])
    ds = open_dense(f"coco:{root}", store_size=CANVAS, cache_dir=tmp_path / "cache")
    reasons = {item[2]: item[3] for item in ds.skipped}
    assert "the JSON says 50x30" in reasons["image 1"] and "its image 1 was skipped" in reasons["annotation 10"]
    assert len(ds.train) == 1 and ds.train.instances.ann_ids.tolist() == [12]
    write_coco(root, images=[{"id": 1, "file_name": "nowhere.png", "width": W, "height": H}])
    with pytest.raises(DataError, match="no usable train image.*nowhere.png"):
        open_dense(f"coco:{root}", store_size=CANVAS, cache_dir=tmp_path / "cache")


def test_unset_store_size_is_the_longest_side(tmp_path):
    root = tmp_path / "coco"
    write_coco(root)
    ds = open_dense(f"coco:{root}", cache_dir=tmp_path / "cache")
    assert ds.train.canvas_size == W
    np.testing.assert_allclose(ds.train.boxes(0).numpy(), [[4, 6, 14, 14], [20, 10, 30, 20]])
    np.testing.assert_array_equal(ds.train.masks(0).numpy()[1, :H], rle_square(10, 20, 10)[1])
