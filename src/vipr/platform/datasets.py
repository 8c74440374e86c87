"""Dataset versions: immutable, numbered records (V1, V2, ...) of a source's decoded content, and their artifacts.

A version is keyed by the store's content digest (vipr.data.store, vipr.data.dense.store):
registering data whose digest a version of that name already has returns that version; other
content gets the next number. The rows live in the metadata database (vipr.platform.db:
WORKSPACE/vipr.db, or $VIPR_DB_URL on a team setup):

    dataset_versions   name, version (1, 2, ... spelled V1, V2), digest, kind (classification | dense),
                       source as given, resolved source (absolute path, prefix and query kept),
                       store_size (px; None: the source's default), classes, counts per split,
                       skipped count and the store's list of skipped files, description, created
                       unique (name, version) and (name, digest)
    dataset_artifacts  name, version, kind ('label_split'), path, sha256, meta; unique (name, version, path)

Two registrations at once: the unique constraints fail one insert; that registration reads
again and either finds its content registered meanwhile or takes the next number.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

from sqlalchemy import (
    JSON,
    Column,
    Float,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError

from vipr.errors import DataError
from vipr.platform import db

KINDS = ("classification", "dense")
ARTIFACT_KINDS = ("label_split",)
INSERT_TRIES = 8  # concurrent registrations of one name: each lost race costs one more read and insert
RETRY_PAUSE_S = 0.05  # times the try number: SQLite refuses a write from a snapshot older than another's commit

VERSIONS = Table(
    "dataset_versions", db.METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False),
    Column("version", Integer, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("source", Text, nullable=False),
    Column("resolved", Text, nullable=False),
    Column("store_size", Integer, nullable=True),
    Column("classes", JSON, nullable=False),
    Column("counts", JSON, nullable=False),
    Column("skipped", Integer, nullable=False),
    Column("skipped_file", Text, nullable=True),
    Column("description", Text, nullable=False),
    Column("created", Float, nullable=False),  # seconds since the epoch
    UniqueConstraint("name", "version", name="uq_dataset_versions_name_version"),
    UniqueConstraint("name", "digest", name="uq_dataset_versions_name_digest"),
)

ARTIFACTS = Table(
    "dataset_artifacts", db.METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False),
    Column("version", Integer, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("path", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("meta", JSON, nullable=False),
    Column("created", Float, nullable=False),
    UniqueConstraint("name", "version", "path", name="uq_dataset_artifacts_name_version_path"),
)


class DatasetError(DataError):
    """A dataset name or version is unknown or not allowed, or the data changed since it was registered."""


@dataclass(frozen=True)
class DatasetVersion:
    """One registered version; ``ref`` (``NAME:V2``) is how commands and cards name it."""

    name: str
    version: int
    digest: str
    kind: str
    source: str
    resolved: str
    store_size: int | None
    classes: list
    counts: dict
    skipped: int
    skipped_file: str | None
    description: str
    created: float

    @property
    def ref(self) -> str:
        return f"{self.name}:V{self.version}"

    def to_dict(self) -> dict:
        return {"ref": self.ref, **asdict(self), "created": iso(self.created)}


def available() -> bool:
    """Whether there is a metadata database to read: $VIPR_DB_URL, or the workspace's file exists.

    Look-ups answer "nothing registered" without it, so opening a path never creates WORKSPACE/vipr.db."""
    return bool(os.environ.get(db.ENV_DB_URL, "").strip()) or (db.home() / db.DB_NAME).is_file()


def where() -> str:
    """The database, for messages: the workspace's file, or $VIPR_DB_URL (no password)."""
    url = os.environ.get(db.ENV_DB_URL, "").strip()
    return f"{db.ENV_DB_URL} ({db._redacted(url)})" if url else f"workspace {db.home()}"


def add_version(fields: dict) -> tuple[DatasetVersion, bool]:
    """Insert ``fields`` (every column but id, version, created) as the next version of its name.

    (the version, True) when new; (the existing version, False) when the name already holds this digest."""
    engine = db.engine_for(VERSIONS, ARTIFACTS)
    for attempt in range(INSERT_TRIES):
        try:
            with engine.begin() as conn:
                found = conn.execute(select(VERSIONS).where(VERSIONS.c.name == fields["name"],
                                                            VERSIONS.c.digest == fields["digest"])).first()
                if found is not None:
                    return _version(found), False
                latest = conn.execute(select(func.max(VERSIONS.c.version))
                                      .where(VERSIONS.c.name == fields["name"])).scalar()
                row = {**fields, "version": (latest or 0) + 1, "created": time.time()}
                conn.execute(insert(VERSIONS).values(**row))
            return DatasetVersion(**row), True
        except (IntegrityError, OperationalError) as err:  # another registration wrote first: read again
            _lost_race(err, attempt)
    raise DatasetError(f"dataset {fields['name']!r}: {INSERT_TRIES} registrations raced for the next version; "
                       f"run `vipr data register` again")


