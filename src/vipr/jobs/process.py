"""Process groups of the local queue: each attempt runs in its own session, so a SIGKILL reaches the
command and everything it started (torchrun's ranks, data workers), and a terminal's Ctrl-C does not.
A stop's SIGTERM goes to the command alone: vipr passes it on to torchrun, which passes it to each
rank once (a rank given two aborts its checkpoint).

Liveness reads /proc where there is one (Linux): a zombie counts as dead, and an orphaned attempt is
found by the ``VIPR_JOB_ID`` in its processes' environment, so a reused process id is never killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from typing import BinaryIO

PROC = Path("/proc")


def start(argv: list[str], env: dict[str, str], cwd: str, log: BinaryIO) -> subprocess.Popen:
    """Start ``argv`` as the leader of a new session (its pid is its group id), stdout and stderr to ``log``."""
    return subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def signal_process(pid: int, sig: int) -> bool:
    """Send ``sig`` to process ``pid`` alone; False when it is gone."""
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to every process of group ``pgid``; False when the group is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's group: not ours to stop
        return False
    return True


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _state(pid) not in ("Z", "X", None) if PROC.is_dir() else True


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces and parentheses)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def _state(pid: int) -> str | None:
    fields = _stat(pid)
    return fields[0] if fields else None


def _job_of(pid: int) -> str | None:
    """The VIPR_JOB_ID in process ``pid``'s environment (every process of an attempt inherits it)."""
    try:
        environ = (PROC / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return None
    found = next((e for e in environ if e.startswith(b"VIPR_JOB_ID=")), None)
    return found.split(b"=", 1)[1].decode() if found else None


def kill_job(job_id: str, pgid: int | None) -> int:
    """SIGKILL every process group still running for job ``job_id`` (its worker is dead); how many there were.

    With /proc, found by the job id in their environment: also when the worker died before it
    recorded the pid, and never a group whose id was reused. Without, the recorded group ``pgid``."""
    if not PROC.is_dir():
        return int(bool(pgid) and signal_group(pgid, signal.SIGKILL))
    groups = set()
    for entry in PROC.iterdir():
        if entry.name.isdigit() and _job_of(int(entry.name)) == job_id:
            fields = _stat(int(entry.name))
            if fields and fields[0] not in ("Z", "X"):
                groups.add(int(fields[2]))  # field 2: the process group
    groups.discard(os.getpgrp())  # never this process's own group (a worker started from inside a job)
    return sum(signal_group(group, signal.SIGKILL) for group in groups)


@contextlib.contextmanager
def stop_signals(handler):
    """SIGTERM and SIGINT call ``handler`` while the block runs (main thread only: elsewhere none is set)."""
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            break
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def total_memory() -> float:
    """This machine's RAM in bytes."""
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
