"""`vipr runs list|show|compare|plot`: past runs of every kind, read back from the workspace's store."""

import json
import shutil

import pytest

from vipr.cli.main import main
from vipr.nas.genotype import DARTS_V2
from vipr.platform import tracking, workspace

from .conftest import DATA

NAS_DATA = "builtin:shapes?classes=3&train=16&test=4&size=16"  # tests/nas/test_search.py's: 1 step an epoch
NAS_SEARCH = ["nas", "search", "--data", NAS_DATA, "--channels", "4", "--layers", "3", "--batch-size", "8",
              "--image-size", "16", "--epochs", "1", "--warmup-epochs", "0", "--precision", "fp32", "--no-progress",
              "--set", "train.num_threads=1", "train.eval_batches=1"]
NAS_TRAIN = ["--data", "builtin:shapes?size=16&train=16&test=8", "--epochs", "1", "--channels", "4", "--layers", "5",
             "--batch-size", "8", "--precision", "fp32", "--no-progress", "--set", "train.num_threads=1"]


@pytest.fixture(scope="module")
def logged(client, pretrain_run, linear_run, tmp_path_factory):
    """Copies of the pre-training and linear-probe runs, logged: {name: (folder, run id)}."""
    root = tmp_path_factory.mktemp("listed")
    runs = {}
    for name, source in (("pre", pretrain_run), ("probe", linear_run)):
        shutil.copytree(source, root / name)
        runs[name] = root / name, tracking.log_run_folder(root / name, mlflow_client=client)
    return runs


