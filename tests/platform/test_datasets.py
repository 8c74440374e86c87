"""Dataset versions: register (V1, unchanged V1, changed V2), references, list/show, changed data, races, jobs, splits."""

import json
import threading

import numpy as np
import pytest
from PIL import Image

from vipr.cli.main import main
from vipr.data.dense.sources import is_dense_source
from vipr.data.sources import open_dataset
from vipr.errors import ConfigError
from vipr.jobs.inputs import check_inputs
from vipr.jobs.spec import parse_spec
from vipr.platform import dataset_refs, datasets
from vipr.platform.dataset_register import register
from vipr.platform.datasets import DatasetError

SHAPES = "builtin:shapes?train=64&test=16&size=16"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh workspace (its own vipr.db) for one test."""
    monkeypatch.setenv("VIPR_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VIPR_DB_URL", raising=False)
    return tmp_path / "home"


def write_image(path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def folder(tmp_path):
    """An image folder: train/{a,b}/ with 2 images each, test/{a,b}/ with 1."""
    root = tmp_path / "photos"
    for i, (split, cls, n) in enumerate((s, c, n) for s, n in (("train", 2), ("test", 1)) for c in "ab"):
        for k in range(n):
            write_image(root / split / cls / f"{k}.png", 10 * i + k)
    return root


def cli(argv, capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def cli_json(argv, capsys):
    code, out, err = cli([*argv, "--json"], capsys)
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_register_unchanged_and_changed_data(home, folder, capsys):
    first = cli_json(["data", "register", str(folder), "--name", "photos", "--description", "first", "--no-progress"],
                     capsys)
    assert (first["ref"], first["created_now"], first["kind"]) == ("photos:V1", True, "classification")
    assert first["source"] == str(folder) and first["resolved"] == str(folder.resolve())
    assert first["classes"] == ["a", "b"] and first["counts"]["train"]["images"] == 4
    assert first["counts"]["test"]["per_class"] == {"a": 1, "b": 1} and first["skipped"] == 0
    again = cli_json(["data", "register", str(folder), "--name", "photos", "--no-progress"], capsys)
    assert (again["ref"], again["created_now"], again["digest"]) == ("photos:V1", False, first["digest"])
    write_image(folder / "train" / "a" / "new.png", 99)
    (folder / "train" / "b" / "bad.png").write_bytes(b"not an image")  # skipped, and counted
    changed = cli_json(["data", "register", str(folder), "--name", "photos", "--no-progress"], capsys)
    assert (changed["ref"], changed["created_now"], changed["skipped"]) == ("photos:V2", True, 1)
    assert changed["digest"] != first["digest"] and changed["skipped_file"].endswith("skipped.txt")
    _, out, _ = cli(["data", "register", str(folder), "--name", "photos", "--no-progress"], capsys)
    assert out.startswith("unchanged: already registered as photos:V2 (digest ")


def test_list_and_show_in_text_and_json(home, folder, capsys):
    register(SHAPES, "shapes-small", "tiny shapes")
    register(str(folder), "photos")
    rows = cli_json(["data", "list"], capsys)
    assert [(r["name"], r["latest"], r["images"]) for r in rows] == [("photos", "photos:V1", 6),
                                                                      ("shapes-small", "shapes-small:V1", 80)]
    code, out, _ = cli(["data", "list"], capsys)
    assert code == 0
    assert out.splitlines()[0].split() == ["NAME", "LATEST", "KIND", "DIGEST", "IMAGES", "CREATED", "SOURCE"]
    assert "shapes-small:V1" in out and SHAPES in out
    for ref in ("shapes-small", "shapes-small:V1", "shapes-small:1", "shapes-small:latest"):
        shown = cli_json(["data", "show", ref], capsys)
        assert (shown["ref"], shown["versions"], shown["artifacts"]) == ("shapes-small:V1", ["V1"], [])
    _, out, _ = cli(["data", "show", "shapes-small:V1"], capsys)
    assert out.splitlines()[0] == "shapes-small:V1  tiny shapes"
    assert "  splits:\n    train  64 images\n    test   16 images" in out and "artifacts: none" in out


def test_references_read_only_when_no_other_form(home, tmp_path, monkeypatch):
    assert dataset_refs.parse("photos:V2") == ("photos", 2) and dataset_refs.parse("photos:2") == ("photos", 2)
    assert dataset_refs.parse("photos:latest") == ("photos", None) and dataset_refs.parse("photos") == ("photos", None)
    for other in ("builtin:digits", "coco:/data/coco", "voc:VOC2012", "masks:seg", "./photos", "a/b:V1"):
        assert dataset_refs.parse(other) is None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos:V2").mkdir()  # an existing path wins
    assert dataset_refs.parse("photos:V2") is None
    assert set(dataset_refs.RESERVED) >= {p.rstrip(":") for p in __import__(
        "vipr.data.dense.sources", fromlist=["PREFIXES"]).PREFIXES}
    assert not (home / "vipr.db").exists()  # no look-up made a database


def test_open_by_reference_checks_the_registered_content(home, folder):
    version, _ = register(str(folder), "photos")
    ds = open_dataset("photos:V1", progress=False)
    assert (ds.name, ds.source, ds.digest) == ("photos:V1", str(folder.resolve()), version.digest)
    assert open_dataset("photos", progress=False).name == "photos:V1"  # a bare registered NAME: its latest
    assert open_dataset("photos:V1", store_size=16, progress=False).train.image_size == (16, 16)  # another size
    write_image(folder / "test" / "b" / "extra.png", 7)
    with pytest.raises(DatasetError, match=r"photos:V1: the data at .* changed since it was registered \(digest now "
                                           r"\w+, registered \w+\); register it again for a new version: vipr data "
                                           r"register .* --name photos"):
        open_dataset("photos:V1", progress=False)
    moved = folder.rename(folder.parent / "moved")
    with pytest.raises(DatasetError, match=f"photos:V1: its source {folder.resolve()} no longer exists"):
        open_dataset("photos:V1", progress=False)
    assert moved.is_dir()


def test_one_line_errors(home, capsys):
    register(SHAPES, "shapes-small")
    cases = [(["data", "show", "shapes-small:V9"], "dataset 'shapes-small' has no version V9; its versions: V1"),
             (["data", "show", "nope"], "no dataset 'nope' is registered in workspace"),
             (["data", "info", "nope:V1"], "no such file or folder, and no dataset 'nope' is registered"),
             (["data", "info", "shapes-small:V3"], "has no version V3; its versions: V1"),
             (["data", "register", SHAPES, "--name", "voc"], "dataset name 'voc' is not allowed"),
             (["data", "register", SHAPES, "--name", "a/b"], "dataset name 'a/b' is not allowed")]
    for argv, message in cases:
        code, _, err = cli(argv, capsys)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err


def test_dense_versions_open_only_as_dense(home, capsys):
    version, _ = register("builtin:scenes?size=32&train=4&test=2", "scenes-tiny")
    assert version.kind == "dense" and version.counts["train"]["images"] == 4 and version.classes[0] == "background"
    assert is_dense_source("scenes-tiny:V1") and not is_dense_source(SHAPES)
    info = cli_json(["data", "info", "scenes-tiny:V1"], capsys)
    assert (info["name"], info["digest"]) == ("scenes-tiny:V1", version.digest)
    with pytest.raises(DatasetError, match="scenes-tiny:V1 is a dense dataset .* use it with vipr transfer"):
        open_dataset("scenes-tiny:V1")


def test_concurrent_registrations_share_one_number_per_content(home):
    fields = {"name": "raced", "kind": "classification", "source": "x", "resolved": "x", "store_size": None,
              "classes": [], "counts": {}, "skipped": 0, "skipped_file": None, "description": ""}
    datasets.add_version({**fields, "digest": "0" * 16})  # tables made: the race is on the rows
    results, barrier = [], threading.Barrier(4)

    def worker(digest):
        barrier.wait()
        results.append(datasets.add_version({**fields, "digest": digest}))

    threads = [threading.Thread(target=worker, args=(d,)) for d in ("a" * 16, "a" * 16, "b" * 16, "b" * 16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    numbers = {version.digest: version.version for version, _ in results}
    assert sorted(numbers.values()) == [2, 3] and sum(created for _, created in results) == 2
    assert [v.version for v in datasets.versions("raced")] == [1, 2, 3]


def job(**keys):
    return parse_spec({"name": "job-a", "command": ["vipr", "pretrain", "--data", "builtin:shapes"], **keys})


def test_a_job_naming_an_unknown_dataset_version_is_refused(home):
    register(SHAPES, "shapes-small")
    check_inputs(job(inputs=[{"kind": "dataset", "ref": "shapes-small:V1"}, {"kind": "dataset", "ref": "builtin:x"},
                             {"kind": "dataset", "ref": "/not/here", "mount": "/data/here"}]))
    check_inputs(job(command=["vipr", "pretrain", "--data", "shapes-small:latest"]))
    for keys, message in (({"inputs": [{"kind": "dataset", "ref": "shapes-small:V9"}]},
                           r"inputs\[0\] \(dataset 'shapes-small:V9'\): dataset 'shapes-small' has no version V9; "
                           + r"its versions: V1"),
                          ({"inputs": [{"kind": "dataset", "ref": "shapes-small:V2", "mount": "/data/s"}]},
                           "has no version V2"),  # a version is metadata: checked whatever the mount
                          ({"command": ["vipr", "pretrain", "--data=other:V1"]},
                           r"command --data 'other:V1': .*no dataset 'other' is registered"),
                          ({"inputs": [{"kind": "dataset", "ref": "/not/here"}]},
                           "neither a builtin: source nor an existing path")):
        with pytest.raises(ConfigError, match=message):
            check_inputs(job(**keys))


def test_a_label_split_is_an_artifact_of_its_version(home, tmp_path, capsys):
    register(SHAPES, "shapes-small")
    register("builtin:shapes?train=32&test=8&size=16", "other")
    code, out, err = cli(["data", "split", "shapes-small:V1", "--per-class", "2", "--out", str(tmp_path / "s.json"),
                          "--no-progress"], capsys)
    assert code == 0 and "recorded" in out and "label_split artifact of shapes-small:V1" in out, err
    code, out, _ = cli(["data", "split", SHAPES, "--label-fraction", "0.5", "--out", str(tmp_path / "half.json"),
                        "--register", "shapes-small:V1", "--no-progress"], capsys)
    assert code == 0
    shown = cli_json(["data", "show", "shapes-small:V1"], capsys)
    kinds = [(a["kind"], a["path"], a["meta"]["labelled"]) for a in shown["artifacts"]]
    assert kinds == [("label_split", str(tmp_path / "s.json"), 20), ("label_split", str(tmp_path / "half.json"), 34)]
    assert json.loads((tmp_path / "s.json").read_text())["dataset"] == "shapes-small:V1"
    code, _, err = cli(["data", "split", SHAPES, "--per-class", "1", "--out", str(tmp_path / "x.json"),
                        "--register", "other:V1", "--no-progress"], capsys)
    assert code == 1 and "--register other:V1: the split was drawn from data of digest" in err
    code, _, err = cli(["data", "split", SHAPES, "--per-class", "1", "--out", str(tmp_path / "y.json"),
                        "--register", "other:V4", "--no-progress"], capsys)
    assert code == 1 and "has no version V4" in err and not (tmp_path / "y.json").exists()  # before the work
    code, out, _ = cli(["data", "show", "shapes-small:V1"], capsys)
    assert f"label_split  {tmp_path / 's.json'}  sha256 " in out


def test_every_data_option_opens_references_in_one_place(home, tmp_path, pretrain_run, capsys):
    """Each command taking --data (or SRC) reaches the one opener: an unknown version is its one-line error."""
    from vipr.nas.genotype import DARTS_V2

    register(SHAPES, "shapes-small")
    out, model = str(tmp_path / "never"), ["--checkpoint", "random", "--backbone", "tiny"]
    commands = [["pretrain", "--backbone", "tiny", "--no-track", "--out", out],
                ["distill", "--teacher", str(pretrain_run), "--student", "tiny", "--no-track", "--out", out],
                ["nas", "search", "--out", out], ["nas", "train", str(DARTS_V2.save(tmp_path / "g.json")), "--out", out],
                ["eval", "knn", *model, "--no-track"], ["features", *model, "--out", str(tmp_path / "f.npz")],
                ["transfer", "detect", "--backbone", "tiny", "--no-track", "--out", out]]
    for argv in [[*c, "--data", "shapes-small:V9"] for c in commands] + [
            ["data", "info", "shapes-small:V9"], ["data", "export", "shapes-small:V9", "--out", out],
            ["data", "split", "shapes-small:V9", "--per-class", "1", "--out", str(tmp_path / "s.json")]]:
        code, _, err = cli(argv, capsys)
        assert code == 1 and "dataset 'shapes-small' has no version V9; its versions: V1" in err, (argv, err)
    code, _, err = cli(["features", *model, "--image-size", "16", "--data", "shapes-small:V1", "--out",
                               str(tmp_path / "f.npz"),
                               "--no-progress"], capsys)
    assert code == 0 and np.load(tmp_path / "f.npz")["features"].shape[0] == 80, err
    register("builtin:scenes?size=32&train=4&test=2", "scenes-tiny")
    code, _, err = cli(["data", "export", "scenes-tiny:V1", "--out", str(tmp_path / "coco")], capsys)
    assert code == 0 and (tmp_path / "coco" / "annotations" / "instances_train.json").is_file(), err
