"""Few-label splits: stratified, deterministic, nested, and checked against the dataset digest."""

import json

import numpy as np
import pytest

from vipr.data.splits import load_label_split, make_label_split, save_label_split
from vipr.data.types import Dataset, ImageSplit
from vipr.errors import DataError

LABELS = np.repeat(np.arange(5), [100, 50, 30, 7, 3])  # imbalanced on purpose


def dataset(labels=LABELS, digest="abc123"):
    images = np.zeros((len(labels), 3, 2, 2), np.uint8)
    return Dataset("toy", ImageSplit(images, labels), None, [str(k) for k in range(5)], digest)


def test_fraction_is_stratified_with_at_least_one_per_class():
    idx = make_label_split(LABELS, label_fraction=0.1, seed=0)
    assert idx.dtype == np.int64 and (np.diff(idx) > 0).all()
    assert np.bincount(LABELS[idx]).tolist() == [10, 5, 3, 1, 1]  # round(10%), at least one


def test_per_class():
    idx = make_label_split(LABELS, per_class=3, seed=1)
    assert np.bincount(LABELS[idx]).tolist() == [3] * 5


def test_deterministic_per_seed_and_nested():
    a = make_label_split(LABELS, label_fraction=0.1, seed=7)
    np.testing.assert_array_equal(a, make_label_split(LABELS, label_fraction=0.1, seed=7))
    assert not np.array_equal(a, make_label_split(LABELS, label_fraction=0.1, seed=8))
    small = make_label_split(LABELS, label_fraction=0.02, seed=7)
    assert set(small) <= set(a)  # 2% inside 10% for one seed


def test_unlabelled_images_are_never_chosen():
    labels = np.array([-1, 0, -1, 1, 1, 0, -1])
    idx = make_label_split(labels, label_fraction=1.0)
    assert idx.tolist() == [1, 3, 4, 5]


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one"),
    ({"label_fraction": 0.1, "per_class": 2}, "exactly one"),
    ({"label_fraction": 0.0}, "0.0"),
    ({"label_fraction": 1.5}, "1.5"),
    ({"per_class": 0}, "per_class must be"),
])
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_label_split(LABELS, **kwargs)


def test_per_class_larger_than_a_class():
    with pytest.raises(DataError, match="class 4 has only 3"):
        make_label_split(LABELS, per_class=5)


def test_round_trip(tmp_path):
    ds = dataset()
    idx = make_label_split(LABELS, label_fraction=0.1, seed=3)
    save_label_split(tmp_path / "split.json", idx, ds, label_fraction=0.1, seed=3)
    doc = json.loads((tmp_path / "split.json").read_text())
    assert doc["format"] == "vipr-label-split/1" and doc["dataset_digest"] == "abc123"
    assert doc["num_images"] == len(LABELS) and doc["label_fraction"] == 0.1
    np.testing.assert_array_equal(load_label_split(tmp_path / "split.json", ds), idx)


def test_digest_mismatch(tmp_path):
    save_label_split(tmp_path / "split.json", [0, 5], dataset(), per_class=1, seed=2)
    with pytest.raises(DataError, match="digest .*re-create it with `vipr data split toy --per-class 1 --seed 2"):
        load_label_split(tmp_path / "split.json", dataset(digest="other"))


def test_missing_garbled_and_out_of_range(tmp_path):
    with pytest.raises(DataError, match="does not exist.*re-create"):
        load_label_split(tmp_path / "none.json", dataset())
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match=r"bad.json is not a label split \(not JSON\)") as err:
        load_label_split(tmp_path / "bad.json", dataset())
    assert f"--out {tmp_path / 'label-split.json'}" in str(err.value)  # never the user's own file
    with pytest.raises(ValueError, match="outside"):
        save_label_split(tmp_path / "s.json", [len(LABELS)], dataset())
    save_label_split(tmp_path / "s.json", [1, 2], dataset())
    small = dataset(labels=LABELS[:2])
    doc = json.loads((tmp_path / "s.json").read_text())
    (tmp_path / "s.json").write_text(json.dumps({**doc, "dataset_digest": small.digest}))
    with pytest.raises(DataError, match="index 2 is outside"):
        load_label_split(tmp_path / "s.json", small)
