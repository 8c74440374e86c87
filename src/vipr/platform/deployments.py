"""Deployments: each ``vipr serve`` of a registered model version, in the metadata database (vipr.platform.db).

    deployments   model name, version, host, port, machine (hostname), pid, started, stopped
                  (seconds since the epoch; stopped None while serving)

``serving(...)`` writes the row when the server starts and its stop time when it shuts down
(Ctrl-C, SIGTERM). A server killed outright leaves no stop time: a row whose process is gone
from this machine reads as stopped (``stale``); one on another machine reads as its row says.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import warnings

from sqlalchemy import Column, Float, Integer, String, Table, insert, select, update

from vipr.platform import datasets, db

DEPLOYMENTS = Table(
    "deployments", db.METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("host", String(255), nullable=False),
    Column("port", Integer, nullable=False),
    Column("machine", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started", Float, nullable=False),
    Column("stopped", Float, nullable=True),
)


def start(model: str, version: int | str, host: str, port: int) -> int:
    """Record a server of ``model/version`` listening on ``host:port`` from this process; its row id."""
    row = {"model": model, "version": int(version), "host": host, "port": int(port), "machine": socket.gethostname(),
           "pid": os.getpid(), "started": time.time(), "stopped": None}
    with db.engine_for(DEPLOYMENTS).begin() as conn:
        return conn.execute(insert(DEPLOYMENTS).values(**row)).inserted_primary_key[0]


def stop(row_id: int) -> None:
    """Record that the server of row ``row_id`` has shut down."""
    with db.engine_for(DEPLOYMENTS).begin() as conn:
        conn.execute(update(DEPLOYMENTS).where(DEPLOYMENTS.c.id == row_id).values(stopped=time.time()))


@contextlib.contextmanager
def serving(model: str, version: int | str | None, host: str, port: int):
    """Around a server's run: its row from start to shutdown. Not a registered version (a file): nothing.

    The database failing warns and serves anyway: a deployment record never stops a server."""
    row_id = None
    if version is not None:
        try:
            row_id = start(model, version, host, port)
        except Exception as err:  # noqa: BLE001  (an unreachable database: serve, unrecorded)
            warnings.warn(f"this deployment is not recorded ({type(err).__name__}: {str(err).splitlines()[0]})",
                          stacklevel=3)
    try:
        yield row_id
    finally:
        if row_id is not None:
            with contextlib.suppress(Exception):  # shutting down: the row stays "running", read as stale later
                stop(row_id)


def of_model(model: str, version: int | str) -> list[dict]:
    """The deployments of ``model/version``, newest first, each with its ``status`` (running | stopped) and
    ``stale`` (no stop time, but its process is gone from this machine: shown as stopped)."""
    if not datasets.available():
        return []
    with db.engine_for(DEPLOYMENTS).connect() as conn:
        rows = conn.execute(select(DEPLOYMENTS).where(DEPLOYMENTS.c.model == model,
                                                      DEPLOYMENTS.c.version == int(version))
                            .order_by(DEPLOYMENTS.c.started.desc())).all()
    return [_record(row) for row in rows]


def _record(row) -> dict:
    record = dict(row._mapping)
    stale = record["stopped"] is None and record["machine"] == socket.gethostname() and not _alive(record["pid"])
    status = "stopped" if record["stopped"] is not None or stale else "running"  # stale: killed, never shut down
    return {**record, "status": status, "stale": stale, "started": datasets.iso(record["started"]),
            "stopped": datasets.iso(record["stopped"])}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True
