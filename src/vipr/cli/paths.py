"""Checks on the paths a command will write, made before the work so a result is never lost to them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from vipr.errors import ViprError


def check_out_dir(path: str | os.PathLike, flag: str = "--out", label: str | None = None) -> None:
    """Raise ViprError unless ``path`` is, or can be created as, a folder this process can write into.

    Tried for real (create the folder, write a temporary file, remove both): permission bits
    do not tell the whole story (root, read-only mounts, ACLs)."""
    path = Path(path)
    label = label or f"{flag} {path}"
    if path.exists() and not path.is_dir():
        raise ViprError(f"{label} is a file, not a folder; pass a folder path (it is created if missing)")
    blocker = _file_above(path)
    if blocker is not None:
        raise ViprError(f"{label} cannot be created: {blocker} is a file, not a folder; pick another path")
    created = _missing_parents(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ViprError(f"{label} is not writable ({err.strerror}); pick a folder you can write to, "
                        f"or fix its permissions") from None
    finally:
        for folder in created:  # leave no trace of the probe
            try:
                folder.rmdir()
            except OSError:
                break


def check_out_file(path: str | os.PathLike, flag: str = "--out") -> None:
    """Raise ViprError unless a file can be written at ``path`` (its folder is writable; it is no folder)."""
    path = Path(path)
    if path.is_dir():
        raise ViprError(f"{flag} {path} is a folder; pass a file path, e.g. {path / 'out'}")
    blocker = _file_above(path)
    if blocker is not None:
        raise ViprError(f"{flag} {path} cannot be created: {blocker} is a file, not a folder; pick another path")
    if path.exists() and not os.access(path, os.W_OK):
        raise ViprError(f"{flag} {path} exists and is not writable; pick another file or fix its permissions")
    check_out_dir(path.parent, flag, label=f"the folder {path.parent} of {flag} {path}")


def _file_above(path: Path) -> Path | None:
    """The first existing ancestor of ``path`` that is not a folder, if any."""
    for parent in path.absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _missing_parents(path: Path) -> list[Path]:
    """The folders ``mkdir(parents=True)`` would create for ``path``, deepest first."""
    missing = []
    for folder in [path, *path.absolute().parents]:
        if folder.exists():
            break
        missing.append(folder)
    return missing
