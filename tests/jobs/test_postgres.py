"""The same job store on a real PostgreSQL server (VIPR_DB_URL=postgresql+psycopg://...), started here.

The server is this machine's (pg_ctl and initdb on PATH, or Debian's /usr/lib/postgresql/N/bin),
in a temporary folder, on a free port, its unix socket there too, trust authentication. PostgreSQL
refuses to run as root, so under root it runs as the ``postgres`` user (else ``nobody``). Skipped,
saying why, where no server binaries are installed (CI installs Debian's postgresql: .ci/run).
"""

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from vipr.jobs import process, store


def server_binaries() -> Path | None:
    """The folder holding pg_ctl and initdb, or None."""
    found = [shutil.which("pg_ctl"), *sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)]
    for pg_ctl in filter(None, found):
        folder = Path(pg_ctl).resolve().parent
        if (folder / "initdb").is_file():
            return folder
    return None


def as_user(argv: list[str]) -> list[str]:
    """``argv`` run as a user PostgreSQL accepts: this one, or under root ``postgres`` / ``nobody``."""
    if os.geteuid() != 0:
        return argv
    user = next(u for u in ("postgres", "nobody") if _user_exists(u))
    return ["runuser", "-u", user, "--", *argv]


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A running server for this module; yields its base URL (database name to append)."""
    binaries = server_binaries()
    if binaries is None:
        pytest.skip("no PostgreSQL server binaries (pg_ctl, initdb) on this machine: apt-get install postgresql")
    if os.geteuid() == 0 and not shutil.which("runuser"):
        pytest.skip("running as root, and no runuser to start PostgreSQL as another user")
    folder = Path(tempfile.mkdtemp(prefix="vipr-pg-"))
    folder.chmod(0o777)  # the server's user owns its data folder and writes its socket here
    data, port = folder / "data", free_port()
    subprocess.run(as_user([str(binaries / "initdb"), "-D", str(data), "-U", "vipr", "-A", "trust", "--no-sync",
                            "-E", "UTF8"]), check=True, capture_output=True)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
    subprocess.run(as_user([str(binaries / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w",
                            "-o", options, "start"]), check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://vipr@127.0.0.1:{port}"
    finally:
        subprocess.run(as_user([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg(postgres, workspace, monkeypatch, request):
    """A fresh database on the server for one test, as VIPR_DB_URL (workers started from here inherit it)."""
    import psycopg

    name = f"t_{abs(hash(request.node.name)) % 10**10}"
    with psycopg.connect(f"{postgres.replace('+psycopg', '')}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    monkeypatch.setenv("VIPR_DB_URL", f"{postgres}/{name}")
    return f"{postgres}/{name}"


def test_the_job_store_works_the_same_on_postgresql(pg, kit):
    assert store.engine().dialect.name == "postgresql"
    job = kit.submit("pg-job", inputs=[{"kind": "dataset", "ref": "builtin:shapes"}], priority=4)
    row = store.get_job("pg-job")
    assert row["datasets"] == ["builtin:shapes"] and row["spec"]["priority"] == 4 and row["cancel_requested"] is False
    assert store.claim(job["id"], "w1", "h")["attempts"] == 1 and store.claim(job["id"], "w2", "h") is None
    assert store.request_cancel(row) == "running" and store.cancel_flags([job["id"]]) == {job["id"]}
    assert store.finish(job["id"], "w1", "cancelled", reason="cancelled", exit_code=-signal.SIGTERM)
    assert store.retry(row) and store.get_job(job["id"])["state"] == "queued"


def test_processes_racing_on_postgresql_never_take_the_same_job(pg, kit):
    kit.race_for_claims(jobs=24, racers=3)


def test_a_worker_killed_9_on_postgresql_is_recovered_and_its_job_completes_once(pg, kit, worker_process):
    saved = kit.submit("pg-saved", seconds=60, env={"FAKE_LATER_SECONDS": "0"})
    kit.submit("pg-fails", env={"FAKE_EXIT": "4"})
    worker = worker_process(cpus=2)
    kit.wait_until(lambda: kit.attempts(saved), what="first attempt")
    kit.wait_for("pg-fails", "failed")
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    orphan = kit.attempts(saved)[0]["pid"]
    kit.run_worker()
    assert not process.pid_alive(orphan)
    done = store.get_job("pg-saved")
    assert (done["state"], done["attempts"], done["reason"]) == ("succeeded", 2, "evicted")
    assert [a["event"] for a in kit.attempts(saved)] == ["start", "start", "end"]
    assert store.get_job("pg-fails")["exit_code"] == 4
