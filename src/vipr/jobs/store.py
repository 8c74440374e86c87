"""The local job queue's rows in the metadata database (vipr.platform.db): jobs, and the workers running them.

    jobs         id (8 hex digits), name (unique: the spec's DNS label), spec (JSON), state (queued |
                 running | succeeded | failed | cancelled), priority, queue, workdir (where it was submitted:
                 the command runs there), run_dir (absolute), submitted / started / finished / heartbeat
                 (seconds since the epoch), attempts (started so far), retries (re-queues the retry policy
                 granted), exit_code (negative: killed by that signal), reason (failed | timeout | evicted |
                 cancelled | stopped | registration failed: ...), tracking_run_id, model_version
                 (NAME/VERSION), worker_id, host, pid (the attempt's process group), log_path, datasets
                 (the spec's dataset refs, for lineage), cancel_requested
    job_workers  id, host, pid, cpus, memory (bytes), started, heartbeat

Every state change is one conditional UPDATE (``... WHERE id = ? AND state = ?``) whose row count
says whether this caller won, so two workers never take the same job: SQLite lets one writer in
at a time, and PostgreSQL (READ COMMITTED) re-checks the WHERE of a row another transaction has
just changed, so the loser matches nothing. One code path for both; no SELECT ... FOR UPDATE.
"""

from __future__ import annotations

import secrets
import socket
import time
from pathlib import Path
from typing import Any

from sqlalchemy import (JSON, Boolean, Column, Float, Integer, String, Table, Text, delete, insert, or_, select,
                        update)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from vipr.config import to_dict
from vipr.errors import ViprError
from vipr.jobs.spec import JobSpec
from vipr.platform import db

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
FINAL = (SUCCEEDED, FAILED, CANCELLED)
LIST_HINT = "`vipr job list` lists the jobs"

