"""Dataset references: ``NAME``, ``NAME:V2``, ``NAME:2``, ``NAME:latest``, resolved against the registered versions.

Wherever a command takes ``--data SRC`` (and a job spec a dataset input), a registered reference
is one more form of SRC. It is read as one only when it is none of the older forms: not
``builtin:...``, not a prefixed detection / segmentation source (``coco:ROOT``, ``voc:ROOT``,
``masks:ROOT``), not an existing file or folder. Then ``NAME:VERSION`` must name a registered
version (else an error listing the versions there are), and a bare ``NAME`` is a reference only
when that name is registered (its latest version); otherwise it stays a path that is not there.
A reference always resolves to one version, spelled ``NAME:Vn`` in cards, tags and run folders.
"""

from __future__ import annotations

import re
from pathlib import Path

from vipr.platform.datasets import DatasetError, DatasetVersion

RESERVED = ("builtin", "coco", "voc", "masks")  # SRC prefixes (vipr.data.sources, vipr.data.dense.sources)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
REF_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,99})(?::(?P<version>[Vv]?\d+|latest))?$")
PINNED_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,99}):V(?P<number>\d+)$")  # the canonical NAME:Vn


def check_name(name: str) -> str:
    """``name`` when it may name a dataset; a DatasetError saying what is allowed otherwise."""
    if not NAME_RE.match(name or "") or name.lower() in RESERVED:
        raise DatasetError(f"dataset name {name!r} is not allowed: use letters, digits, '.', '_' and '-' "
                           f"(first a letter or digit, at most 100), and none of {', '.join(RESERVED)} "
                           f"(they prefix data sources), e.g. --name flowers")
    return name


def parse(src: str) -> tuple[str, int | None] | None:
    """(name, version number or None for the latest) when ``src`` reads as a reference, else None.

    Examples:
        >>> parse("flowers:V2"), parse("flowers:2"), parse("flowers:latest"), parse("coco:/data/coco")
        (('flowers', 2), ('flowers', 2), ('flowers', None), None)
    """
    src = str(src)
    if src.startswith(tuple(f"{p}:" for p in RESERVED)) or Path(src).expanduser().exists():
        return None
    match = REF_RE.match(src)
    if not match:
        return None
    spec = match["version"]
    return match["name"], None if spec in (None, "latest") else int(spec.lstrip("Vv"))


def pinned(ref: str | None) -> tuple[str, int] | None:
    """(name, number) of a canonical ``NAME:Vn`` (what a card's ``dataset`` holds when opened so), else None."""
    match = PINNED_RE.match(ref or "")
    return (match["name"], int(match["number"])) if match else None


def lookup(src: str) -> DatasetVersion | None:
    """The version ``src`` names; None when it is another form of SRC (or a bare NAME not registered).

    A DatasetError when it pins a version (``NAME:V2``, ``NAME:latest``) that is not registered."""
    parsed = parse(src)
    if parsed is None:
        return None
    name, number = parsed
    from vipr.platform import datasets

    if not datasets.available() and ":" not in src:
        return None  # no database: a bare NAME is a path that is not there (open_dataset says so)
    found = datasets.versions(name)
    if not found:
        if ":" not in src:
            return None
        raise DatasetError(f"data source {src!r}: no such file or folder, and no dataset {name!r} is registered "
                           f"in {datasets.where()} ({_registered()}); register it: vipr data register SRC "
                           f"--name {name}, or fix the path")
    return _pick(name, number, found)


def get(ref: str) -> DatasetVersion:
    """The version ``NAME[:VERSION]`` names (for ``vipr data show`` and ``--register``); a DatasetError otherwise."""
    from vipr.platform import datasets

    match = REF_RE.match(ref)
    if not match or match["name"].lower() in RESERVED:
        raise DatasetError(f"{ref!r} is not a dataset reference; use NAME, NAME:V2 or NAME:latest (vipr data list)")
    name, spec = match["name"], match["version"]
    found = datasets.versions(name)
    if not found:
        raise DatasetError(f"no dataset {name!r} is registered in {datasets.where()} ({_registered()}); "
                           f"register it: vipr data register SRC --name {name}")
    return _pick(name, None if spec in (None, "latest") else int(spec.lstrip("Vv")), found)


def _pick(name: str, number: int | None, found: list[DatasetVersion]) -> DatasetVersion:
    if number is None:
        return found[-1]
    for version in found:
        if version.version == number:
            return version
    raise DatasetError(f"dataset {name!r} has no version V{number}; its versions: "
                       f"{', '.join(f'V{v.version}' for v in found)} (vipr data show {name})")


def _registered() -> str:
    from vipr.platform import datasets

    names = datasets.names()
    return "registered: " + (", ".join(names[:20]) + (" ..." if len(names) > 20 else "") if names else "none yet")


def source_path(resolved: str) -> Path | None:
    """The file or folder a resolved source reads (prefix and query dropped); None for a built-in."""
    if resolved.startswith("builtin:"):
        return None
    prefix, colon, rest = resolved.partition(":")
    if colon and prefix in RESERVED:
        return Path(rest.partition("?")[0])
    return Path(resolved)


def resolve_source(src: str) -> str:
    """``src`` with its path made absolute (``coco:./x?a=b`` -> ``coco:/abs/x?a=b``); built-ins as they are."""
    if src.startswith("builtin:"):
        return src
    prefix, colon, rest = src.partition(":")
    if colon and prefix in RESERVED:
        path, question, query = rest.partition("?")
        return f"{prefix}:{Path(path).expanduser().resolve()}{question}{query}"
    return str(Path(src).expanduser().resolve())


def check_unchanged(version: DatasetVersion, digest: str) -> None:
    """A DatasetError when the data opened for ``version`` is not what was registered."""
    if digest != version.digest:
        raise DatasetError(f"dataset {version.ref}: the data at {version.resolved} changed since it was registered "
                           f"(digest now {digest}, registered {version.digest}); register it again for a new "
                           f"version: vipr data register {version.resolved} --name {version.name}")


def check_source_exists(version: DatasetVersion) -> None:
    """A DatasetError when the registered source's file or folder is gone."""
    path = source_path(version.resolved)
    if path is not None and not path.exists():
        raise DatasetError(f"dataset {version.ref}: its source {path} no longer exists; restore it there, or "
                           f"register the data where it is now: vipr data register NEW_PATH --name {version.name}")
