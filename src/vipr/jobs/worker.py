"""The local queue's worker: runs queued jobs on this machine within a budget of cores, memory and jobs.

Order: the highest priority first, then submit order. The first queued job that does not fit
the room left waits for it, and no later job passes it (a big job is never starved by small
ones); a job bigger than the worker's whole budget is left for a bigger worker.

One attempt: claimed atomically (store.claim), started in its own process group, watched each poll:

    exit 0                 succeeded (its checkpoint registered first, with outputs.register)
    exit != 0              failed; queued again when "failed" is in retry.on and retries are left
    past spec.timeout      SIGTERM (to the command: once), SIGKILL (its group) after the grace period;
                           reason timeout (retry.on: timeout)
    cancel asked           the same stop; cancelled
    worker SIGTERM/SIGINT  every attempt stopped the same way (vipr saves its checkpoint) and queued
                           again, not counted against its retries; then the worker exits

The next attempt of a re-queued job resumes its run folder (vipr.jobs.launch). Every few seconds
the worker beats (its row and its jobs') and recovers what dead workers left (vipr.jobs.recovery).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from vipr.jobs import process, recovery, store
from vipr.jobs.launch import attempt_env, attempt_words, needs, python_argv, register_run, tracking_run_id
from vipr.jobs.policy import STOPPED, counted, next_state
from vipr.jobs.spec import JobSpec, parse_spec
from vipr.platform import db

@dataclass(frozen=True)
class WorkerSettings:
    cpus: float  # cores the running jobs may hold together
    memory: float  # bytes the running jobs may hold together
    max_jobs: int | None = None  # jobs at once; None: as many as fit
    grace_s: float = 30.0  # SIGTERM -> SIGKILL: time for vipr to save its checkpoint
    exit_when_idle: float | None = None  # seconds with nothing to run before exiting; None: run until stopped
    poll_s: float = 0.5  # how often the jobs are watched and the queue read
    heartbeat_s: float = 5.0
    stale_s: float = 30.0  # a worker whose heartbeat is older than this is dead


@dataclass
class Attempt:
    job: dict  # the row as claimed
    spec: JobSpec
    proc: subprocess.Popen
    log: BinaryIO
    cpu: float
    memory: float
    deadline: float | None  # time.monotonic() past which it is stopped (spec.timeout)
    stop: str | None = None  # why the worker stopped it: timeout | cancelled | stopped
    kill_at: float | None = None  # time.monotonic() of the SIGKILL that follows the SIGTERM
    registering: Future | None = None

    @property
    def id(self) -> str:
        return self.job["id"]

    @property
    def running(self) -> bool:
        return self.proc.returncode is None


class Worker:
    """``run()`` until stopped or idle; ``launcher`` turns a vipr command line into the argv to execute."""

    def __init__(self, settings: WorkerSettings, launcher: Callable[[list[str]], list[str]] = python_argv,
                 say: Callable[[str], None] | None = None):
        self.settings, self.launcher = settings, launcher
        self.host = store.hostname()
        self.id = f"{self.host}-{os.getpid()}-{secrets.token_hex(2)}"
        self.attempts: dict[str, Attempt] = {}
        self.stopping = False
        self._too_big: set[str] = set()
        self._specs: dict[str, tuple[JobSpec, float, float]] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vipr-register")
        self._say = say or (lambda text: print(f"{_now()} {text}", flush=True))

    def run(self) -> int:
        s = self.settings
        store.add_worker(self.id, os.getpid(), s.cpus, s.memory)
        self._say(f"worker {self.id}: {s.cpus:g} cpus, {s.memory / 2**30:.1f} GiB, jobs "
                  f"{s.max_jobs or 'as fit'}; database {store.where()}")
        try:
            with process.stop_signals(self._stop):
                self._loop()
        finally:
            self._abandon()
            with contextlib.suppress(db.DatabaseError):  # the database failing is what ended the loop
                store.remove_worker(self.id)
            self._pool.shutdown(wait=True)
        self._say(f"worker {self.id}: exiting")
        return 0

    def _stop(self, signum, _frame) -> None:
        self.stopping = True

    def _loop(self) -> None:
        s, next_beat, idle_since = self.settings, 0.0, None
        while True:
            now = time.monotonic()
            if now >= next_beat:
                self._beat()
                recovery.recover(s.stale_s, exclude=self.id, say=self._say)
                next_beat = now + s.heartbeat_s
            self._watch(now)
            if self.stopping:
                for attempt in self.attempts.values():
                    if attempt.stop is None and attempt.running:
                        self._terminate(attempt, STOPPED, now)
                if not self.attempts:
                    return
            else:
                waiting = self._start_fitting()
                idle_since = None if (self.attempts or waiting) else (idle_since or now)
                if idle_since is not None and s.exit_when_idle is not None and \
                        now - idle_since >= s.exit_when_idle and self._leave():
                    return
            time.sleep(s.poll_s)

    def _leave(self) -> bool:
        """Deregister, then look at the queue once more: a job submitted meanwhile saw no worker and started
        one, or is seen here (and taken once registered again: a running job needs its worker's row); whether
        to exit."""
        store.remove_worker(self.id)
        if any(self._fits(*self._needs(job)[1:], whole=True) for job in store.list_jobs((store.QUEUED,))):
            store.add_worker(self.id, os.getpid(), self.settings.cpus, self.settings.memory)
            return False
        return True

    def _beat(self) -> None:
        if not store.touch_worker(self.id):  # removed while this worker seemed dead (stopped, hung): back
            store.add_worker(self.id, os.getpid(), self.settings.cpus, self.settings.memory)
        owned = store.heartbeat(self.id, list(self.attempts))
        for attempt in [a for a in self.attempts.values() if a.id not in owned]:
            process.signal_group(attempt.proc.pid, signal.SIGKILL)  # another worker recovered it: never twice
            attempt.proc.wait()
            attempt.log.close()
            self._drop(attempt, "was recovered by another worker while this one seemed dead; stopped here")

    # --- starting -------------------------------------------------------------------------------------------

    def _fits(self, cpu: float, memory: float, whole: bool = False) -> bool:
        s = self.settings
        held = [a for a in self.attempts.values() if a.running and not whole]
        room_cpu = s.cpus - sum(a.cpu for a in held) + 1e-9  # cores are fractional: 0.5 + 0.5 fits 1
        if s.max_jobs is not None and len(held) >= s.max_jobs:
            return False
        return cpu <= room_cpu and memory <= s.memory - sum(a.memory for a in held)

    def _start_fitting(self) -> bool:
        """Start queued jobs in order while they fit; whether a queued job waits for room on this worker."""
        for job in store.list_jobs((store.QUEUED,)):
            spec, cpu, memory = self._needs(job)
            if not self._fits(cpu, memory, whole=True):
                if job["id"] not in self._too_big:
                    self._too_big.add(job["id"])
                    self._say(f"job {job['name']} needs {cpu:g} cpus and {memory / 2**30:.1f} GiB, more than this "
                              f"worker has: left queued for a bigger worker (vipr worker --cpus N --memory QTY)")
                continue
            if not self._fits(cpu, memory):
                return True
            self._start(job, spec, cpu, memory)
        return False

    def _needs(self, job: dict) -> tuple[JobSpec, float, float]:
        """The job's spec, cores and bytes (parsed once per job: the queue is read every poll)."""
        if job["id"] not in self._specs:
            spec = parse_spec(job["spec"])
            self._specs[job["id"]] = (spec, *needs(spec))
        return self._specs[job["id"]]

    def _start(self, job: dict, spec: JobSpec, cpu: float, memory: float) -> None:
        job = store.claim(job["id"], self.id, self.host)
        if job is None:  # another worker took it first
            return
        words = attempt_words(spec, job["attempts"], Path(job["run_dir"]))
        log_path = Path(job["log_path"])
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")
        log.write(f"--- {_now()} attempt {job['attempts']} of job {job['name']} ({job['id']}) on worker "
                  f"{self.id}: {shlex.join(words)}\n".encode())
        log.flush()
        try:
            proc = process.start(self.launcher(words), attempt_env(spec, job["id"]), job["workdir"], log)
        except OSError as err:  # the folder it was submitted from is gone, ...: no attempt can start
            log.close()
            store.finish(job["id"], self.id, store.FAILED, reason=f"cannot start: {err}")
            self._say(f"job {job['name']} ({job['id']}) failed to start: {err}")
            return
        store.set_pid(job["id"], self.id, proc.pid)
        deadline = time.monotonic() + spec.timeout if spec.timeout else None
        self.attempts[job["id"]] = Attempt(job, spec, proc, log, cpu, memory, deadline)
        self._say(f"started job {job['name']} ({job['id']}) attempt {job['attempts']}: pid {proc.pid}")

    # --- watching -------------------------------------------------------------------------------------------

    def _watch(self, now: float) -> None:
        cancels = store.cancel_flags([a.id for a in self.attempts.values() if a.stop != store.CANCELLED])
        for attempt in list(self.attempts.values()):
            if attempt.registering is not None:
                if attempt.registering.done():
                    self._registered(attempt)
            elif attempt.proc.poll() is not None:
                self._ended(attempt)
            elif attempt.id in cancels:
                self._terminate(attempt, store.CANCELLED, now)
            elif attempt.deadline is not None and now >= attempt.deadline and attempt.stop is None:
                self._terminate(attempt, "timeout", now)
            elif attempt.kill_at is not None and now >= attempt.kill_at:
                process.signal_group(attempt.proc.pid, signal.SIGKILL)
                attempt.kill_at = None

    def _terminate(self, attempt: Attempt, why: str, now: float) -> None:
        """SIGTERM the attempt's command (once: vipr saves its checkpoint), SIGKILL to its whole group after the
        grace period; ``why`` decides what follows."""
        attempt.stop = why
        if attempt.kill_at is None:
            process.signal_process(attempt.proc.pid, signal.SIGTERM)
            attempt.kill_at = now + self.settings.grace_s
            self._say(f"stopping job {attempt.job['name']} ({attempt.id}): {why}")

    def _ended(self, attempt: Attempt) -> None:
        code = attempt.proc.returncode
        process.signal_group(attempt.proc.pid, signal.SIGKILL)  # what the command left in its group (data workers)
        attempt.log.close()
        if attempt.stop != store.CANCELLED and code != 0 and store.cancel_flags([attempt.id]):
            attempt.stop = store.CANCELLED  # asked after this poll's look, and the attempt failed meanwhile
        state, reason = next_state(attempt.stop, code, attempt.spec, attempt.job["retries"])
        if state == store.SUCCEEDED:
            self._succeeded(attempt)
        elif state == store.QUEUED:
            store.requeue(attempt.id, self.id, reason, code, counted=counted(reason))
            self._drop(attempt, f"{reason} (exit code {code}): queued again")
        else:
            self._close(attempt, state, reason=reason, exit_code=code)

    def _succeeded(self, attempt: Attempt) -> None:
        register = attempt.spec.outputs.register
        if register is None:
            self._close(attempt, store.SUCCEEDED, exit_code=0, tracking_run_id=self._run_id(attempt))
            return
        env = attempt_env(attempt.spec, attempt.id)
        attempt.registering = self._pool.submit(register_run, Path(attempt.job["run_dir"]), register.name,
                                                register.alias, env)

    def _registered(self, attempt: Attempt) -> None:
        try:
            version = attempt.registering.result()
        except Exception as err:  # any failure of the registry (RegistryError, MLflow's own) fails the job
            self._close(attempt, store.FAILED, exit_code=0, reason=f"registration failed: {err}",
                        tracking_run_id=self._run_id(attempt))
            return
        self._close(attempt, store.SUCCEEDED, exit_code=0, model_version=version,
                    tracking_run_id=self._run_id(attempt))

    def _run_id(self, attempt: Attempt) -> str | None:
        return tracking_run_id(Path(attempt.job["run_dir"]), attempt_env(attempt.spec, attempt.id))

    def _close(self, attempt: Attempt, state: str, **values) -> None:
        if store.finish(attempt.id, self.id, state, **values):
            detail = ", ".join(filter(None, (values.get("reason"), f"exit code {values.get('exit_code')}")))
            self._drop(attempt, f"{state} ({detail})")
        else:
            self._drop(attempt, "was recovered by another worker meanwhile; its end is not recorded here")

    def _drop(self, attempt: Attempt, what: str) -> None:
        self.attempts.pop(attempt.id, None)
        self._say(f"job {attempt.job['name']} ({attempt.id}) {what}")

    def _abandon(self) -> None:
        """After an error in the loop: stop what still runs and queue it again (best effort)."""
        for attempt in list(self.attempts.values()):
            process.signal_process(attempt.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.grace_s
        for attempt in list(self.attempts.values()):
            try:
                attempt.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.signal_group(attempt.proc.pid, signal.SIGKILL)
                attempt.proc.wait()
            attempt.log.close()
            try:
                store.requeue(attempt.id, self.id, STOPPED, attempt.proc.returncode, counted=False)
            except db.DatabaseError:  # what failed: the next worker recovers the job as evicted
                pass
            self.attempts.pop(attempt.id, None)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def default_settings(**given) -> WorkerSettings:
    """This machine's whole budget (every core, all its RAM), ``given`` fields replaced."""
    return WorkerSettings(**{"cpus": float(os.cpu_count() or 1), "memory": process.total_memory(), **given})
