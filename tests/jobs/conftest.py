"""The local queue's test kit: a workspace in tmp_path, specs whose command is tests/jobs/fake_command.py
(a real subprocess, a tenth of a second instead of the seconds a real vipr command takes to import
torch), workers in this process or in their own, and waiting on a job's state."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from vipr.jobs import process, store
from vipr.jobs.spec import parse_spec
from vipr.jobs.worker import Worker, default_settings

HERE = Path(__file__).parent
FAKE, FAKE_WORKER, RACER = HERE / "fake_command.py", HERE / "fake_worker.py", HERE / "claim_racer.py"
FAST = {"poll_s": 0.05, "heartbeat_s": 0.5, "stale_s": 5.0, "grace_s": 2.0}  # seconds


def fake_launcher(words):
    return [sys.executable, str(FAKE), *words[1:]]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """VIPR_HOME in tmp_path (its vipr.db a real SQLite file), the test run from tmp_path."""
    monkeypatch.setenv("VIPR_HOME", str(tmp_path / "ws"))
    monkeypatch.delenv("VIPR_DB_URL", raising=False)
    monkeypatch.delenv("VIPR_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def make_spec(name, command=("vipr", "pretrain", "--epochs", "1"), seconds=0.0, env=None, **keys):
    """A spec whose fake command works ``seconds``; ``env`` adds FAKE_* variables; ``keys`` any spec key."""
    data = {"name": name, "command": list(command), "env": {"FAKE_SECONDS": str(seconds), **(env or {})}, **keys}
    return parse_spec(data)


def submit(name, **kwargs) -> dict:
    return store.insert_job(make_spec(name, **kwargs), Path.cwd())


def run_worker(**settings) -> Worker:
    """A worker in this process, run until idle (--once)."""
    worker = Worker(default_settings(**{**FAST, "exit_when_idle": 0.0, **settings}), launcher=fake_launcher,
                    say=lambda text: None)
    worker.run()
    return worker


def attempts(job: dict) -> list[dict]:
    """The fake command's start and end lines of every attempt of ``job``."""
    path = Path(job["run_dir"]) / "attempts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def wait_for(ref: str, states, timeout: float = 20.0) -> dict:
    states = (states,) if isinstance(states, str) else tuple(states)
    deadline = time.monotonic() + timeout
    while True:
        job = store.get_job(ref)
        if job["state"] in states:
            return job
        assert time.monotonic() < deadline, f"job {ref} still {job['state']} after {timeout} s, not {states}"
        time.sleep(0.05)


def wait_until(condition, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)
    return found


def race_for_claims(jobs: int, racers: int) -> None:
    """Several processes claim every queued job at once: each is taken by exactly one."""
    ids = {submit(f"race-{i}")["id"] for i in range(jobs)}
    running = [subprocess.Popen([sys.executable, str(RACER), f"w{i}"], stdout=subprocess.PIPE, text=True)
               for i in range(racers)]
    taken = [job for r in running for job in json.loads(r.communicate(timeout=60)[0])]
    assert sorted(taken) == sorted(ids)  # every job taken, none twice
    assert all(j["attempts"] == 1 for j in store.list_jobs())


@pytest.fixture
def kit(workspace):
    """The helpers above, for the tests (a conftest is not importable under --import-mode=importlib)."""
    return SimpleNamespace(make_spec=make_spec, submit=submit, run_worker=run_worker, attempts=attempts,
                           wait_for=wait_for, wait_until=wait_until, race_for_claims=race_for_claims, root=workspace)


@pytest.fixture
def worker_process(workspace):
    """Start fake-command workers in their own processes: ``start(**settings) -> Popen``. At the end every
    worker still alive, and every job process left (a kill -9 leaves orphans), is killed."""
    started = []

    def start(**settings):
        worker = subprocess.Popen([sys.executable, str(FAKE_WORKER), json.dumps({**FAST, **settings})],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.poll() is None:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
    for job in store.list_jobs():
        process.kill_job(job["id"], job["pid"])
    _stop_auto_workers()


def _stop_auto_workers() -> None:
    """SIGTERM the workers `vipr job submit` started in this workspace (they would idle for a minute)."""
    for row in store.workers():
        if row["host"] == store.hostname() and row["pid"] != os.getpid() and process.pid_alive(row["pid"]):
            os.kill(row["pid"], signal.SIGTERM)
