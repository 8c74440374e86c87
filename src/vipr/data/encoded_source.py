"""Build (once) and open the encoded store of an image folder, keyed like the raw store by its listing.

The folder layouts are those of ``vipr.data.sources`` (train/ with val/ or test/, class
folders, or loose unlabelled images); the key hashes every file's relative path, size and
mtime, so an unchanged folder reopens its entry at once and an edited one builds a new entry.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vipr.data import sources
from vipr.data.decode import CropDecoder
from vipr.data.encoded import INDEX_FIELDS, SHARD_BYTES, EncodedSplit, index_webdataset, open_encoded, publish, write_split
from vipr.data.shard_maps import ShardMaps
from vipr.data.store import StoreWriter, ensure_entry, source_key
from vipr.data.types import Dataset, ImageSplit
from vipr.engine.progress import side_bar
from vipr.errors import DataError
from vipr.fsutil import cache_root

ENCODED_VERSION = 1  # part of the key: bump when what is stored for a file changes


@dataclass
class EncodedDataset:
    """An image folder in the encoded store: splits of encoded bytes, class names, digest."""

    name: str
    train: EncodedSplit
    test: EncodedSplit | None
    classes: list[str]
    digest: str
    skipped: list[tuple[str, str]]
    store_dir: Path


def open_encoded_folder(src: str, *, cache_dir: str | os.PathLike | None = None, progress: bool = True,
                        shard_bytes: int = SHARD_BYTES, max_mapped_bytes: int | None = None) -> EncodedDataset:
    """The encoded store of image folder ``src``, built on first use (every file's bytes read once);
    reading keeps at most ``max_mapped_bytes`` of its shards mapped (None: no bound; ``ShardMaps``)."""
    root = Path(src).expanduser()
    if not root.is_dir():
        raise DataError(f"the encoded store takes an image folder; {src!r} is not one. {sources.LAYOUTS}")
    listed, listing_digest = sources.list_folder(root)
    key = source_key("encoded-folder", ENCODED_VERSION, shard_bytes, listing_digest)
    cache = cache_root(cache_dir)
    entry = ensure_entry(cache, key, lambda: StoreWriter(cache, key),
                         lambda writer: _build(writer, src, root, listed, shard_bytes, progress))
    meta, splits = open_encoded(entry, max_mapped_bytes)
    return EncodedDataset(name=str(src), train=splits["train"], test=splits.get("test"), classes=meta["classes"],
                          digest=meta["digest"], skipped=[tuple(item) for item in meta["skipped"]], store_dir=entry)


def _build(writer: StoreWriter, src: str, root: Path, listed: dict, shard_bytes: int, progress: bool) -> None:
    skipped, digests = [], {}
    for split, (_, files, labels) in listed.items():
        with side_bar(total=len(files), desc=f"encoding {split}", unit="img", leave=False, enabled=progress) as bar:
            kept, failures, digests[split] = write_split(writer, split, [f[0] for f in files], labels,
                                                         shard_bytes, bar)
        skipped += [(Path(os.path.relpath(path, root)).as_posix(), reason) for path, reason in failures]
        if kept == 0:
            raise DataError(f"no image in {root} ({split}) could be read; first failure: {failures[0]}")
    publish(writer, source=src, classes=listed["train"][0], skipped=skipped, digests=digests)


class DecodedImages:
    """A read-only (N, 3, S, S) uint8 array-like over an encoded split, rows decoded when read.

    A row is the image's centred square at S px, as the raw store holds it (``sources._decode_image``),
    so feature banks, neighbour fetches and evaluation read an encoded dataset unchanged; training
    crops come from the encoded loader instead (``vipr.data.encoded_loader``), cropped at decode.
    """

    ndim = 4
    dtype = np.dtype(np.uint8)

    def __init__(self, encoded: EncodedSplit, side: int, threads: int):
        self.encoded, self.side, self.decoder_threads = encoded, side, threads
        self.decoder = CropDecoder([side], threads)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return len(self.encoded), 3, self.side, self.side

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self[np.array([key])][0]
        rows = np.arange(len(self))[key] if isinstance(key, slice) else np.asarray(key, dtype=np.int64)
        if rows.ndim != 1:
            raise TypeError(f"an encoded split is read by an int, a slice or a 1-D index array, got {key!r}")
        index = self.encoded.index
        return self.decoder.centers([self.encoded.blob(int(i)) for i in rows], index["height"][rows],
                                    index["width"][rows])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)


def as_dataset(encoded: EncodedDataset, side: int, threads: int) -> Dataset:
    """``encoded`` as a vipr Dataset whose splits decode to ``side`` px when read (see DecodedImages)."""
    def split(part: EncodedSplit | None) -> ImageSplit | None:
        return None if part is None else ImageSplit(DecodedImages(part, side, threads), part.labels.copy())

    return Dataset(name=encoded.name, train=split(encoded.train), test=split(encoded.test), classes=encoded.classes,
                   digest=encoded.digest, skipped=encoded.skipped, store_dir=encoded.store_dir)


WDS_FORMAT = "vipr-webdataset-index/1"
WDS_SPLITS = {"train": ("train",), "test": ("test", "val")}  # shard name prefixes of each split


def is_webdataset_folder(root: Path) -> bool:
    """A folder whose only files are ``.tar`` shards (WebDataset's layout)."""
    if not root.is_dir():
        return False
    names = [p.name for p in root.iterdir() if not p.name.startswith(".")]
    return bool(names) and all(name.endswith(".tar") for name in names)


def open_webdataset_folder(src: str, *, cache_dir: str | os.PathLike | None = None,
                           max_mapped_bytes: int | None = None) -> EncodedDataset:
    """WebDataset shards written elsewhere, read in place: ``train-*.tar`` (and ``test-*`` or ``val-*``),
    or any ``*.tar`` as the train split. Labels from each key's ``.cls``; class names are the label
    numbers. The index (offsets, labels, sizes) is built once and cached, keyed by the shards' names,
    sizes and mtimes; the shards are never copied. ``max_mapped_bytes``: as ``open_encoded_folder``."""
    root = Path(src).expanduser()
    shards = sorted(root.glob("*.tar"))
    named = {split: [p for p in shards if p.name.startswith(prefixes)] for split, prefixes in WDS_SPLITS.items()}
    layout = named if named["train"] else {"train": shards, "test": []}
    listing = [[split, [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in paths]]
               for split, paths in layout.items()]
    key = source_key("webdataset", ENCODED_VERSION, str(root.resolve()), listing)
    cache = cache_root(cache_dir)
    entry = ensure_entry(cache, key, lambda: StoreWriter(cache, key), lambda w: _index_shards(w, src, layout))
    maps = ShardMaps(max_mapped_bytes)
    try:
        meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        splits = {}
        for split, count in meta["splits"].items():
            with np.load(entry / f"{split}_index.npz") as f:
                splits[split] = EncodedSplit(layout[split], {k: f[k] for k in INDEX_FIELDS}, maps)
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"the shard index {entry} is damaged ({e}); delete that folder to rebuild it") from None
    return EncodedDataset(name=str(src), train=splits["train"], test=splits.get("test"), classes=meta["classes"],
                          digest=meta["digest"], skipped=[], store_dir=entry)


def _index_shards(writer: StoreWriter, src: str, layout: dict[str, list[Path]]) -> None:
    indexed = {split: index_webdataset(paths) for split, paths in layout.items() if paths}
    labels = np.concatenate([part.labels for part in indexed.values()])
    if (labels < 0).any() and (labels >= 0).any():
        raise DataError(f"{src}: some keys have a .cls label and some do not; label all or none")
    classes = [str(c) for c in range(int(labels.max()) + 1)] if (labels >= 0).any() else []
    h = hashlib.sha256()
    for split, part in indexed.items():
        np.savez(writer.folder / f"{split}_index.npz", **part.index)
        writer.sizes[split] = len(part)
        h.update(split.encode() + b"".join(part.index[k].astype("<i8").tobytes() for k in INDEX_FIELDS))
    writer.publish({"format": WDS_FORMAT, "source": src, "classes": classes, "digest": h.hexdigest()[:16],
                    "splits": writer.sizes})
