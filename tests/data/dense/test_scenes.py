"""builtin:scenes: deterministic by seed, boxes tight around masks, semantic maps equal to the masks."""

import numpy as np
import pytest
import torch

from vipr.data.dense import open_dense
from vipr.data.dense.info import dense_info
from vipr.errors import DataError

SRC = "builtin:scenes?size=64&train=12&test=4&classes=5&objects=5"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return open_dense(SRC, cache_dir=tmp_path_factory.mktemp("cache"))


def test_shapes_dtypes_and_api(scenes):
    assert scenes.classes == ["background", "circle", "square", "triangle", "star", "cross"]
    assert scenes.train.images.shape == (12, 3, 64, 64) and len(scenes.test) == 4
    s = scenes.train[0]
    assert s.image.dtype == torch.uint8 and s.image.shape == (3, 64, 64)
    assert s.boxes.dtype == torch.float32 and s.boxes.shape[1] == 4
    assert s.labels.dtype == torch.int64 and ((s.labels >= 1) & (s.labels <= 5)).all()
    assert s.masks.dtype == torch.uint8 and s.masks.shape == (len(s.labels), 64, 64)
    assert s.semantic.dtype == torch.uint8 and s.semantic.shape == (64, 64) and s.size == (64, 64)
    counts = np.diff(scenes.train.instances.offsets)
    assert counts.min() >= 1 and counts.max() <= 5 and len(set(counts)) > 1
    with pytest.raises(IndexError):
        scenes.train[12]


def test_deterministic_by_seed(tmp_path, scenes):
    again = open_dense(SRC, cache_dir=tmp_path / "other")
    assert again.digest == scenes.digest
    np.testing.assert_array_equal(again.train.images, scenes.train.images)
    np.testing.assert_array_equal(again.train.instances.boxes, scenes.train.instances.boxes)
    other = open_dense(SRC + "&seed=1", cache_dir=tmp_path / "other")
    assert other.digest != scenes.digest and not np.array_equal(other.train.images, scenes.train.images)
    assert not np.array_equal(scenes.train.images[:4], scenes.test.images)  # independent split streams


def test_boxes_tight_masks_disjoint_semantic_agrees(scenes):
    for split in (scenes.train, scenes.test):
        for i in range(len(split)):
            s = split[i]
            masks = s.masks.numpy().astype(bool)
            assert masks.sum(axis=0).max() <= 1  # painted back to front: no pixel in two instances
            for box, mask in zip(s.boxes.numpy(), masks):
                ys, xs = np.nonzero(mask)
                np.testing.assert_array_equal(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            expected = np.zeros((64, 64), np.uint8)
            for label, mask in zip(s.labels.numpy(), masks):
                expected[mask] = label
            np.testing.assert_array_equal(s.semantic.numpy(), expected)


def test_objects_are_drawn_where_their_masks_are(scenes):
    s = scenes.train[1]
    image = s.image.numpy().astype(int)
    background = image[:, s.semantic.numpy() == 0].mean(axis=1)
    for mask in s.masks.numpy().astype(bool):
        inner = mask & np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1)
        if inner.sum() > 4:
            assert np.abs(image[:, inner].mean(axis=1) - background).max() > 10


def test_info_and_bad_parameters(scenes):
    info = dense_info(scenes)
    train = info["splits"]["train"]
    assert train["instances"] == len(scenes.train.instances) == sum(train["instances_per_class"].values())
    assert sum(train["box_sizes"].values()) == train["instances"] and info["masks"] and info["semantic"]
    with pytest.raises(DataError, match="objects=0 is out of range"):
        open_dense("builtin:scenes?objects=0")
    with pytest.raises(DataError, match="unknown builtin:scenes parameter"):
        open_dense("builtin:scenes?object=3")
