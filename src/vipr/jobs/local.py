"""The local backend of ``vipr job``: jobs in the metadata database, run by ``vipr worker`` on this machine.

``submit`` inserts a queued row, then makes sure a worker will run it: a live one (a fresh
heartbeat), the one the last submit started (its pid in WORKSPACE/jobs/worker.pid, for the
second it takes to register), else a new detached ``vipr worker --exit-when-idle 60`` writing
to WORKSPACE/jobs/worker.log. The row goes in before the look for a worker, and an idle worker
deregisters before its last look at the queue, so a job never waits with no worker to come.
"""

from __future__ import annotations

import codecs
import fcntl
import os
import shlex
import subprocess
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from vipr.errors import ViprError
from vipr.jobs import process, recovery, store
from vipr.jobs.launch import CHECKPOINT, check_local, needs
from vipr.jobs.spec import JobSpec, parse_spec, resumable
from vipr.jobs.worker import WorkerSettings
from vipr.platform import db
from vipr.platform.workspace import ENV_HOME

AUTO_IDLE_S = 60  # an auto-started worker exits after this long with nothing to run
STARTUP_S = 30  # a spawned worker not registered after this long is taken for dead
STALE_S = WorkerSettings.stale_s
FOLLOW_POLL_S = 0.2
TIMES = ("submitted", "started", "finished", "heartbeat")


class LocalBackend:
    """Jobs on this machine's queue (or on the team's, with VIPR_DB_URL)."""

    def __init__(self, args=None):
        pass

    def submit(self, spec: JobSpec) -> dict:
        check_local(spec)
        _check_run_dir_free(spec)
        _warn_if_too_big(spec)
        job = store.insert_job(spec, Path.cwd())
        return {**record(job), "worker": ensure_worker()}

    def list(self) -> list[dict]:
        return [record(job) for job in store.list_jobs()]

    def show(self, ref: str) -> dict:
        job = store.get_job(ref)
        return {**record(job), "spec": job["spec"]}

    def logs(self, ref: str, follow: bool, out: TextIO | None = None) -> None:
        job, out = store.get_job(ref), out or sys.stdout
        if not follow and not Path(job["log_path"]).is_file():
            print(f"job {job['name']} ({job['state']}) has no log yet; `vipr job logs {job['name']} -f` waits "
                  f"for it", file=sys.stderr)
            return
        follow_log(job, out, follow)

    def cancel(self, ref: str) -> dict:
        job = store.get_job(ref)
        if job["state"] in store.FINAL:
            raise ViprError(f"job {job['name']} is already {job['state']}: nothing to cancel (`vipr job delete "
                            f"{job['name']}` removes it)")
        if store.request_cancel(job) == store.RUNNING:  # its worker stops it: one SIGTERM, whoever asks
            recovery.recover(STALE_S)  # a job whose worker is dead is recorded cancelled at once
        job = store.find_job(job["id"]) or job
        return {"id": job["id"], "name": job["name"], "state": job["state"]}

    def retry(self, ref: str) -> dict:
        job = store.get_job(ref)
        if job["state"] not in (store.FAILED, store.CANCELLED):
            again = "; submit its spec again under another --name" if job["state"] == store.SUCCEEDED else ""
            raise ViprError(f"job {job['name']} is {job['state']}: only a failed or cancelled job can be "
                            f"retried{again}")
        if not store.retry(job):
            raise ViprError(f"job {job['name']} changed meanwhile; see `vipr job show {job['name']}`")
        spec = parse_spec(job["spec"])
        resume = resumable(spec) and (Path(job["run_dir"]) / CHECKPOINT).is_file()
        return {"id": job["id"], "name": job["name"], "state": store.QUEUED, "resume": resume,
                "worker": ensure_worker()}

    def delete(self, ref: str) -> dict:
        job = store.get_job(ref)
        if job["state"] == store.RUNNING or not store.delete_job(job):
            raise ViprError(f"job {job['name']} is running; cancel it first (`vipr job cancel {job['name']}`), "
                            f"then delete it")
        Path(job["log_path"]).unlink(missing_ok=True)
        return {"id": job["id"], "name": job["name"], "state": "deleted", "run_dir": job["run_dir"]}

    # --- text for the CLI ---------------------------------------------------------------------------------

    def submitted_line(self, done: dict) -> str:
        worker = {"running": "a worker is running", "starting": "a worker is starting",
                  "started": f"started a worker (its log: {store.jobs_dir() / 'worker.log'})"}[done["worker"]]
        return (f"submitted job {done['name']} (id {done['id']}) to the local queue; {worker}; follow it with "
                f"`vipr job logs {done['name']} -f`")

    def table(self, jobs: list[dict]) -> tuple[list[str], list[list]]:
        header = ["id", "name", "state", "priority", "attempts", "exit", "reason", "submitted"]
        return header, [[j["id"], j["name"], j["state"], j["priority"], j["attempts"], _dash(j["exit_code"]),
                         _dash(j["reason"]), _short(j["submitted"])] for j in jobs]

    def show_text(self, job: dict) -> str:
        lines = [f"job {job['name']} (id {job['id']}): {job['state']}, attempt {job['attempts']}, priority "
                 f"{job['priority']}, queue {job['queue']}",
                 f"  command     {shlex.join(job['command'])}",
                 f"  run folder  {job['run_dir']}",
                 f"  times       submitted {_short(job['submitted'])}, started {_short(job['started'])}, "
                 f"finished {_short(job['finished'])}",
                 f"  result      exit code {_dash(job['exit_code'])}, reason {_dash(job['reason'])}, "
                 f"retries {job['retries']}"]
        if job["tracking_run_id"] or job["model_version"]:
            lines.append(f"  tracked     run {_dash(job['tracking_run_id'])}, model {_dash(job['model_version'])}")
        if job["state"] == store.RUNNING:
            lines.append(f"  worker      {job['worker']} (pid {_dash(job['pid'])})")
        lines.append(f"  log         {job['log']}")
        return "\n".join(lines)

    def cancelled_line(self, done: dict) -> str:
        if done["state"] == store.RUNNING:
            return (f"cancelling job {done['name']}: its worker sends SIGTERM (vipr saves its checkpoint), SIGKILL "
                    f"after its grace period, and records it cancelled")
        return f"cancelled job {done['name']}"

    def retried_line(self, done: dict) -> str:
        how = "resuming its run folder (--resume)" if done["resume"] else "from the start"
        return f"queued job {done['name']} again, {how}; follow it with `vipr job logs {done['name']} -f`"

    def deleted_line(self, done: dict) -> str:
        return f"deleted job {done['name']} and its log (its run folder {done['run_dir']} stays)"


