"""One local attempt's command line and environment (vipr.jobs.launch), and what the local queue refuses."""

import sys

import pytest

from vipr.errors import ConfigError
from vipr.jobs.launch import attempt_env, attempt_words, check_local, needs, python_argv, tracking_run_id
from vipr.jobs.spec import parse_spec

PRETRAIN = ["vipr", "pretrain", "--data", "builtin:shapes", "--epochs", "2"]


def spec(command=PRETRAIN, **keys):
    return parse_spec({"name": "job", "command": command, **keys})


def test_a_retried_attempt_resumes_a_run_folder_that_holds_a_checkpoint(tmp_path):
    s = spec()
    assert attempt_words(s, 1, tmp_path) == [*PRETRAIN, "--out", "runs/job"]
    assert "--resume" not in attempt_words(s, 2, tmp_path)  # nothing to resume yet: vipr refuses --resume then
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    assert attempt_words(s, 2, tmp_path)[-1] == "--resume"
    assert "--resume" not in attempt_words(s, 1, tmp_path)  # a first attempt never resumes
    knn = spec(["vipr", "eval", "knn", "--checkpoint", "random", "--data", "builtin:shapes"])
    assert "--resume" not in attempt_words(knn, 2, tmp_path)  # not resumable


def test_several_processes_become_the_commands_own_torchrun_launch():
    s = spec(resources={"processes_per_node": 2, "cpu": 1.5})
    assert attempt_words(s, 1, "runs")[-2:] == ["--nproc-per-node", "2"]
    assert needs(s) == (3.0, 4 * 2**30)  # cores: cpu per process x processes; the default 4Gi
    assert python_argv(["vipr", "pretrain", "--epochs", "1"]) == [sys.executable, "-m", "vipr.cli.main", "pretrain",
                                                                   "--epochs", "1"]


def test_the_environment_gives_threads_identity_and_the_workspace(monkeypatch, tmp_path):
    monkeypatch.setenv("VIPR_HOME", str(tmp_path / "ws"))
    s = spec(resources={"cpu": 2.5}, env={"EXTRA": "1", "OMP_NUM_THREADS": "8"})
    env = attempt_env(s, "abc123", base={"PATH": "/bin", "VIPR_JOB_ID": "outer"})
    assert env["PATH"] == "/bin" and env["EXTRA"] == "1" and env["VIPR_HOME"] == str(tmp_path / "ws")
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2"  # whole cores per process: the budget wins
    assert (env["VIPR_JOB_ID"], env["VIPR_JOB_NAME"]) == ("abc123", "job")
    assert attempt_env(spec(resources={"cpu": 0.5}), "x", base={})["OMP_NUM_THREADS"] == "1"


def test_the_tracking_run_id_is_the_one_recorded_for_the_jobs_store(tmp_path):
    (tmp_path / "mlflow_run.json").write_text('{"sqlite:////ws/mlflow.db": {"run_id": "r1"}, '
                                              '"http://mlflow:5000": {"run_id": "r2"}}')
    assert tracking_run_id(tmp_path, {"VIPR_HOME": "/ws"}) == "r1"
    assert tracking_run_id(tmp_path, {"VIPR_TRACKING_URI": "http://mlflow:5000"}) == "r2"
    assert tracking_run_id(tmp_path, {"VIPR_TRACKING_URI": "http://other"}) is None
    assert tracking_run_id(tmp_path / "missing", {}) is None


@pytest.mark.parametrize("keys, message", [
    ({"resources": {"nodes": 2}}, "resources.nodes is 2, but the local queue runs a job on this one machine; "
                                  "set resources.nodes=1, or submit it with --backend volcano"),
    ({"command": ["vipr", "eval", "knn", "--checkpoint", "random", "--data", "builtin:shapes"],
      "resources": {"processes_per_node": 2}}, "vipr eval knn takes no --nproc-per-node"),
])
def test_what_one_machine_cannot_run_is_refused_at_submit(keys, message):
    with pytest.raises(ConfigError, match=message):
        check_local(spec(**keys))
    check_local(spec(resources={"processes_per_node": 2}))  # pretrain launches torchrun itself


def test_the_run_marker_is_trackings():
    from vipr.jobs import launch
    from vipr.platform import tracking

    assert launch.MARKER == tracking.MARKER  # named twice only so the worker need not import torch


@pytest.mark.parametrize("why, code, retries, expected", [
    ("cancelled", 0, 0, ("cancelled", "cancelled")),
    (None, 0, 0, ("succeeded", None)),
    ("timeout", 0, 0, ("succeeded", None)),  # it finished at its deadline
    ("stopped", 130, 5, ("queued", "stopped")),  # the worker's own stop: never a lost retry
    (None, 3, 0, ("queued", "failed")),
    (None, 3, 1, ("failed", "failed")),  # max_retries 1 used up
    ("timeout", 130, 0, ("failed", "timeout")),  # timeout is not in retry.on
    ("evicted", None, 0, ("queued", "evicted")),
])
def test_an_ended_attempt_becomes_what_the_retry_policy_says(why, code, retries, expected):
    from vipr.jobs.policy import counted, next_state

    s = spec(retry={"max_retries": 1, "on": ["failed", "evicted"]})
    assert next_state(why, code, s, retries) == expected
    assert counted(expected[1]) == (expected[1] != "stopped")
