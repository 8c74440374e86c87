"""The dense store and API the training code reads: targets, batches, reopening, damage, `vipr data info`."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vipr.cli.main import main
from vipr.data.dense import is_dense_source, open_dense
from vipr.data.dense.info import box_areas
from vipr.errors import DataError

SRC = "builtin:scenes?size=48&train=6&test=0&classes=3&objects=3"


def test_targets_and_batches_follow_torchvision(tmp_path):
    ds = open_dense(SRC, cache_dir=tmp_path)
    target = ds.train.target(2)
    assert set(target) == {"boxes", "labels", "masks"} and target["masks"].shape[1:] == (48, 48)
    images, targets = ds.train.batch([4, 1, 2])
    assert images.dtype == torch.uint8 and images.shape == (3, 3, 48, 48)
    assert torch.equal(images[0], ds.train.image(4)) and torch.equal(images[1], ds.train.image(1))
    assert torch.equal(targets[2]["boxes"], target["boxes"]) and "masks" not in ds.train.batch([0], masks=False)[1][0]
    assert ds.test is None and ds.num_classes == 4


def test_reopen_maps_the_store_and_a_damaged_entry_is_named(tmp_path):
    ds = open_dense(SRC, cache_dir=tmp_path)
    again = open_dense(SRC, cache_dir=tmp_path)
    assert isinstance(again.train.images, np.memmap) and isinstance(again.train.semantic_maps, np.memmap)
    assert again.digest == ds.digest and not again.train.images.flags.writeable
    entry = Path(ds.skipped_file).parent
    (entry / "train_boxes.npy").unlink()
    with pytest.raises(DataError, match="damaged"):
        open_dense(SRC, cache_dir=tmp_path)
    shutil.rmtree(entry)
    assert open_dense(SRC, cache_dir=tmp_path).digest == ds.digest  # rebuilt, same content


def test_box_areas_are_in_source_pixels(tmp_path):
    ds = open_dense(SRC, cache_dir=tmp_path)
    split = ds.train
    wh = split.instances.boxes[:, 2:] - split.instances.boxes[:, :2]
    np.testing.assert_allclose(box_areas(split), wh[:, 0] * wh[:, 1])  # scenes: canvas = source


def test_sources_are_told_apart(tmp_path):
    assert is_dense_source("builtin:scenes") and is_dense_source("coco:/nowhere")
    assert not is_dense_source("builtin:shapes") and not is_dense_source(str(tmp_path))
    with pytest.raises(DataError, match="not a folder"):
        open_dense(f"voc:{tmp_path / 'missing'}")
    with pytest.raises(DataError, match="no detection / segmentation layout"):
        open_dense(str(tmp_path))


def test_data_info_cli_reports_instances_box_sizes_and_skips(capsys):
    assert main(["data", "info", SRC, "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    train = info["splits"]["train"]
    assert info["kind"] == "scenes" and set(train["box_sizes"]) == {"small", "medium", "large"}
    assert sum(train["instances_per_class"].values()) == train["instances"] > 0
    assert info["skipped"]["count"] == 0 and info["skipped"]["file"].endswith("skipped.txt")
    assert main(["data", "info", "coco:/no/such/root"]) == 1
    assert "not a folder" in capsys.readouterr().err


def test_data_info_table(capsys):
    assert main(["data", "info", SRC]) == 0
    out = capsys.readouterr().out
    assert "canvas      48 x 48 px" in out and "boxes, instance masks, semantic maps" in out
    assert "small  medium  large" in out and "circle" in out and "skipped: 0" in out
