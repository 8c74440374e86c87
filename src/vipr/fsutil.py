"""Files: the one atomic write, the one streaming file hash, and the cache root.

Every file vipr publishes (checkpoints, metrics.json, genotypes, cache entries, ONNX
exports) is written to a temporary sibling, flushed to disk, then renamed over its name:
readers see the old file or the new one, never a torn write, and a crash leaves at most a
``.NAME.*.tmp`` file that nothing reads (safe to delete).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

_HASH_BLOCK = 1 << 20  # bytes read at a time: a checkpoint of any size hashes in bounded memory


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder of every vipr cache: data stores, downloaded models, ONNX exports.

    ``cache_dir`` if given, else ``$VIPR_CACHE``, else ``~/.cache/vipr``.
    """
    root = cache_dir or os.environ.get("VIPR_CACHE") or Path.home() / ".cache" / "vipr"
    return Path(root).expanduser()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, tmp: str | os.PathLike | None = None) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; renamed over ``path`` when the block succeeds.

    The temporary file is in ``path``'s folder (a rename across file systems is not atomic) and
    is removed if the block raises. ``tmp`` names it when a writer derives side files from it
    (an ONNX export writes ``TMP`` and ``TMP.json``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tmp) if tmp is not None else path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(f)`` on a binary file that replaces ``path`` only once complete."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, streamed: a checkpoint's identity for lineage and caches."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_HASH_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    """Flush ``path``'s data to disk before the rename publishes it (else a crash may publish zeros)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
