"""open_dataset over every SRC form, its cache, and its errors."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vipr.data import sources
from vipr.data.info import dataset_info
from vipr.data.sources import SHAPE_NAMES, open_dataset
from vipr.errors import DataError


def write_image(path: Path, size=(24, 20), colour=(200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def make_tree(root: Path, splits=("train", "val"), classes=("cat", "dog"), per_class=3) -> None:
    for split in splits:
        for k, name in enumerate(classes):
            for i in range(per_class):
                ext = (".png", ".JPG", ".bmp")[i % 3]  # extensions match case-insensitively
                size, colour = (20 + 7 * i, 16 + 5 * k), (40 * i, 90 * k, 7)
                write_image(root / split / name / f"{i}{ext}", size=size, colour=colour)


# ---- image folders ----

def test_split_tree_decodes_and_skips_corrupt_file(tmp_path):
    root = tmp_path / "tree"
    make_tree(root)
    (root / "train" / "dog" / "broken.jpg").write_bytes(b"this is not a jpeg")
    (root / "train" / "cat" / "notes.txt").write_text("ignored: not an image extension")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image \(list: "):
        ds = open_dataset(str(root), store_size=16, cache_dir=tmp_path / "cache")
    assert ds.classes == ["cat", "dog"]
    assert ds.train.images.shape == (6, 3, 16, 16) and ds.train.images.dtype == np.uint8
    assert ds.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.test is not None and len(ds.test) == 6
    assert [path for path, _ in ds.skipped] == ["train/dog/broken.jpg"]
    assert ds.skipped[0][1]  # the reason is recorded
    info = dataset_info(ds)
    assert info["skipped"]["count"] == 1 and info["splits"]["train"]["per_class"] == {"cat": 3, "dog": 3}
    assert info["image_size"] == [16, 16]


def test_centre_crop_keeps_the_middle(tmp_path):
    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, :20] = (0, 0, 255)
    wide[:, 20:40] = (0, 255, 0)  # the centred 20x20 square is pure green
    wide[:, 40:] = (255, 0, 0)
    (tmp_path / "tree" / "a").mkdir(parents=True)
    Image.fromarray(wide).save(tmp_path / "tree" / "a" / "wide.png")
    ds = open_dataset(str(tmp_path / "tree"), store_size=10, cache_dir=tmp_path / "cache")
    image = np.asarray(ds.train.images[0])
    assert image.shape == (3, 10, 10)
    inner = image[:, :, 1:-1]  # edge columns blend in their neighbours, as any antialiased resize does
    assert (inner[1] == 255).all() and (inner[0] == 0).all() and (inner[2] == 0).all()
    assert (image[1] > 200).all()


def test_flat_tree_is_train_only(tmp_path):
    make_tree(tmp_path / "flat", splits=("",))
    ds = open_dataset(str(tmp_path / "flat"), cache_dir=tmp_path / "cache")
    assert ds.test is None and ds.classes == ["cat", "dog"]
    assert ds.train.images.shape == (6, 3, 64, 64)  # default store size for file trees


def test_loose_images_are_unlabelled(tmp_path):
    for i in range(3):
        write_image(tmp_path / "pile" / f"{i}.png")
    ds = open_dataset(str(tmp_path / "pile"), store_size=8, cache_dir=tmp_path / "cache")
    assert ds.classes == [] and ds.train.labels.tolist() == [-1, -1, -1]


def test_empty_class_folder_is_named(tmp_path):
    make_tree(tmp_path / "t", splits=("",))
    (tmp_path / "t" / "zebra").mkdir()
    with pytest.raises(DataError, match="empty class folder .*zebra"):
        open_dataset(str(tmp_path / "t"), cache_dir=tmp_path / "cache")


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(str(tmp_path / "nowhere"), cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("extra, found", [("extra/x.png", "extra/"), ("loose.png", "loose.png")])
def test_mixed_layout_is_rejected(tmp_path, extra, found):
    make_tree(tmp_path / "t", splits=("train",))
    write_image(tmp_path / "t" / extra)
    with pytest.raises(DataError, match=f"mixes layouts.*{found}.*accepted folder layouts"):
        open_dataset(str(tmp_path / "t"), cache_dir=tmp_path / "cache")


def test_loose_image_next_to_class_folders(tmp_path):
    make_tree(tmp_path / "t", splits=("",))
    write_image(tmp_path / "t" / "stray.jpg")
    with pytest.raises(DataError, match="stray.jpg"):
        open_dataset(str(tmp_path / "t"), cache_dir=tmp_path / "cache")


def test_test_classes_must_match(tmp_path):
    make_tree(tmp_path / "t", splits=("train",))
    make_tree(tmp_path / "t", splits=("test",), classes=("cat", "cow"))
    with pytest.raises(DataError, match="classes differ.*dog.*cow"):
        open_dataset(str(tmp_path / "t"), cache_dir=tmp_path / "cache")


def test_no_images_at_all(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "README.txt").write_text("nothing here")
    with pytest.raises(DataError, match="no images"):
        open_dataset(str(tmp_path / "t"), cache_dir=tmp_path / "cache")


def test_second_open_reads_the_cache(tmp_path, monkeypatch):
    make_tree(tmp_path / "t")
    first = open_dataset(str(tmp_path / "t"), store_size=8, cache_dir=tmp_path / "cache")

    def no_decoding(path, size):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(sources, "_decode_image", no_decoding)
    second = open_dataset(str(tmp_path / "t"), store_size=8, cache_dir=tmp_path / "cache")
    assert second.digest == first.digest
    assert isinstance(second.train.images, np.memmap)
    np.testing.assert_array_equal(second.train.images, first.train.images)
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".tmp")]


def test_changed_file_rebuilds_and_failed_build_leaves_nothing(tmp_path, monkeypatch):
    make_tree(tmp_path / "t")
    first = open_dataset(str(tmp_path / "t"), store_size=8, cache_dir=tmp_path / "cache")
    write_image(tmp_path / "t" / "train" / "cat" / "0.png", colour=(1, 2, 3))
    os.utime(tmp_path / "t" / "train" / "cat" / "0.png", ns=(1, 1))  # a new mtime for sure
    monkeypatch.setattr(sources, "_decode_into", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):  # a crash mid-build publishes nothing
        open_dataset(str(tmp_path / "t"), store_size=8, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").iterdir())) == 1
    monkeypatch.undo()
    second = open_dataset(str(tmp_path / "t"), store_size=8, cache_dir=tmp_path / "cache")
    assert second.digest != first.digest


# ---- CIFAR ----

def cifar_batch(n, label_key, offset=0):
    data = np.zeros((n, 3072), np.uint8)
    data[:, :1024], data[:, 1024:2048], data[:, 2048:] = 10, 20, 30  # channel planes R, G, B
    data[:, 0] = np.arange(n) + offset
    return {b"data": data, label_key: [(i + offset) % 3 for i in range(n)], b"batch_label": b"x"}


def dump(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def test_cifar10_from_parent_folder(tmp_path):
    folder = tmp_path / "data" / "cifar-10-batches-py"
    for i in range(1, 6):
        dump(folder / f"data_batch_{i}", cifar_batch(4, b"labels", offset=4 * (i - 1)))
    dump(folder / "test_batch", cifar_batch(5, b"labels"))
    dump(folder / "batches.meta", {b"label_names": [b"airplane", b"automobile", b"bird"]})
    ds = open_dataset(str(tmp_path / "data"), cache_dir=tmp_path / "cache")
    assert ds.classes == ["airplane", "automobile", "bird"]
    assert ds.train.images.shape == (20, 3, 32, 32) and len(ds.test) == 5
    assert (ds.train.images[:, 1] == 20).all() and (ds.train.images[:, 2] == 30).all()
    assert ds.train.images[:, 0, 0, 0].tolist() == list(range(20))
    assert ds.train.labels.tolist() == [i % 3 for i in range(20)]
    assert open_dataset(str(folder), cache_dir=tmp_path / "cache").digest == ds.digest


def test_cifar100_uses_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    dump(folder / "train", {**cifar_batch(6, b"fine_labels"), b"coarse_labels": [9] * 6})
    dump(folder / "test", {**cifar_batch(3, b"fine_labels"), b"coarse_labels": [9] * 3})
    dump(folder / "meta", {b"fine_label_names": [b"apple", b"bee", b"cup"], b"coarse_label_names": [b"x"]})
    ds = open_dataset(str(folder), cache_dir=tmp_path / "cache")
    assert ds.classes == ["apple", "bee", "cup"] and ds.train.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert len(ds.test) == 3


def test_cifar_missing_batch_is_named(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    dump(folder / "batches.meta", {b"label_names": [b"a"]})
    with pytest.raises(DataError, match="data_batch_1"):
        open_dataset(str(folder), cache_dir=tmp_path / "cache")


# ---- npz ----

@pytest.mark.parametrize("layout", ["nhwc", "nchw", "gray", "gray1"])
def test_npz_layouts(tmp_path, layout):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (7, 3, 8, 6), dtype=np.uint8)  # non-square to catch swapped axes
    if layout.startswith("gray"):
        base[:, 1] = base[:, 2] = base[:, 0]
    stored = {"nhwc": base.transpose(0, 2, 3, 1), "nchw": base,
              "gray": base[:, 0], "gray1": base[:, 0, :, :, None]}[layout]
    np.savez(tmp_path / "d.npz", x_train=stored, y_train=np.arange(7) % 2, x_test=stored[:3], y_test=np.zeros(3, int),
             classes=np.array(["even", "odd"]))
    ds = open_dataset(str(tmp_path / "d.npz"), cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(ds.train.images, base)
    assert ds.classes == ["even", "odd"] and len(ds.test) == 3


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "missing.npz", x_train=np.zeros((2, 4, 4, 3), np.uint8), y_train=np.zeros(2, int))
    with pytest.raises(DataError, match="x_test"):
        open_dataset(str(tmp_path / "missing.npz"), cache_dir=tmp_path / "cache")
    x = np.zeros((2, 4, 4, 3), np.float32)
    np.savez(tmp_path / "float.npz", x_train=x, y_train=np.zeros(2, int), x_test=x, y_test=np.zeros(2, int))
    with pytest.raises(DataError, match="x_train has dtype float32"):
        open_dataset(str(tmp_path / "float.npz"), cache_dir=tmp_path / "cache")


def test_npz_store_size_resizes(tmp_path):
    x = np.full((2, 8, 8, 3), 77, np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=[0, 1], x_test=x, y_test=[1, 0])
    ds = open_dataset(str(tmp_path / "d.npz"), store_size=16, cache_dir=tmp_path / "cache")
    assert ds.train.images.shape == (2, 3, 16, 16) and (ds.train.images == 77).all()
    assert ds.classes == ["0", "1"]


def test_unsupported_file(tmp_path):
    (tmp_path / "data.csv").write_text("a,b")
    with pytest.raises(DataError, match="accepted data sources"):
        open_dataset(str(tmp_path / "data.csv"), cache_dir=tmp_path / "cache")


# ---- built-ins ----

def test_builtin_digits(tmp_path):
    ds = open_dataset("builtin:digits", cache_dir=tmp_path)
    assert ds.train.images.shape == (1437, 3, 32, 32) and ds.test.images.shape == (360, 3, 32, 32)
    assert ds.classes == [str(d) for d in range(10)]
    assert (ds.train.images[:, 0] == ds.train.images[:, 2]).all() and ds.train.images.max() > 200
    train_share = np.bincount(ds.train.labels) / len(ds.train)
    test_share = np.bincount(ds.test.labels) / len(ds.test)
    assert np.abs(train_share - test_share).max() < 0.01  # stratified


def test_builtin_shapes_deterministic_and_balanced(tmp_path):
    src = "builtin:shapes?train=120&test=30&size=16&seed=3"
    a = open_dataset(src, cache_dir=tmp_path / "a")
    b = open_dataset(src, cache_dir=tmp_path / "b")  # generated again from scratch
    np.testing.assert_array_equal(a.train.images, b.train.images)
    assert a.digest == b.digest and a.classes == list(SHAPE_NAMES[:10])
    assert a.train.images.shape == (120, 3, 16, 16) and len(a.test) == 30
    assert np.bincount(a.train.labels).tolist() == [12] * 10
    other = open_dataset("builtin:shapes?train=120&test=30&size=16&seed=4", cache_dir=tmp_path / "a")
    assert other.digest != a.digest and not np.array_equal(other.train.images, a.train.images)


def test_builtin_shapes_parameters(tmp_path):
    ds = open_dataset("builtin:shapes?classes=12&size=20&train=24&test=0", cache_dir=tmp_path)
    assert ds.classes == list(SHAPE_NAMES) and len(ds.classes) == 12
    assert ds.train.images.shape == (24, 3, 20, 20) and ds.test is None
    assert sorted(ds.train.labels.tolist()) == sorted(list(range(12)) * 2)


@pytest.mark.parametrize("src, message", [
    ("builtin:shapes?colour=red", "valid keys: classes, size, train, test, seed"),
    ("builtin:shapes?classes=many", "not an integer"),
    ("builtin:shapes?classes=13", "out of range"),
    ("builtin:digits?size=8", "takes no parameters"),
    ("builtin:mnist", "builtin:digits and builtin:shapes"),
])
def test_builtin_errors(tmp_path, src, message):
    with pytest.raises(DataError, match=message):
        open_dataset(src, cache_dir=tmp_path)


def test_damaged_cache_entry_names_the_fix(tmp_path):
    ds = open_dataset("builtin:shapes?train=10&test=0&size=8", cache_dir=tmp_path)
    entry = next(p for p in tmp_path.iterdir() if p.name.startswith("shapes-"))
    (entry / "train_labels.npy").unlink()
    del ds
    with pytest.raises(DataError, match="damaged.*delete that folder"):
        open_dataset("builtin:shapes?train=10&test=0&size=8", cache_dir=tmp_path)
