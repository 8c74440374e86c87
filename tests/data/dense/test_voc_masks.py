"""voc:ROOT and masks:ROOT on tiny trees the test writes: XML boxes, palette PNGs, mask folders."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vipr.data.dense import is_dense_source, open_dense
from vipr.data.dense.info import dense_info
from vipr.errors import DataError

W, H, CANVAS = 40, 30, 20  # canvas / image = 0.5


def xml(objects, width=W, height=H):
    body = "".join(f"<object><name>{name}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin>"
                   f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
                   for name, d, b in objects)
    return f"<annotation><size><width>{width}</width><height>{height}</height></size>{body}</annotation>"


def palette_png(path: Path, values: np.ndarray) -> None:
    im = Image.fromarray(values.astype(np.uint8), mode="P")
    im.putpalette([c for k in range(256) for c in (k, 255 - k, (7 * k) % 256)])
    im.save(path)


def write_voc(root: Path) -> np.ndarray:
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main", "SegmentationClass"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in ("001", "002", "003", "004", "005"):
        Image.new("RGB", (W, H), (10, 200, 30)).save(root / "JPEGImages" / f"{i}.jpg", quality=95)
    (root / "Annotations/001.xml").write_text(xml([("dog", 0, (5, 7, 14, 16)), ("person", 1, (21, 1, 40, 30))]))
    (root / "Annotations/002.xml").write_text(xml([("cat", 0, (5, 2, 4, 9)),  # zero width: xmin - 1 == xmax
                                                   ("cat", 0, (50, 40, 60, 45)),  # outside
                                                   ("cat", 0, (31, 21, 60, 45)),  # clipped
                                                   ("cat", 0, (2, 2, "x", 9))]))  # not a number
    (root / "Annotations/003.xml").write_text("<annotation><object><name>dog</nam")  # malformed
    (root / "Annotations/005.xml").write_text(xml([("dog", 0, (1, 1, 4, 4))]))
    (root / "JPEGImages/005.jpg").write_bytes(b"not a jpeg")
    (root / "ImageSets/Main/train.txt").write_text("001\n002\n003\n004\n005\n")
    (root / "ImageSets/Main/val.txt").write_text("001\n")
    labels = np.zeros((H, W), np.uint8)
    labels[6:16, 4:14] = 12  # dog
    labels[5, 4:14] = 255  # a VOC border
    palette_png(root / "SegmentationClass/001.png", labels)
    bad = labels.copy()
    bad[0, 0] = 77  # no such class
    palette_png(root / "SegmentationClass/002.png", bad)
    palette_png(root / "SegmentationClass/004.png", labels)  # segmentation only: no XML
    return labels


def test_voc_boxes_labels_semantic_and_skips(tmp_path):
    root = tmp_path / "VOC2012"
    labels = write_voc(root)
    assert is_dense_source(str(root))
    ds = open_dense(f"voc:{root}", store_size=CANVAS, cache_dir=tmp_path / "cache")
    assert ds.classes[:3] == ["background", "aeroplane", "bicycle"] and len(ds.classes) == 21
    assert len(ds.train) == 3 and len(ds.test) == 1  # 003 malformed, 005 undecodable
    a = ds.train[0]
    np.testing.assert_allclose(a.boxes.numpy(), [[2, 3, 7, 8], [10, 0, 20, 15]])  # (xmin - 1, ymin - 1, xmax, ymax) / 2
    assert a.labels.tolist() == [ds.classes.index("dog"), ds.classes.index("person")]
    assert a.difficult.tolist() == [0, 1] and a.masks is None
    semantic = a.semantic.numpy()
    expected = np.full((CANVAS, CANVAS), 255, np.uint8)
    expected[:15, :20] = labels[::2, ::2] if False else np.asarray(
        Image.fromarray(labels).resize((20, 15), Image.Resampling.NEAREST))
    np.testing.assert_array_equal(semantic, expected)
    assert set(np.unique(semantic)) == {0, 12, 255}
    b = ds.train[1]
    np.testing.assert_allclose(b.boxes.numpy(), [[15, 10, 20, 15]])  # (30, 20, 40, 30) after clipping, / 2
    assert (b.semantic.numpy() == 255).all()  # its label map has an unknown value: skipped, all ignored
    c = ds.train[2]
    assert len(c.boxes) == 0 and (c.semantic.numpy() == expected).all()
    reasons = {item[2]: item[3] for item in ds.skipped}
    assert set(reasons) == {"002 object 0", "002 object 1", "002 object 3", "image 003", "002 label map", "image 005"}
    assert "zero-area" in reasons["002 object 0"] and "outside" in reasons["002 object 1"]
    assert "bndbox" in reasons["002 object 3"] and "malformed XML" in reasons["image 003"]
    assert "77" in reasons["002 label map"] and ds.clipped == 1
    info = dense_info(ds)
    assert info["splits"]["train"]["instances_per_class"]["cat"] == 1 and info["splits"]["train"]["difficult"] == 1


def test_voc_lists_and_missing_list(tmp_path):
    root = tmp_path / "voc"
    write_voc(root)
    (root / "ImageSets/Main/trainval.txt").write_text("001\n004\n")
    ds = open_dense(f"voc:{root}?train=trainval&test=val", store_size=CANVAS, cache_dir=tmp_path / "cache")
    assert len(ds.train) == 2 and len(ds.test) == 1
    with pytest.raises(DataError, match="nolist.txt"):
        open_dense(f"voc:{root}?train=nolist", store_size=CANVAS, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="unknown voc:ROOT parameter"):
        open_dense(f"voc:{root}?trian=x", store_size=CANVAS, cache_dir=tmp_path / "cache")


def test_xml_entities_are_refused(tmp_path):
    root = tmp_path / "voc"
    write_voc(root)
    (root / "Annotations/001.xml").write_text('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e "boom">]>'
                                              "<annotation><object><name>&e;</name></object></annotation>")
    ds = open_dense(f"voc:{root}", store_size=CANVAS, cache_dir=tmp_path / "cache")
    assert any(item[2] == "image 001" and "EntitiesForbidden" in item[3] for item in ds.skipped)


def test_mask_folder_pair(tmp_path):
    root = tmp_path / "seg"
    labels = np.zeros((H, W), np.uint8)
    labels[:, 20:] = 2
    labels[0] = 255
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for name in ("a", "b"):
            Image.new("RGB", (W, H), (1, 2, 3)).save(root / "images" / split / f"{name}.png")
            Image.fromarray(labels, mode="L").save(root / "masks" / split / f"{name}.png")
    Image.new("RGB", (W, H)).save(root / "images" / "train" / "lonely.png")  # no mask
    Image.new("RGB", (W, H)).save(root / "images" / "train" / "rgbmask.png")
    Image.new("RGB", (W, H)).save(root / "masks" / "train" / "rgbmask.png")  # a colour mask
    assert is_dense_source(str(root))
    ds = open_dense(f"masks:{root}", store_size=CANVAS, cache_dir=tmp_path / "cache")
    assert ds.classes == ["0", "1", "2"] and len(ds.train) == 2 and len(ds.test) == 2
    semantic = ds.train[0].semantic.numpy()
    expected = np.full((CANVAS, CANVAS), 255, np.uint8)
    expected[:15, :20] = np.asarray(Image.fromarray(labels).resize((20, 15), Image.Resampling.NEAREST))
    np.testing.assert_array_equal(semantic, expected)
    assert len(ds.train[0].boxes) == 0 and ds.train[0].masks is None
    reasons = {item[1]: item[3] for item in ds.skipped}
    assert "no masks/train/lonely.png" in reasons["images/train/lonely.png"]
    assert "mode RGB" in reasons["images/train/rgbmask.png"]
    share = dense_info(ds)["splits"]["train"]["semantic_pixel_share"]
    assert share["1"] == 0 and share["0"] == pytest.approx(share["2"], abs=0.1)
    native = open_dense(str(root), cache_dir=tmp_path / "cache")  # unset store_size: the longest side
    assert native.train.canvas_size == W and (native.train.semantic(0).numpy()[:H] == labels).all()


def test_unset_store_size_keeps_small_images_at_their_size(tmp_path):
    root = tmp_path / "voc"
    write_voc(root)
    ds = open_dense(f"voc:{root}", cache_dir=tmp_path / "cache")
    assert ds.train.canvas_size == W and ds.train[0].size == (H, W)  # the longest side, not blown up to 256
    np.testing.assert_allclose(ds.train.boxes(0).numpy(), [[4, 6, 14, 16], [20, 0, 40, 30]])


def test_mask_folder_info_table_has_no_box_columns(tmp_path):
    from vipr.data.dense.info import format_dense_info

    root = tmp_path / "seg"
    for sub in ("images/train", "masks/train"):
        (root / sub).mkdir(parents=True)
    Image.new("RGB", (W, H)).save(root / "images/train/a.png")
    Image.fromarray(np.ones((H, W), np.uint8)).save(root / "masks/train/a.png")
    text = format_dense_info(dense_info(open_dense(str(root), cache_dir=tmp_path / "cache")))
    assert "targets     semantic maps" in text and "classes     2\n" in text and "small" not in text
    assert "train pixels %" in text and "clipped" not in text
