"""``vipr job`` on the local queue, through the CLI: one real command run by the worker `submit` starts, then
cancel, retry, delete, logs -f and the JSON contract against fake-command workers in their own processes."""

import json
import os
import signal
from pathlib import Path

import pytest

from vipr.cli.main import main
from vipr.jobs import process, store

KNN = ["vipr", "eval", "knn", "--checkpoint", "random", "--backbone", "tiny", "--image-size", "8", "--k", "5",
       "--data", "builtin:shapes?train=20&test=10&size=8", "--no-progress"]  # the cheapest real command (~3 s)
RECORD_KEYS = {"id", "name", "state", "priority", "queue", "attempts", "retries", "exit_code", "reason", "run_dir",
               "tracking_run_id", "model_version", "datasets", "pid", "cancel_requested", "command", "submitted",
               "started", "finished", "heartbeat", "worker", "log"}
LONG = ["--set", "env.FAKE_SECONDS=60"]


def cli(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli_json(capsys, group, action, *rest):
    code, out, err = cli(capsys, group, action, "--json", *rest)  # before any `--`
    assert code == 0, err
    return json.loads(out)


@pytest.fixture
def fake_worker(kit, worker_process):
    """One fake-command worker, registered before the test submits (so `submit` starts none of its own)."""
    worker = worker_process(cpus=1)
    kit.wait_until(store.workers, what="registered worker")
    return worker


def test_submit_starts_a_worker_and_logs_follow_a_real_command_to_its_end(kit, capsys):
    try:
        done = cli_json(capsys, "job", "submit", "--name", "knn", "--", *KNN)
        assert (done["state"], done["worker"], done["attempts"]) == ("queued", "started", 0)
        code, out, _ = cli(capsys, "job", "logs", "knn", "-f")  # returns once the job is in a final state
        assert code == 0 and "attempt 1 of job knn" in out and "knn: top-1" in out
        job = cli_json(capsys, "job", "show", "knn")
        assert set(job) == RECORD_KEYS | {"spec"} and job["spec"]["command"] == job["command"]
        assert (job["state"], job["exit_code"], job["attempts"], job["reason"]) == ("succeeded", 0, 1, None)
        assert job["run_dir"] == str(kit.root / "runs" / "knn") and (kit.root / "runs" / "knn" / "metrics.json").is_file()
        assert job["submitted"] <= job["started"] <= job["finished"] and job["finished"].endswith("+00:00")
        assert Path(job["log"]).is_file() and job["log"] == str(kit.root / "ws" / "jobs" / f"{job['id']}.log")
        assert [j["name"] for j in cli_json(capsys, "job", "list")] == ["knn"]
        assert (kit.root / "ws" / "jobs" / "worker.log").is_file()
    finally:  # the started worker would idle for a minute
        pid_file = kit.root / "ws" / "jobs" / "worker.pid"
        if pid_file.is_file() and process.pid_alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)


def test_cancel_stops_a_queued_job_at_once_and_a_running_one_by_sigterm(kit, fake_worker, capsys):
    cli(capsys, "job", "submit", "--name", "runner", *LONG, "--", "vipr", "pretrain")
    running = kit.wait_for("runner", "running")
    kit.wait_until(lambda: kit.attempts(running), what="started attempt")
    waiting = cli_json(capsys, "job", "submit", "--name", "waiter", "--", "vipr", "pretrain")
    assert waiting["worker"] == "running"  # the live worker takes it once the 1-cpu runner is done
    code, out, _ = cli(capsys, "job", "cancel", "waiter")
    assert (code, out.strip(), store.get_job("waiter")["state"]) == (0, "cancelled job waiter", "cancelled")
    code, out, _ = cli(capsys, "job", "cancel", "runner")
    assert code == 0 and out.startswith("cancelling job runner: its worker sends SIGTERM")
    done = kit.wait_for("runner", "cancelled")
    assert (done["reason"], done["exit_code"]) == ("cancelled", 130)  # vipr's exit after saving its checkpoint
    code, _, err = cli(capsys, "job", "cancel", "runner")
    assert code == 1 and "job runner is already cancelled: nothing to cancel" in err


