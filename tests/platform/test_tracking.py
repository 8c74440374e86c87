"""Logging finished run folders into MLflow: params, metric history, final metrics, tags, inputs."""

import json
import shutil

import pytest

from vipr.cli.main import main
from vipr.errors import ViprError
from vipr.platform import tracking

from .conftest import DATA


@pytest.fixture(scope="module")
def logged(client, pretrain_run, tmp_path_factory):
    """A copy of the pre-training run (tests here change it) and its MLflow run."""
    folder = tmp_path_factory.mktemp("tracked") / "pretrain"
    shutil.copytree(pretrain_run, folder)
    return folder, client.get_run(tracking.log_run_folder(folder, mlflow_client=client))


def test_params_are_the_flattened_resolved_config(logged):
    _, run = logged
    params = run.data.params
    assert params["method.queue_size"] == "40" and params["model.backbone"] == "tiny"
    assert params["data.source"] == DATA and params["model.small_stem"] == "true"


def test_metric_history_per_step_and_per_epoch(client, logged):
    _, run = logged
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in losses] == [1, 2, 3, 4]  # log_every=1, 2 epochs of 2 steps
    assert [m.step for m in client.get_metric_history(run.info.run_id, "epoch_loss_mean")] == [1, 2]
    final = json.loads((logged[0] / "metrics.json").read_text())
    assert run.data.metrics["steps"] == final["steps"] == 4
    assert run.data.metrics["images_per_s"] == pytest.approx(final["images_per_s"])


def test_tags_inputs_and_artifacts(client, logged):
    folder, run = logged
    tags = run.data.tags
    assert tags["kind"] == "pretrain" and tags["run_dir"] == str(folder.resolve())
    assert tags["vipr_version"] and tags["backbone"] == "tiny" and tags["method"] == "moco_v2"
    assert len(tags["dataset_digest"]) >= 8 and len(tags["config_hash"]) == 16
    assert run.info.status == "FINISHED"
    [data_input] = run.inputs.dataset_inputs
    assert data_input.dataset.digest == tags["dataset_digest"]
    assert {a.path for a in client.list_artifacts(run.info.run_id, "run")} >= {"run/config.yaml", "run/metrics.json"}


def test_ensure_logged_reuses_until_the_run_changes(client, logged):
    folder, run = logged
    marker = json.loads((folder / tracking.MARKER).read_text())
    assert marker[client.tracking_uri]["run_id"] == run.info.run_id
    assert tracking.ensure_logged(folder, client) == run.info.run_id
    final = json.loads((folder / "metrics.json").read_text())
    (folder / "metrics.json").write_text(json.dumps({**final, "steps": 6}))  # as after --resume
    again = tracking.ensure_logged(folder, client)
    assert again != run.info.run_id and client.get_run(again).data.metrics["steps"] == 6


def test_eval_folder_params(client, linear_run):
    run = client.get_run(tracking.log_run_folder(linear_run, mlflow_client=client))
    assert run.data.tags["kind"] == "eval-linear" and run.data.params["kind"] == "linear"
    assert run.data.metrics["top1"] == json.loads((linear_run / "metrics.json").read_text())["top1"]
    assert run.data.tags["num_classes"] == "10"


def test_not_a_run_folder(tmp_path):
    with pytest.raises(ViprError, match="not a vipr run folder"):
        tracking.log_run_folder(tmp_path)


def test_flatten():
    assert tracking.flatten({"a": {"b": 1, "c": None}, "d": "x", "e": [1, 2], "f": True}) == {
        "a.b": "1", "a.c": "null", "d": "x", "e": "[1, 2]", "f": "true"}


def test_track_run_off_by_flag_or_env(monkeypatch, pretrain_run):
    monkeypatch.setattr(tracking, "log_run_folder", lambda *a, **k: pytest.fail("must not log"))
    monkeypatch.setenv("VIPR_TRACKING", "1")
    assert tracking.track_run(pretrain_run, "pretrain", no_track=True) is None
    monkeypatch.setenv("VIPR_TRACKING", "0")
    assert tracking.track_run(pretrain_run, "pretrain") is None


def test_track_run_failure_warns_and_never_raises(monkeypatch, capsys, pretrain_run):
    def broken(*args, **kwargs):
        raise ConnectionError("server down")

    monkeypatch.setenv("VIPR_TRACKING", "1")
    monkeypatch.setattr(tracking, "log_run_folder", broken)
    assert tracking.track_run(pretrain_run, "pretrain") is None
    err = capsys.readouterr().err
    assert "warning" in err and "server down" in err and "--no-track" in err


def test_cli_eval_logs_its_run(client, monkeypatch, capsys, pretrain_run, tmp_path):
    monkeypatch.setenv("VIPR_TRACKING", "1")
    out = tmp_path / "knn"
    assert main(["eval", "knn", "--checkpoint", str(pretrain_run), "--data", DATA, "--k", "5",
                 "--out", str(out), "--no-progress", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["kind"] == "knn"  # --json stays the last line
    run_id = json.loads((out / tracking.MARKER).read_text())[client.tracking_uri]["run_id"]
    assert run_id in captured.err and client.get_run(run_id).data.tags["kind"] == "eval-knn"


@pytest.mark.parametrize("status", ["FAILED", "KILLED"])
def test_a_run_that_ended_badly_is_logged_with_its_status(client, pretrain_run, tmp_path, status):
    folder = tmp_path / "ended"
    shutil.copytree(pretrain_run, folder)  # metrics.json present: without a status it would read FINISHED
    run_id = tracking.log_run_folder(folder, "pretrain", mlflow_client=client, status=status)
    assert client.get_run(run_id).info.status == status