JOBS = Table(
    "jobs", db.METADATA,
    Column("id", String(16), primary_key=True),
    Column("name", String(63), nullable=False, unique=True),
    Column("spec", JSON, nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("priority", Integer, nullable=False),
    Column("queue", String(253), nullable=False),
    Column("workdir", Text, nullable=False),
    Column("run_dir", Text, nullable=False),
    Column("submitted", Float, nullable=False),
    Column("started", Float),
    Column("finished", Float),
    Column("heartbeat", Float),
    Column("attempts", Integer, nullable=False, default=0),
    Column("retries", Integer, nullable=False, default=0),
    Column("exit_code", Integer),
    Column("reason", Text),
    Column("tracking_run_id", String(64)),
    Column("model_version", String(200)),
    Column("worker_id", String(64)),
    Column("host", String(255)),
    Column("pid", Integer),
    Column("log_path", Text, nullable=False),
    Column("datasets", JSON, nullable=False),
    Column("cancel_requested", Boolean, nullable=False, default=False),
)

WORKERS = Table(
    "job_workers", db.METADATA,
    Column("id", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("cpus", Float, nullable=False),
    Column("memory", Float, nullable=False),  # bytes
    Column("started", Float, nullable=False),
    Column("heartbeat", Float, nullable=False),
)


class JobNotFound(ViprError):
    """No job has that id or name."""


def engine():
    return db.engine_for(JOBS, WORKERS)


def jobs_dir() -> Path:
    """WORKSPACE/jobs: the jobs' logs and the auto-started worker's."""
    return db.home() / "jobs"


def where() -> str:
    """The queue's database, for messages (its password hidden)."""
    return engine().url.render_as_string(hide_password=True)


def hostname() -> str:
    return socket.gethostname()


def _execute(statement) -> Any:
    """Run one statement in its own transaction: the one write primitive under every helper."""
    try:
        with engine().begin() as conn:
            result = conn.execute(statement)
            return result.rowcount if statement.is_dml else [dict(row._mapping) for row in result]
    except IntegrityError:
        raise
    except SQLAlchemyError as err:
        raise db.DatabaseError(f"the job table cannot be used ({err.__class__.__name__}: "
                               f"{str(err).splitlines()[0]}); check {db.ENV_DB_URL} and that the database is up") from None


def _set(job_id: str, where: dict | None = None, **values) -> bool:
    """``UPDATE jobs SET values WHERE id = job_id AND column = value ...``; whether it changed the row."""
    statement = update(JOBS).where(JOBS.c.id == job_id)
    for column, value in (where or {}).items():
        statement = statement.where(JOBS.c[column].in_(value) if isinstance(value, tuple) else JOBS.c[column] == value)
    return _execute(statement.values(**values)) == 1


def insert_job(spec: JobSpec, workdir: Path) -> dict:
    """A queued row for ``spec`` (its run folder resolved against ``workdir``); ViprError if the name is taken."""
    run_dir = (workdir / spec.outputs.run_dir).resolve()
    for _ in range(3):  # a clash of random ids (one in 4e9) gets a new id; a clash of names is the user's
        job_id = secrets.token_hex(4)
        row = {"id": job_id, "name": spec.name, "spec": to_dict(spec), "state": QUEUED, "priority": spec.priority,
               "queue": spec.queue, "workdir": str(workdir), "run_dir": str(run_dir), "submitted": time.time(),
               "attempts": 0, "retries": 0, "log_path": str(jobs_dir() / f"{job_id}.log"),
               "datasets": [i.ref for i in spec.inputs if i.kind == "dataset"], "cancel_requested": False}
        try:
            _execute(insert(JOBS).values(**row))
            return row
        except IntegrityError:
            if _execute(select(JOBS.c.id).where(JOBS.c.name == spec.name)):
                raise ViprError(f"a job named {spec.name} already exists; pick another --name, or remove it "
                                f"with `vipr job delete {spec.name}`") from None
    raise db.DatabaseError("could not draw a free job id in 3 tries; submit again")


def get_job(ref: str) -> dict:
    """The job whose id, else name, is ``ref``; JobNotFound naming how to see the jobs."""
    rows = _execute(select(JOBS).where(or_(JOBS.c.id == ref, JOBS.c.name == ref)))
    if not rows:
        raise JobNotFound(f"no job {ref!r} in the local queue ({where()}); {LIST_HINT}")
    return next((r for r in rows if r["id"] == ref), rows[0])


def find_job(job_id: str) -> dict | None:
    rows = _execute(select(JOBS).where(JOBS.c.id == job_id))
    return rows[0] if rows else None


def list_jobs(states: tuple[str, ...] | None = None) -> list[dict]:
    """Jobs in queue order: by priority (highest first), then submit order."""
    statement = select(JOBS).order_by(JOBS.c.priority.desc(), JOBS.c.submitted, JOBS.c.id)
    return _execute(statement.where(JOBS.c.state.in_(states)) if states else statement)


def claim(job_id: str, worker_id: str, host: str) -> dict | None:
    """Take a queued job for this worker (queued -> running, one attempt more); the row, or None if another won."""
    now = time.time()
    taken = _execute(update(JOBS).where(JOBS.c.id == job_id, JOBS.c.state == QUEUED).values(
        state=RUNNING, worker_id=worker_id, host=host, pid=None, started=now, heartbeat=now, finished=None,
        exit_code=None, attempts=JOBS.c.attempts + 1))
    return find_job(job_id) if taken == 1 else None


def set_pid(job_id: str, worker_id: str, pid: int) -> bool:
    return _set(job_id, {"state": RUNNING, "worker_id": worker_id}, pid=pid)


def finish(job_id: str, worker_id: str, state: str, **values) -> bool:
    """running (by this worker) -> a final state; False when the row is no longer this worker's."""
    return _set(job_id, {"state": RUNNING, "worker_id": worker_id}, state=state, finished=time.time(),
                heartbeat=None, **values)


def requeue(job_id: str, worker_id: str, reason: str, exit_code: int | None, counted: bool) -> bool:
    """running (by this worker) -> queued again; ``counted``: the retry policy granted it (retries + 1)."""
    retries = JOBS.c.retries + 1 if counted else JOBS.c.retries
    return _set(job_id, {"state": RUNNING, "worker_id": worker_id}, state=QUEUED, reason=reason, exit_code=exit_code,
                retries=retries, finished=time.time(), heartbeat=None, pid=None)


def request_cancel(job: dict) -> str:
    """queued -> cancelled now; running -> flagged for its worker to stop. The state it is left in."""
    if _set(job["id"], {"state": QUEUED}, state=CANCELLED, reason=CANCELLED, finished=time.time()):
        return CANCELLED
    if _set(job["id"], {"state": RUNNING}, cancel_requested=True):
        return RUNNING
    return find_job(job["id"])["state"]


def cancel_flags(job_ids: list[str]) -> set[str]:
    """Which of ``job_ids`` someone asked to cancel."""
    if not job_ids:
        return set()
    rows = _execute(select(JOBS.c.id).where(JOBS.c.id.in_(job_ids), JOBS.c.cancel_requested.is_(True)))
    return {r["id"] for r in rows}


def retry(job: dict) -> bool:
    """failed | cancelled -> queued, the retry policy's count started afresh."""
    return _set(job["id"], {"state": (FAILED, CANCELLED)}, state=QUEUED, retries=0, reason=None, exit_code=None,
                finished=None, cancel_requested=False)


def delete_job(job: dict) -> bool:
    """Remove a job's row unless it is running."""
    return _execute(delete(JOBS).where(JOBS.c.id == job["id"], JOBS.c.state != RUNNING)) == 1


def running_jobs() -> list[dict]:
    return _execute(select(JOBS).where(JOBS.c.state == RUNNING))


def add_worker(worker_id: str, pid: int, cpus: float, memory: float) -> None:
    now = time.time()
    _execute(insert(WORKERS).values(id=worker_id, host=hostname(), pid=pid, cpus=cpus, memory=memory, started=now,
                                    heartbeat=now))


def remove_worker(worker_id: str) -> None:
    _execute(delete(WORKERS).where(WORKERS.c.id == worker_id))


def workers() -> list[dict]:
    return _execute(select(WORKERS))


def touch_worker(worker_id: str) -> bool:
    """Mark the worker alive; False when its row is gone (removed while it seemed dead)."""
    return _execute(update(WORKERS).where(WORKERS.c.id == worker_id).values(heartbeat=time.time())) == 1


def heartbeat(worker_id: str, job_ids: list[str]) -> set[str]:
    """Mark the worker's running jobs alive; the ids of ``job_ids`` still this worker's."""
    now = time.time()
    if not job_ids:
        return set()
    _execute(update(JOBS).where(JOBS.c.id.in_(job_ids), JOBS.c.worker_id == worker_id,
                                JOBS.c.state == RUNNING).values(heartbeat=now))
    rows = _execute(select(JOBS.c.id).where(JOBS.c.id.in_(job_ids), JOBS.c.worker_id == worker_id,
                                            JOBS.c.state == RUNNING))
    return {r["id"] for r in rows}
