"""``vipr data info``: a table with units and a --json form; skipped files are said on the terminal."""

import json
import warnings

import pytest

from vipr.cli.main import main
from vipr.data.sources import open_dataset

from .test_sources import make_tree

DATA = "builtin:shapes?train=40&test=20&size=16"


def test_info_is_a_table_with_units(capsys):
    assert main(["data", "info", DATA]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "{" not in out and "[" not in out  # no Python dict or list printed
    assert "image size  16 x 16 px as stored" in out
    store = next(line for line in lines if line.startswith("store size"))
    assert store.split()[3] == "MB" and float(store.split()[2]) > 0
    assert lines[lines.index(next(x for x in lines if x.startswith("split"))) + 1].split() == ["train", "40", "0"]
    assert next(x for x in lines if x.startswith("circle")).split()[1:] == ["4", "2"]  # per class: train, test
    assert lines[-1] == "skipped: none"


def test_info_json_has_sizes_with_units(capsys):
    assert main(["data", "info", DATA, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["image_size"] == [16, 16] and info["store"]["megabytes"] > 0.04  # 60 images of 3 x 16 x 16 bytes
    assert info["splits"]["test"]["images"] == 20 and info["skipped"] == {"count": 0, "file": None, "first": []}


@pytest.fixture
def tree_with_a_broken_file(tmp_path):
    root = tmp_path / "tree"
    make_tree(root, per_class=4)
    (root / "train" / "dog" / "broken.jpg").write_bytes(b"this is not a jpeg")
    return root


def test_skipped_files_are_said_with_their_list(tree_with_a_broken_file, capsys):
    root = str(tree_with_a_broken_file)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image \(list: .*skipped.txt\)"):
        ds = open_dataset(root)
    assert ds.skipped_file.read_text().startswith("train/dog/broken.jpg\t")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        open_dataset(root, quiet=True)
    assert main(["data", "info", root]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == f"skipped 1 unreadable image (list: {ds.skipped_file})"
    assert "warning" not in captured.err  # the table says it once
    assert main(["data", "info", root, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"]["file"] == str(ds.skipped_file)


def test_pretrain_and_eval_say_what_was_skipped(tree_with_a_broken_file, tmp_path, capsys):
    root = str(tree_with_a_broken_file)
    note = "warning: " + root + ": skipped 1 unreadable image (list: "
    assert main(["pretrain", "--data", root, "--backbone", "tiny", "--image-size", "16", "--epochs", "1",
                 "--batch-size", "4", "--out", str(tmp_path / "run"), "--no-progress", "--no-track",
                 "--precision", "fp32", "--set", "method.queue_size=4", "method.proj_hidden_dim=16",
                 "method.proj_dim=8", "train.num_threads=1"]) == 0
    assert note in capsys.readouterr().err
    assert (tmp_path / "run" / "skipped.txt").is_file()
    assert main(["eval", "knn", "--checkpoint", "random", "--backbone", "tiny", "--image-size", "16",
                 "--data", root, "--k", "3", "--no-progress"]) == 0
    assert note in capsys.readouterr().err


def test_no_progress_hides_the_decoding_bar_on_a_terminal(tree_with_a_broken_file, tmp_path, monkeypatch, capsys):
    from vipr.engine import progress

    monkeypatch.setattr(progress, "live_terminal", lambda: True)
    monkeypatch.setenv("VIPR_CACHE", str(tmp_path / "fresh-cache"))  # decode again
    assert main(["data", "info", str(tree_with_a_broken_file), "--no-progress"]) == 0
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("VIPR_CACHE", str(tmp_path / "another-cache"))
    assert main(["data", "info", str(tree_with_a_broken_file)]) == 0
    assert "decoding train" in capsys.readouterr().err