def versions(name: str) -> list[DatasetVersion]:
    """Every version of ``name``, oldest first (none when the database does not exist)."""
    if not available():
        return []
    with db.engine_for(VERSIONS, ARTIFACTS).connect() as conn:
        rows = conn.execute(select(VERSIONS).where(VERSIONS.c.name == name).order_by(VERSIONS.c.version)).all()
    return [_version(row) for row in rows]


def all_versions() -> list[DatasetVersion]:
    """Every version of every name, by name then version."""
    if not available():
        return []
    with db.engine_for(VERSIONS, ARTIFACTS).connect() as conn:
        rows = conn.execute(select(VERSIONS).order_by(VERSIONS.c.name, VERSIONS.c.version)).all()
    return [_version(row) for row in rows]


def names() -> list[str]:
    return sorted({v.name for v in all_versions()})


def with_digest(digest: str) -> list[DatasetVersion]:
    """The versions (of any name) holding this content digest, oldest first."""
    if not available() or not digest:
        return []
    with db.engine_for(VERSIONS, ARTIFACTS).connect() as conn:
        rows = conn.execute(select(VERSIONS).where(VERSIONS.c.digest == digest).order_by(VERSIONS.c.created)).all()
    return [_version(row) for row in rows]


def add_artifact(version: DatasetVersion, kind: str, path: str, sha256: str, meta: dict) -> dict:
    """Record the file ``path`` (absolute) as an artifact of ``version``; the same path again updates its
    sha256 and meta (the file was written anew)."""
    if kind not in ARTIFACT_KINDS:
        raise ValueError(f"artifact kind {kind!r} is not one of {ARTIFACT_KINDS}")
    row = {"name": version.name, "version": version.version, "kind": kind, "path": path, "sha256": sha256,
           "meta": meta, "created": time.time()}
    engine = db.engine_for(VERSIONS, ARTIFACTS)
    key = (ARTIFACTS.c.name == version.name, ARTIFACTS.c.version == version.version, ARTIFACTS.c.path == path)
    for attempt in range(INSERT_TRIES):
        try:
            with engine.begin() as conn:
                if conn.execute(update(ARTIFACTS).where(*key).values(**row)).rowcount == 0:
                    conn.execute(insert(ARTIFACTS).values(**row))
            return {**row, "created": iso(row["created"])}
        except (IntegrityError, OperationalError) as err:  # the same path recorded at the same moment: update it
            _lost_race(err, attempt)
    raise DatasetError(f"could not record the artifact {path} of {version.ref}; run the command again")


def artifacts(version: DatasetVersion) -> list[dict]:
    """The artifacts of ``version``, oldest first, as plain records."""
    if not available():
        return []
    with db.engine_for(VERSIONS, ARTIFACTS).connect() as conn:
        rows = conn.execute(select(ARTIFACTS).where(ARTIFACTS.c.name == version.name,
                                                    ARTIFACTS.c.version == version.version)
                            .order_by(ARTIFACTS.c.created)).all()
    return [{"kind": r.kind, "path": r.path, "sha256": r.sha256, "meta": r.meta, "created": iso(r.created)}
            for r in rows]


def _lost_race(err: Exception, attempt: int) -> None:
    """Return (to try again) after a unique-key clash or SQLite's "database is locked"; re-raise anything else."""
    if isinstance(err, OperationalError) and not any(word in str(err).lower() for word in ("locked", "busy")):
        raise db.DatabaseError(f"cannot write the metadata database ({where()}): {str(err).splitlines()[0]}; "
                               f"check {db.ENV_DB_URL} (or {db.ENV_HOME}) and that the server is up") from None
    time.sleep(RETRY_PAUSE_S * (attempt + 1))


def _version(row) -> DatasetVersion:
    values = row._mapping
    return DatasetVersion(**{name: values[name] for name in DatasetVersion.__dataclass_fields__})


def iso(seconds: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(seconds)) if seconds else None