def cli_json(argv, capsys):
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_list_shows_every_kind_with_its_key_metric(logged, capsys):
    rows = {row["id"]: row for row in cli_json(["runs", "list"], capsys)}
    pre, probe = rows[logged["pre"][1]], rows[logged["probe"][1]]
    assert (pre["kind"], pre["status"], pre["metric"]) == ("pretrain", "FINISHED", "loss_mean")
    assert (probe["kind"], probe["metric"]) == ("eval-linear", "top1") and 0 <= probe["value"] <= 100
    assert pre["run_dir"] == str(logged["pre"][0]) and pre["duration_s"] >= 0
    assert [r["kind"] for r in cli_json(["runs", "list", "--kind", "eval"], capsys)].count("pretrain") == 0
    assert main(["runs", "list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["id", "kind", "command", "status", "started", "duration", "key", "metric"]
    assert any(line.startswith(logged["pre"][1][:8]) and "pretrain" in line for line in table)


@pytest.mark.parametrize("ref", ["id", "prefix", "name", "folder"])
def test_show_finds_a_run_by_id_prefix_name_or_folder(logged, capsys, ref):
    folder, run_id = logged["pre"]
    given = {"id": run_id, "prefix": run_id[:8], "name": "pre", "folder": str(folder)}[ref]
    info = cli_json(["runs", "show", given], capsys)
    assert info["id"] == run_id and info["params"]["model.backbone"] == "tiny"
    assert "loss_mean" in info["metrics"] and "checkpoint.pt" in info["files"]
    assert "run/config.yaml" in info["artifacts"] and info["run_dir"] == str(folder)
    assert main(["runs", "show", given]) == 0
    assert f"run folder: {folder}" in capsys.readouterr().out


def test_compare_puts_runs_side_by_side(logged, capsys):
    ids = [logged["pre"][1], logged["probe"][1]]
    compared = cli_json(["runs", "compare", *ids], capsys)
    assert [r["id"] for r in compared["runs"]] == ids
    assert compared["params"]["model.backbone"] == ["tiny", None]  # params the runs differ in
    assert compared["metrics"]["top1"][0] is None and compared["metrics"]["top1"][1] is not None
    assert main(["runs", "compare", *ids]) == 0
    out = capsys.readouterr().out
    assert "model.backbone" in out and "top1" in out


def test_an_unknown_run_is_one_line_with_suggestions(logged, capsys):
    near = logged["pre"][1][:7] + "z"
    assert main(["runs", "show", near]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err
    assert f"no run '{near}'" in lines[0] and "did you mean" in lines[0] and logged["pre"][1][:8] in lines[0]
    assert main(["runs", "compare", logged["pre"][1], "no-such-run"]) == 1
    assert "no run 'no-such-run'" in capsys.readouterr().err


def test_plot_overlays_runs(logged, capsys, tmp_path):
    out = tmp_path / "loss.png"
    assert main(["runs", "plot", logged["pre"][1], "pre", "--metric", "loss", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["runs", "plot", "pre", "--metric", "no_such", "--out", str(out)]) == 1
    assert "pass --metric with one of" in capsys.readouterr().err


def test_eval_without_out_is_tracked_in_the_workspace(client, monkeypatch, capsys, pretrain_run):
    monkeypatch.setenv("VIPR_TRACKING", "1")
    assert main(["eval", "knn", "--checkpoint", str(pretrain_run), "--data", DATA, "--k", "5", "--no-progress"]) == 0
    capsys.readouterr()
    newest = cli_json(["runs", "list", "--kind", "eval-knn", "--limit", "1"], capsys)[0]
    assert newest["run_dir"].startswith(str(workspace.runs_root() / "eval-knn-"))
    info = cli_json(["runs", "show", newest["id"]], capsys)
    assert "plots/confusion.png" in info["artifacts"] and "plots/confusion.png" in info["files"]


def test_nas_search_and_train_are_tracked(client, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("VIPR_TRACKING", "1")
    assert main([*NAS_SEARCH, "--out", str(tmp_path / "search")]) == 0
    genotype = str(DARTS_V2.save(tmp_path / "darts_v2.json"))
    assert main(["nas", "train", genotype, "--out", str(tmp_path / "train"), *NAS_TRAIN]) == 0
    capsys.readouterr()
    rows = {row["run_dir"]: row for row in cli_json(["runs", "list", "--kind", "nas"], capsys)}
    search, train = rows[str(tmp_path / "search")], rows[str(tmp_path / "train")]
    assert (search["kind"], train["kind"]) == ("nas-search", "nas-train")
    assert search["command"] and train["metric"] == "test_top1"  # the command: env.json's argv
    assert (tmp_path / "train" / "plots" / "loss.png").is_file()  # curves on every run folder
    # a folder logged without the CLI's kind is recognised from its config
    assert tracking._folder_kind(*tracking.read_config(tmp_path / "search")) == "nas-search"
    assert tracking._folder_kind(*tracking.read_config(tmp_path / "train")) == "nas-train"


def test_a_folder_logged_twice_is_its_newest_run_and_two_folders_are_ambiguous(client, pretrain_run, tmp_path,
                                                                               capsys):
    for parent in ("a", "b"):
        shutil.copytree(pretrain_run, tmp_path / parent / "twice")
    final = tmp_path / "a" / "twice" / "metrics.json"
    text = final.read_text()
    final.unlink()  # stopped: no metrics.json yet
    first = tracking.log_run_folder(tmp_path / "a" / "twice", mlflow_client=client, status="KILLED")
    final.write_text(text)  # resumed and finished: the same start, a later end
    second = tracking.log_run_folder(tmp_path / "a" / "twice", mlflow_client=client)
    assert cli_json(["runs", "show", str(tmp_path / "a" / "twice")], capsys)["id"] == second != first
    assert cli_json(["runs", "show", "twice"], capsys)["id"] == second
    tracking.log_run_folder(tmp_path / "b" / "twice", mlflow_client=client)
    assert main(["runs", "show", "twice"]) == 1
    assert "run 'twice' is ambiguous" in capsys.readouterr().err


def test_eval_without_out_runs_untracked_when_the_workspace_is_not_writable(monkeypatch, tmp_path, capsys,
                                                                           pretrain_run):
    monkeypatch.setenv("VIPR_TRACKING", "1")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr(workspace, "runs_root", lambda: blocker / "runs")  # under a file: no folder there
    assert main(["eval", "knn", "--checkpoint", str(pretrain_run), "--data", DATA, "--k", "5", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning: this run is not tracked" in err and "--out DIR" in err and "Traceback" not in err
