"""Crash recovery: the jobs a dead worker (``kill -9``, a lost machine) left ``running``.

A worker counts as dead when, on this host, its process is gone (a worker that is merely slow, its
loop held up by a busy machine, keeps its jobs); on another host (a shared PostgreSQL), when its
heartbeat is older than ``stale_s`` and no worker of that host has beaten since: a live worker
there recovers its own host's jobs, as only it can see their orphaned processes. Each job of a dead worker: what is left of its processes is killed (this host),
then one conditional UPDATE (still running, still that worker's: one recoverer wins) marks the
attempt evicted, queued again when "evicted" is in retry.on and retries are left, else failed
(cancelled, when someone had asked to cancel it). The next attempt resumes the run folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from vipr.jobs import process, store
from vipr.jobs.policy import EVICTED, counted, next_state
from vipr.jobs.spec import parse_spec


def worker_dead(worker: dict | None, workers: list[dict], host: str, now: float, stale_s: float) -> bool:
    """Whether ``worker`` (a job_workers row; None: gone) has stopped, as seen from ``host`` at ``now``."""
    if worker is None:
        return True
    if worker["host"] == host:
        return not process.pid_alive(worker["pid"])
    return worker["heartbeat"] < now - stale_s and not any(w["host"] == worker["host"] and w["heartbeat"] >= now - stale_s for w in workers)


def live_workers(stale_s: float) -> list[dict]:
    rows, host, now = store.workers(), store.hostname(), time.time()
    return [w for w in rows if not worker_dead(w, rows, host, now, stale_s)]


def recover(stale_s: float, exclude: str | None = None, say: Callable[[str], None] = print) -> list[str]:
    """Recover every job a dead worker left running (not those of worker ``exclude``); their ids."""
    jobs = [j for j in store.running_jobs() if j["worker_id"] != exclude]
    rows = store.workers()  # read after the jobs: a worker registers before it claims, so a new claim's worker is here
    by_id, host, now = {w["id"]: w for w in rows}, store.hostname(), time.time()
    recovered = []
    for job in jobs:
        if worker_dead(by_id.get(job["worker_id"]), rows, host, now, stale_s) and evict(job, host):
            recovered.append(job["id"])
            say(f"recovered job {job['name']} ({job['id']}) from dead worker {job['worker_id']}")
    for worker in rows:
        if worker["id"] != exclude and worker_dead(worker, rows, host, now, stale_s):
            store.remove_worker(worker["id"])
    return recovered


def evict(job: dict, host: str) -> bool:
    """Kill what is left of ``job``'s attempt (this host), then mark it evicted; whether this call did."""
    if job["host"] == host:
        process.kill_job(job["id"], job["pid"])
    why = store.CANCELLED if job["cancel_requested"] else EVICTED
    state, reason = next_state(why, None, parse_spec(job["spec"]), job["retries"])
    if state == store.QUEUED:
        return store.requeue(job["id"], job["worker_id"], reason, None, counted=counted(reason))
    return store.finish(job["id"], job["worker_id"], state, reason=reason)
