"""Shared pieces of the local job-queue benchmarks (job_overhead, job_sharing, job_soak): a fresh
workspace, `vipr worker` processes, submitting through the CLI as a user does, waiting on jobs.

Every job is a real vipr command. NOOP (`vipr version`) imports nothing heavy: it is the no-op job,
the queue's own cost. KNN_PROBE (a kNN probe of a random tiny backbone on 30 images of 8 px) is the
cheapest command that imports torch, which takes most of its seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VIPR = [sys.executable, "-m", "vipr.cli.main"]
NOOP = ["vipr", "version"]
KNN_PROBE = ["vipr", "eval", "knn", "--checkpoint", "random", "--backbone", "tiny", "--image-size", "8", "--k", "5",
        "--data", "builtin:shapes?train=20&test=10&size=8", "--no-progress", "--no-track"]
TINY_PRETRAIN = ["vipr", "pretrain", "--backbone", "tiny", "--no-progress", "--no-track",
                 "--set", "method.queue_size=64", "method.proj_hidden_dim=16", "method.proj_dim=8"]


@contextlib.contextmanager
def workspace(keep: str | None = None):
    """A fresh VIPR_HOME (SQLite queue, logs) and working folder for the run; removed after unless ``keep``."""
    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="vipr-jobs-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    saved = {k: os.environ.get(k) for k in ("VIPR_HOME", "VIPR_DB_URL", "VIPR_TRACKING")}
    os.environ.update({"VIPR_HOME": str(folder / "ws"), "VIPR_TRACKING": "0"})
    os.environ.pop("VIPR_DB_URL", None)
    try:
        yield folder
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
        if not keep:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)


def start_worker(folder: Path, *options: str, log_name: str = "worker") -> subprocess.Popen:
    """``vipr worker OPTIONS`` in its own process, its output in FOLDER/NAME.log."""
    log = open(folder / f"{log_name}.log", "ab")
    return subprocess.Popen([*VIPR, "worker", *options], cwd=folder, stdout=log, stderr=subprocess.STDOUT)


def wait_registered(count: int = 1, timeout: float = 60.0) -> None:
    """Until ``count`` workers have registered (so a submit finds them and starts none of its own)."""
    from vipr.jobs import store

    deadline = time.monotonic() + timeout
    while len(store.workers()) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"no {count} registered worker(s) after {timeout:g} s; see the worker logs")
        time.sleep(0.05)


def submit(folder: Path, name: str, command: list[str], sets: tuple[str, ...] = ()) -> dict:
    """``vipr job submit --json --name NAME [--set ...] -- COMMAND`` from ``folder``; its record."""
    argv = [*VIPR, "job", "submit", "--json", "--name", name, *(["--set", *sets] if sets else []), "--", *command]
    done = subprocess.run(argv, cwd=folder, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"submit {name} failed: {done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def wait_final(ids: list[str], timeout: float, poll_s: float = 0.05) -> list[dict]:
    """Until every job in ``ids`` is in a final state; their rows."""
    from vipr.jobs import store

    deadline = time.monotonic() + timeout
    while True:
        rows = [store.find_job(i) for i in ids]
        if all(r is not None and r["state"] in store.FINAL for r in rows):
            return rows
        if time.monotonic() > deadline:
            left = [(r["name"], r["state"]) for r in rows if r and r["state"] not in store.FINAL]
            raise SystemExit(f"jobs not final after {timeout:g} s: {left}")
        time.sleep(poll_s)


def stop(worker: subprocess.Popen, timeout: float = 60.0) -> None:
    if worker.poll() is None:
        worker.terminate()
        worker.wait(timeout=timeout)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
