"""The platform's metadata database (SQLAlchemy): the job table and the dataset versions.

Local, the default: ``WORKSPACE/vipr.db``, a SQLite file (WAL journal, so readers never block
the writer; a 30 s busy timeout, so two workers writing at once wait instead of failing).
Team: ``$VIPR_DB_URL``, e.g. ``postgresql+psycopg://vipr:secret@db:5432/vipr`` (the driver
comes with ``pip install 'vipr[postgres]'``). Tables live on the one ``METADATA``; a module
defines its table there and calls ``engine_for(table)`` to get an engine with it created.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from sqlalchemy import MetaData, Table, create_engine, event, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from vipr.errors import ViprError
from vipr.platform.workspace import DEFAULT_HOME, ENV_HOME

ENV_DB_URL = "VIPR_DB_URL"
DB_NAME = "vipr.db"
SQLITE_BUSY_TIMEOUT_S = 30  # a writer waits this long for another process's write lock
METADATA = MetaData()


class DatabaseError(ViprError):
    """The metadata database cannot be opened or written."""


def home() -> Path:
    """The local workspace folder (``$VIPR_HOME`` or ``./.vipr``), also when a team server tracks runs."""
    return Path(os.environ.get(ENV_HOME) or DEFAULT_HOME).expanduser().resolve()


def database_url() -> str:
    """``$VIPR_DB_URL``, else the workspace's SQLite file."""
    return os.environ.get(ENV_DB_URL, "").strip() or f"sqlite:///{home() / DB_NAME}"


def engine_for(*tables: Table) -> Engine:
    """The engine of ``database_url()`` with ``tables`` created (idempotent; once per process and URL)."""
    url = database_url()
    engine = _engine(url)
    for table in tables:
        _create(url, table.name, table)
    return engine


@functools.lru_cache(maxsize=8)
def _engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        folder = Path(url[len("sqlite:///"):]).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DatabaseError(f"cannot create the workspace folder {folder}: {err}; "
                                f"set {ENV_HOME} to a writable folder") from None
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    try:
        return create_engine(url, pool_pre_ping=True)
    except (SQLAlchemyError, ImportError, ValueError) as err:
        raise DatabaseError(f"{ENV_DB_URL}={_redacted(url)} cannot be used: {err}; give a SQLAlchemy URL such as "
                            "postgresql+psycopg://USER:PASSWORD@HOST:5432/DB (pip install 'vipr[postgres]')") from None


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process kill, fast commits
    cursor.close()


@functools.lru_cache(maxsize=64)
def _create(url: str, _name: str, table: Table) -> None:
    try:
        table.create(_engine(url), checkfirst=True)
    except SQLAlchemyError as err:
        if _has_table(url, table.name):  # another process created it between the check and the create
            return
        raise DatabaseError(f"cannot open the metadata database {_redacted(url)}: {err.__class__.__name__}: "
                            f"{str(err).splitlines()[0]}; check {ENV_DB_URL} (or {ENV_HOME}) and that the "
                            "server is up") from None


def _has_table(url: str, name: str) -> bool:
    try:
        return inspect(_engine(url)).has_table(name)
    except SQLAlchemyError:
        return False


def _redacted(url: str) -> str:
    """The URL with its password replaced, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001  (an unparsable URL is shown as given, minus nothing secret to parse)
        return "<unparsable URL>"