def test_retry_resumes_the_run_folder_and_delete_refuses_a_running_job(kit, fake_worker, capsys):
    cli(capsys, "job", "submit", "--name", "flaky", "--set", "env.FAKE_FAIL_ATTEMPTS=1", "--", "vipr", "pretrain")
    failed = kit.wait_for("flaky", "failed")
    assert (failed["exit_code"], failed["reason"]) == (3, "failed")  # retry.on defaults to evicted only
    again = cli_json(capsys, "job", "retry", "flaky")
    assert (again["state"], again["resume"]) == ("queued", True)
    code, out, _ = cli(capsys, "job", "logs", "flaky", "--follow")  # both attempts, until it succeeds
    assert code == 0 and out.count("--- ") == 2 and '"code": 0' in out
    assert kit.wait_for("flaky", "succeeded")["attempts"] == 2
    second = [a for a in kit.attempts(failed) if a["event"] == "start"][1]
    assert second["argv"][-1] == "--resume"
    code, _, err = cli(capsys, "job", "retry", "flaky")
    assert code == 1 and "job flaky is succeeded: only a failed or cancelled job can be retried" in err

    cli(capsys, "job", "submit", "--name", "busy", *LONG, "--", "vipr", "pretrain")
    kit.wait_for("busy", "running")
    code, _, err = cli(capsys, "job", "delete", "busy")
    assert code == 1 and err.strip() == ("vipr job delete: error: job busy is running; cancel it first "
                                         "(`vipr job cancel busy`), then delete it")
    cli(capsys, "job", "cancel", "busy")
    kit.wait_for("busy", "cancelled")
    log = Path(store.get_job("busy")["log_path"])
    code, out, _ = cli(capsys, "job", "delete", "busy")
    assert code == 0 and out.startswith("deleted job busy and its log") and not log.exists()
    assert [j["name"] for j in cli_json(capsys, "job", "list")] == ["flaky"]


def test_show_and_list_read_well_and_an_unknown_job_is_one_line(kit, capsys, monkeypatch):
    monkeypatch.setattr("vipr.jobs.local.ensure_worker", lambda: "running")  # nothing runs: rows only
    cli(capsys, "job", "submit", "--name", "plain", "--set", "priority=2", "--", "vipr", "pretrain", "--epochs", "1")
    code, out, _ = cli(capsys, "job", "list")
    header, row = out.strip().splitlines()
    assert header.split() == ["id", "name", "state", "priority", "attempts", "exit", "reason", "submitted"]
    assert row.split()[1:6] == ["plain", "queued", "2", "0", "-"]
    code, out, _ = cli(capsys, "job", "show", "plain")
    assert out.startswith("job plain (id ") and "queued, attempt 0, priority 2" in out
    assert "command     vipr pretrain --epochs 1 --out runs/plain" in out
    for action in ("show", "logs", "cancel", "retry", "delete"):
        code, out, err = cli(capsys, "job", action, "nope")
        assert code == 1 and len(err.strip().splitlines()) == 1 and "`vipr job list` lists the jobs" in err, err
    code, _, err = cli(capsys, "job", "submit", "--name", "plain", "--", "vipr", "pretrain")
    assert code == 1 and "a job named plain already exists" in err
    code, _, err = cli(capsys, "job", "submit", "--name", "other", "--", "vipr", "pretrain", "--out", "runs/plain")
    assert code == 1 and "belongs to job plain (queued)" in err
    code, _, err = cli(capsys, "job", "submit", "--name", "huge", "--set", "resources.cpu=1000", "--", "vipr",
                       "pretrain")
    assert code == 0 and "warning: job huge needs 1000 cpus and 4.0 GiB, more than this machine's" in err


def test_worker_options_are_checked(capsys):
    code, _, err = cli(capsys, "worker", "--memory", "lots")
    assert code == 1 and "--memory must be a quantity such as 16Gi" in err
    code, _, err = cli(capsys, "worker", "--memory=-2Gi")
    assert code == 1 and "--memory must be a quantity such as 16Gi" in err
    code, _, err = cli(capsys, "worker", "--cpus", "0")  # every numeric option: tests/cli/test_bad_input.py
    assert code == 1 and "--cpus" in err and "got 0" in err
    assert cli(capsys, "worker", "--once", "--exit-when-idle", "3")[0] == 2  # one or the other
    assert process.pid_alive(os.getpid()) and not process.pid_alive(None)
