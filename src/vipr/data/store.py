"""The decoded uint8 store: every source is decoded once into ``.npy`` files, then memory-mapped.

One cache entry is a folder ``<cache root>/<source key>/`` holding::

    train_images.npy  (N, 3, H, W) uint8      train_labels.npy  (N,) int64
    test_images.npy   (M, 3, H, W) uint8      test_labels.npy   (M,) int64   (absent: no test split)
    meta.json         format, source, classes, digest, skipped files, store_size, split sizes
    skipped.txt       ``path<TAB>reason``, one unreadable file a line (only when some were skipped)

Reopening maps the image arrays read-only (``np.load(mmap_mode="r")``), so a dataset larger than
RAM works and a warm open costs a few file opens. An entry is written into a ``.tmp-*`` sibling
folder and renamed into place only when complete: a crash mid-write leaves a temporary folder
that is never read (safe to delete), never a half-written entry.

The cache root is ``cache_dir`` if given, else ``$VIPR_CACHE``, else ``~/.cache/vipr``
(``vipr.fsutil.cache_root``, shared with the model and ONNX caches).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vipr.data.types import Dataset, ImageSplit
from vipr.errors import DataError
from vipr.fsutil import atomic_path, atomic_write_text

STORE_FORMAT = "vipr-store/1"
SPLITS = ("train", "test")
_CHUNK_BYTES = 64 << 20  # digest/copy granularity: bounded RAM on stores larger than memory


def source_key(kind: str, *parts: Any) -> str:
    """Cache folder name for a source: its kind plus a sha256 of everything that defines its content."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return f"{kind}-{hashlib.sha256(blob).hexdigest()[:32]}"


class StoreWriter:
    """Builds one cache entry in a temporary folder; ``commit`` publishes it with one rename.

    Used as a context manager: leaving it without ``commit`` (an error, Ctrl-C) deletes the
    temporary folder, so nothing half-written is ever found under the entry's name.
    """

    def __init__(self, root: Path, key: str):
        self.final = root / key
        self.folder = root / f".tmp-{key}-{os.getpid()}-{secrets.token_hex(4)}"
        self.folder.mkdir(parents=True)
        self.sizes: dict[str, int] = {}

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)  # no-op after a successful commit

    def allocate(self, split: str, n: int, height: int, width: int) -> np.ndarray:
        """A writable (n, 3, height, width) uint8 memmap for ``split``, filled by the caller row by row."""
        path = self.folder / f"{split}_images.npy"
        return np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 3, height, width))

    def finish_split(self, split: str, images: np.ndarray, labels: np.ndarray) -> None:
        """Flush ``split``; its first ``len(labels)`` rows are valid (fewer than allocated if files were skipped)."""
        images.flush()
        count = len(labels)
        if count < len(images):
            _shrink_npy(self.folder / f"{split}_images.npy", count)
        np.save(self.folder / f"{split}_labels.npy", np.asarray(labels, dtype=np.int64))
        self.sizes[split] = count

    def commit(self, *, source: str, classes: list[str], skipped: list[tuple[str, str]],
               store_size: int | None) -> None:
        """Compute the digest, write meta.json, and rename the folder into place."""
        meta = {
            "format": STORE_FORMAT, "source": source, "classes": list(classes),
            "digest": _digest(self.folder, classes), "splits": self.sizes, "store_size": store_size,
            "skipped": [list(item) for item in skipped], "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if skipped:
            atomic_write_text(self.folder / "skipped.txt", "".join(f"{path}\t{reason}\n" for path, reason in skipped))
        self.publish(meta)

    def publish(self, meta: dict) -> None:
        """Flush every file, write ``meta.json`` (its presence marks the entry complete), rename into place."""
        for path in self.folder.iterdir():  # data must be on disk before the rename makes it visible
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        atomic_write_text(self.folder / "meta.json", json.dumps(meta, indent=1))
        try:
            os.rename(self.folder, self.final)
        except OSError:
            if not (self.final / "meta.json").is_file():  # another process won the race: use its entry
                raise


def load_or_build(root: Path, key: str, name: str, build: Callable[[StoreWriter], dict],
                  store_size: int | None) -> Dataset:
    """Open the entry ``root/key``, building it first with ``build(writer)`` if it is not cached.

    ``build`` fills the writer's splits and returns ``{"classes": [...], "skipped": [...]}``.
    """
    entry = ensure_entry(root, key, lambda: StoreWriter(root, key),
                         lambda writer: writer.commit(source=name, store_size=store_size, **build(writer)))
    return open_entry(entry, name)


def ensure_entry(root: Path, key: str, make_writer: Callable[[], StoreWriter],
                 fill: Callable[[StoreWriter], None]) -> Path:
    """The cache entry ``root/key``; unless it is complete (its meta.json), ``fill(make_writer())`` builds it
    (the writer, a context manager, removes a half-built folder on error)."""
    entry = root / key
    if not (entry / "meta.json").is_file():
        try:
            root.mkdir(parents=True, exist_ok=True)
            writer = make_writer()
        except OSError as e:
            raise DataError(f"cannot write the data cache folder {root} ({e}); set VIPR_CACHE "
                            f"or pass cache_dir to a writable folder") from None
        with writer:
            fill(writer)
    return entry


def open_entry(entry: Path, name: str) -> Dataset:
    """Reopen a finished cache entry: images memory-mapped read-only, labels in RAM."""
    try:
        meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != STORE_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {STORE_FORMAT!r}")
        splits = {}
        for split, count in meta["splits"].items():
            images = np.load(entry / f"{split}_images.npy", mmap_mode="r")
            labels = np.load(entry / f"{split}_labels.npy").astype(np.int64, copy=False)
            if len(images) != count or len(labels) != count:
                raise ValueError(f"{split} holds {len(images)} images, {len(labels)} labels, meta says {count}")
            splits[split] = ImageSplit(images, labels)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"the data cache entry {entry} is damaged ({e}); delete that folder and "
                        f"open the dataset again to rebuild it") from None
    return Dataset(name=name, train=splits["train"], test=splits.get("test"), classes=meta["classes"],
                   digest=meta["digest"], skipped=[tuple(item) for item in meta["skipped"]], store_dir=entry)


