"""``vipr features``: the features kNN and the probe use, written with labels and names that line up with the rows."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from vipr.cli.main import main
from vipr.data.sources import open_dataset
from vipr.eval.features import extract_features, load_eval_backbone

DATA = "builtin:shapes?train=40&test=20&size=16"
RANDOM = ["--checkpoint", "random", "--backbone", "tiny", "--image-size", "16"]


def features_cli(*argv: str) -> int:
    return main(["features", *argv, "--no-progress", "--device", "cpu"])


def test_the_features_are_extract_features_of_each_split(tmp_path, capsys, one_thread):
    out = tmp_path / "f.npz"
    assert features_cli(*RANDOM, "--data", DATA, "--out", str(out), "--json") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rows"] == 60 and summary["splits"] == {"train": 40, "test": 20}
    saved = np.load(out)  # no pickle: every array is plain data
    dataset = open_dataset(DATA)
    model, card = load_eval_backbone("random", "tiny", 16)
    expected = [extract_features(model, split.images, image_size=16, mean=card.mean, std=card.std, device="cpu",
                                 progress=False) for split in (dataset.train, dataset.test)]
    torch.testing.assert_close(torch.from_numpy(saved["features"]), torch.cat(expected))
    np.testing.assert_array_equal(saved["labels"], np.concatenate([dataset.train.labels, dataset.test.labels]))
    assert list(saved["split"]) == ["train"] * 40 + ["test"] * 20
    assert list(saved["row"]) == list(range(40)) + list(range(20))
    assert saved["name"][0] == "train/0" and saved["name"][40] == "test/0"  # array sources: SPLIT/ROW
    assert list(saved["class_name"][:3]) == [dataset.classes[y] for y in dataset.train.labels[:3]]
    assert list(saved["classes"]) == dataset.classes


def _photo_folder(root):
    """train/ and test/ with two classes; each file one solid colour, its index coded in the red channel."""
    colours = {}
    for split, count in (("train", 4), ("test", 2)):
        for label, cls in enumerate(("cat", "dog")):
            (root / split / cls).mkdir(parents=True)
            for i in range(count):
                red = 10 * len(colours) + 5
                name = f"{split}/{cls}/img{i}.png"
                Image.new("RGB", (20, 20), (red, 40 * label, 200)).save(root / name)
                colours[name] = red
    (root / "train" / "cat" / "broken.png").write_bytes(b"not a png")  # skipped when decoded, and in the names
    return colours


def test_names_and_labels_of_an_image_folder_line_up_with_the_rows(tmp_path, one_thread):
    colours = _photo_folder(tmp_path / "photos")
    out = tmp_path / "f.npy"
    assert features_cli(*RANDOM, "--data", str(tmp_path / "photos"), "--out", str(out)) == 0
    features = np.load(out)
    with open(tmp_path / "f.labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert features.shape == (12, 64) and features.dtype == np.float32 and len(rows) == 12
    assert {r["name"] for r in rows} == set(colours)  # the broken file is not there
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        dataset = open_dataset(str(tmp_path / "photos"))
    for r in rows:
        split = getattr(dataset, r["split"])
        stored = split.images[int(r["row"])]  # (3, H, W) uint8 of that row of the store
        assert abs(int(stored[0].mean()) - colours[r["name"]]) <= 1, r  # the file the name says
        assert r["class"] == r["name"].split("/")[1] and int(r["label"]) == split.labels[int(r["row"])]


def test_parquet_holds_the_same_table(tmp_path, one_thread):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    assert features_cli(*RANDOM, "--data", DATA, "--split", "test", "--out", str(tmp_path / "f.parquet")) == 0
    assert features_cli(*RANDOM, "--data", DATA, "--split", "test", "--out", str(tmp_path / "f.npz")) == 0
    table = pq.read_table(tmp_path / "f.parquet").to_pydict()
    saved = np.load(tmp_path / "f.npz")
    np.testing.assert_array_equal(np.asarray(table["features"], dtype=np.float32), saved["features"])
    assert table["label"] == saved["labels"].tolist() and table["name"] == saved["name"].tolist()
    assert set(table["split"]) == {"test"}


def test_a_train_only_source_has_no_test_split_to_ask_for(tmp_path, capsys):
    (tmp_path / "photos" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "photos" / "a" / "x.png")
    code = features_cli(*RANDOM, "--data", str(tmp_path / "photos"), "--split", "test",
                        "--out", str(tmp_path / "f.npz"))
    assert code == 1 and "has no test split; use --split train or all" in capsys.readouterr().err
    assert not (tmp_path / "f.npz").exists()


@pytest.mark.parametrize("out, message", [
    ("f.csv", "--out {P}: unknown file type '.csv'; end the name with .npy, .npz, .parquet"),
    ("f", "unknown file type '(none)'"),
])
def test_an_unknown_output_type_is_one_line(out, message, tmp_path, capsys):
    path = tmp_path / out
    assert features_cli(*RANDOM, "--data", DATA, "--out", str(path)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message.replace("{P}", str(path)) in err


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    assert features_cli(*RANDOM, "--data", DATA, "--out", str(tmp_path / "f.parquet")) == 1
    assert "pip install 'vipr[parquet]'" in capsys.readouterr().err


def test_a_missing_registered_name_is_one_line(tmp_path, capsys):
    missing = tmp_path / "runs" / "nothing"
    assert features_cli("--checkpoint", str(missing), "--data", DATA, "--out", str(tmp_path / "f.npz")) == 1
    err = capsys.readouterr().err.strip()
    assert f"--checkpoint {missing}: no such file or folder" in err and len(err.splitlines()) == 1