def record(job: dict) -> dict:
    """The JSON contract of ``vipr job show``/``list``: state lower case, times ISO 8601 UTC (None: not yet)."""
    keys = ("id", "name", "state", "priority", "queue", "attempts", "retries", "exit_code", "reason", "run_dir",
            "tracking_run_id", "model_version", "datasets", "pid", "cancel_requested")
    return {**{k: job.get(k) for k in keys}, "command": list(job["spec"]["command"]),
            **{k: _iso(job.get(k)) for k in TIMES}, "worker": job.get("worker_id"), "log": job["log_path"]}


def follow_log(job: dict, out: TextIO, follow: bool) -> None:
    """Copy the job's log to ``out``; with ``follow``, keep copying until the job is in a final state."""
    path, position = Path(job["log_path"]), 0
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may span two reads
    while True:
        now = store.find_job(job["id"]) if follow else None
        done = not follow or now is None or now["state"] in store.FINAL  # read first: the log is closed by then
        position = _copy(path, position, out, decoder)
        if done:
            return
        time.sleep(FOLLOW_POLL_S)


def _copy(path: Path, position: int, out: TextIO, decoder) -> int:
    try:
        with open(path, "rb") as log:
            log.seek(position)
            chunk = log.read()
    except FileNotFoundError:  # not started yet
        return position
    if chunk:
        out.write(decoder.decode(chunk))
        out.flush()
    return position + len(chunk)


def ensure_worker() -> str:
    """``running`` (a live worker takes the job), ``starting`` (the last one spawned), or ``started`` (now)."""
    folder = store.jobs_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "worker.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two submits at once start one worker
        if recovery.live_workers(STALE_S):
            return "running"
        pid_file = folder / "worker.pid"
        if pid_file.is_file() and time.time() - pid_file.stat().st_mtime < STARTUP_S and \
                process.pid_alive(int(pid_file.read_text() or 0)):
            return "starting"
        pid_file.write_text(str(spawn_worker(folder / "worker.log")))
        return "started"


def spawn_worker(log_path: Path) -> int:
    """A detached ``vipr worker --exit-when-idle 60`` on this workspace; its pid."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIPR_JOB_ID", "VIPR_JOB_NAME")}
    env[ENV_HOME] = str(db.home())  # the same workspace whatever folder it runs in
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "vipr.cli.main", "worker", "--exit-when-idle",
                                 str(AUTO_IDLE_S)], env=env, cwd=db.home(), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return proc.pid


def _check_run_dir_free(spec: JobSpec) -> None:
    run_dir = str((Path.cwd() / spec.outputs.run_dir).resolve())
    for job in store.list_jobs((store.QUEUED, store.RUNNING)):
        if job["run_dir"] == run_dir and job["name"] != spec.name:  # the same name: the insert says so
            raise ViprError(f"run folder {run_dir} belongs to job {job['name']} ({job['state']}); give this job "
                            f"another outputs.run_dir (or --out), or wait for that one")


def _warn_if_too_big(spec: JobSpec) -> None:
    cpu, memory = needs(spec)
    cores, ram = os.cpu_count() or 1, process.total_memory()
    if cpu > cores or memory > ram:
        warnings.warn(f"job {spec.name} needs {cpu:g} cpus and {memory / 2**30:.1f} GiB, more than this machine's "
                      f"{cores} and {ram / 2**30:.1f} GiB: it waits for a worker started with more "
                      f"(vipr worker --cpus N --memory QTY), here or on another machine sharing {db.ENV_DB_URL}")


def _iso(seconds: float | None) -> str | None:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds") if seconds else None


def _short(iso: str | None) -> str:
    return iso[:19].replace("T", " ") if iso else "-"


def _dash(value) -> str:
    return "-" if value is None else str(value)