def _digest(folder: Path, classes: list[str]) -> str:
    """sha256 over each split's shape, image bytes and labels, then the class names (hex, 16 chars)."""
    h = hashlib.sha256()
    for split in SPLITS:
        path = folder / f"{split}_images.npy"
        if not path.exists():
            h.update(f"{split}:none;".encode())
            continue
        images = np.load(path, mmap_mode="r")
        h.update(f"{split}:{images.shape};".encode())
        rows = max(1, _CHUNK_BYTES // max(1, images[0].nbytes if len(images) else 1))
        for start in range(0, len(images), rows):  # chunked so the store never has to fit in RAM
            h.update(memoryview(np.ascontiguousarray(images[start:start + rows])))
        h.update(np.load(folder / f"{split}_labels.npy").astype("<i8").tobytes())
    h.update(json.dumps(list(classes)).encode())
    return h.hexdigest()[:16]


def _shrink_npy(path: Path, count: int) -> None:
    """Cut an (N, ...) ``.npy`` to its first ``count`` rows in place (rows are written compactly).

    numpy pads the header so the first axis can change without moving the data; if a numpy
    without that padding gives a different header length, copy the rows to a new file instead.
    """
    with open(path, "r+b") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
        header = io.BytesIO()
        new_shape = (count, *shape[1:])
        np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                      "fortran_order": fortran, "shape": new_shape})
        if len(header.getvalue()) == offset:
            f.seek(0)
            f.write(header.getvalue())
            f.truncate(offset + count * int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)
            return
    old = np.load(path, mmap_mode="r")
    with atomic_path(path) as tmp:
        new = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=new_shape)
        rows = max(1, _CHUNK_BYTES // max(1, old[0].nbytes))
        for start in range(0, count, rows):
            new[start:start + rows] = old[start:min(start + rows, count)]
        new.flush()
        del old, new  # closes both maps before the rename
