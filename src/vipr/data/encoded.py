"""The encoded store: images kept as encoded bytes in tar shards, with an index for random access.

The raw store (store.py) costs H x W x 3 bytes an image: 196 KB at 256 px, 250 GB for
ImageNet-1k. This one keeps what the files hold: a JPEG source file byte for byte (no
generation loss, no re-encode cost), any other format (PNG, BMP, WebP, TIFF, GIF) decoded to
RGB and re-encoded once as JPEG at ``QUALITY`` (PIL's default 4:2:0 chroma). One entry is a
folder ``<cache root>/<key>/``::

    train-000000.tar ...  WebDataset-compatible shards: members KEY.jpg (bytes) and KEY.cls (label, text)
    train_index.npz       per image: shard, offset and size of its bytes in the shard, label, height, width
    test-000000.tar ...   test_index.npz    (absent: no test split)
    meta.json             format, source, classes, digest, splits, skipped files, quality

A shard is closed once it holds ``shard_bytes`` (default 256 MiB), so shards stream at disk
speed and split evenly across ranks. Shards written elsewhere in the WebDataset layout (an
image member and an optional ``.cls`` per key) are indexed in place by ``index_webdataset``.
Built like the raw store: into a ``.tmp-*`` folder renamed into place when complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from vipr.data.shard_maps import ShardMaps
from vipr.data.store import StoreWriter
from vipr.errors import DataError

ENCODED_FORMAT = "vipr-encoded/1"
QUALITY = 90  # JPEG quality of re-encoded non-JPEG sources
SHARD_BYTES = 256 << 20  # a shard is closed past this size
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")  # WebDataset image members read by index_webdataset
_JPEG_MAGIC = b"\xff\xd8\xff"
INDEX_FIELDS = ("shard", "offset", "size", "label", "height", "width")


@dataclass
class EncodedSplit:
    """One split of the encoded store: index arrays plus read-only maps of its shards (``maps``: a bound
    on the bytes mapped at once, shared by the splits of one store)."""

    shards: list[Path]
    index: dict[str, np.ndarray]  # INDEX_FIELDS -> (N,) arrays
    maps: ShardMaps = field(default_factory=ShardMaps, repr=False)

    def __len__(self) -> int:
        return len(self.index["size"])

    @property
    def labels(self) -> np.ndarray:
        return self.index["label"]

    def sizes(self, i: int) -> tuple[int, int]:
        """(height, width) of image ``i`` in pixels, as stored (no decode)."""
        return int(self.index["height"][i]), int(self.index["width"][i])

    def blob(self, i: int) -> bytes:
        """The encoded bytes of image ``i`` (thread-safe: decoding threads share the maps)."""
        shard, offset, size = (int(self.index[k][i]) for k in ("shard", "offset", "size"))
        return self.maps.read(self.shards[shard], offset, size)


class ShardWriter:
    """Appends (key, bytes, label) to ``PREFIX-NNNNNN.tar`` shards and records each image's index row."""

    def __init__(self, folder: Path, prefix: str, shard_bytes: int = SHARD_BYTES):
        self.folder, self.prefix, self.shard_bytes = folder, prefix, shard_bytes
        self.rows: dict[str, list[int]] = {k: [] for k in INDEX_FIELDS}
        self.tar: tarfile.TarFile | None = None
        self.shards = 0
        self.digest = hashlib.sha256()

    def add(self, data: bytes, label: int, height: int, width: int) -> None:
        if self.tar is None or self.tar.offset >= self.shard_bytes:
            self._next_shard()
        key = f"{len(self.rows['size']):09d}"
        offset = self._member(f"{key}.jpg", data)
        self._member(f"{key}.cls", str(label).encode())
        for name, value in zip(INDEX_FIELDS, (self.shards - 1, offset, len(data), label, height, width)):
            self.rows[name].append(value)
        self.digest.update(hashlib.sha256(data).digest() + label.to_bytes(8, "little", signed=True))

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
        index = {k: np.asarray(v, dtype=np.int64) for k, v in self.rows.items()}
        np.savez(self.folder / f"{self.prefix}_index.npz", **index)

    def _next_shard(self) -> None:
        if self.tar is not None:
            self.tar.close()
        path = self.folder / f"{self.prefix}-{self.shards:06d}.tar"
        self.tar, self.shards = tarfile.open(path, "w", format=tarfile.USTAR_FORMAT), self.shards + 1

    def _member(self, name: str, data: bytes) -> int:
        """Write one member; the offset of its data in the shard (a ustar header is 512 bytes)."""
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0  # mtime 0: the same images give the same shards
        start = self.tar.offset
        self.tar.addfile(info, io.BytesIO(data))
        return start + tarfile.BLOCKSIZE


def encode_file(path: str) -> tuple[bytes, int, int] | str:
    """(bytes to store, height, width) of one image file, or the reason it cannot be read.

    A JPEG is kept as is after its header is read; any other image is decoded and re-encoded as
    JPEG at QUALITY (so every stored image decodes on one path, nvJPEG included).
    """
    try:
        data = Path(path).read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if data.startswith(_JPEG_MAGIC) and im.format == "JPEG" and im.mode in ("RGB", "L"):
                im.draft(im.mode, (max(1, width // 8), max(1, height // 8)))
                im.load()  # a 1/8-scale decode reads every coded byte: a truncated file is skipped now, not mid-epoch
                return data, height, width
            out = io.BytesIO()
            im.convert("RGB").save(out, format="JPEG", quality=QUALITY)
            return out.getvalue(), height, width
    except Exception as e:  # noqa: BLE001 -- any decoder failure means "skip this file", never a crash
        return f"{type(e).__name__}: {e}"


def write_split(writer: StoreWriter, split: str, files: list[str], labels: np.ndarray,
                shard_bytes: int = SHARD_BYTES, bar=None) -> tuple[int, list, str]:
    """Encode ``files`` into ``split``'s shards in ``writer``'s folder; (kept, [(path, reason)], digest).

    ``bar``: a progress bar (tqdm-like ``update(n)``), or None."""
    shards = ShardWriter(writer.folder, split, shard_bytes)
    skipped = []
    with ThreadPoolExecutor(8) as pool:  # reading and PIL's header parse / re-encode release the GIL
        for start in range(0, len(files), 256):  # bounded window of pending futures
            chunk = files[start:start + 256]
            for path, label, result in zip(chunk, labels[start:start + 256], pool.map(encode_file, chunk)):
                if isinstance(result, str):
                    skipped.append((path, result))
                else:
                    shards.add(result[0], int(label), result[1], result[2])
            if bar is not None:
                bar.update(len(chunk))
    shards.close()
    writer.sizes[split] = len(shards.rows["size"])
    return writer.sizes[split], skipped, shards.digest.hexdigest()


def publish(writer: StoreWriter, *, source: str, classes: list[str], skipped: list, digests: dict[str, str]) -> None:
    """meta.json and the rename: the entry's digest covers every split's image bytes, labels and classes."""
    h = hashlib.sha256(json.dumps([sorted(digests.items()), list(classes)]).encode())
    writer.publish({"format": ENCODED_FORMAT, "source": source, "classes": list(classes),
                    "digest": h.hexdigest()[:16], "splits": writer.sizes, "quality": QUALITY,
                    "skipped": [list(item) for item in skipped]})


def open_encoded(entry: Path, max_mapped_bytes: int | None = None) -> tuple[dict, dict[str, EncodedSplit]]:
    """(meta, {split: EncodedSplit}) of a finished entry, its splits keeping at most ``max_mapped_bytes`` of
    shards mapped together (None: no bound; ``ShardMaps``); DataError naming the entry when damaged."""
    maps = ShardMaps(max_mapped_bytes)
    try:
        meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != ENCODED_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {ENCODED_FORMAT!r}")
        splits = {split: _open_split(entry, split, count, maps) for split, count in meta["splits"].items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"the encoded store {entry} is damaged ({e}); delete that folder and "
                        f"open the dataset again to rebuild it") from None
    return meta, splits


def _open_split(entry: Path, split: str, count: int, maps: ShardMaps) -> EncodedSplit:
    with np.load(entry / f"{split}_index.npz") as f:
        index = {k: f[k] for k in INDEX_FIELDS}
    if len(index["size"]) != count:
        raise ValueError(f"{split} index holds {len(index['size'])} images, meta says {count}")
    shards = sorted(entry.glob(f"{split}-*.tar"))
    if len(index["shard"]) and int(index["shard"].max()) >= len(shards):
        raise ValueError(f"{split} index names shard {int(index['shard'].max())}, {len(shards)} found")
    return EncodedSplit(shards, index, maps)


def index_webdataset(shards: list[Path]) -> EncodedSplit:
    """Index WebDataset tar shards written elsewhere: per key, its first image member and its ``.cls``.

    Keys follow WebDataset's rule: the member path up to the first dot of its file name. An image
    with no ``.cls`` gets label -1 (unlabelled). Sizes come from the image headers (no decode).
    """
    rows: dict[str, list[int]] = {k: [] for k in INDEX_FIELDS}
    for number, path in enumerate(shards):
        try:
            with tarfile.open(path, "r:") as tar:
                _index_shard(tar, number, rows)
        except (OSError, tarfile.TarError) as e:
            raise DataError(f"cannot read the tar shard {path} ({e}); give WebDataset .tar shards (not compressed)")
    return EncodedSplit(list(shards), {k: np.asarray(v, dtype=np.int64) for k, v in rows.items()})


def _index_shard(tar: tarfile.TarFile, number: int, rows: dict[str, list[int]]) -> None:
    images, labels = {}, {}
    for member in tar:
        if not member.isfile():
            continue
        folder, _, name = member.name.rpartition("/")
        stem, _, suffix = name.partition(".")
        key = f"{folder}/{stem}"
        if f".{suffix.lower()}" in IMAGE_SUFFIXES and key not in images:
            images[key] = member
        elif suffix == "cls":
            labels[key] = int(tar.extractfile(member).read().decode().strip())
    for key, member in images.items():
        header = tar.extractfile(member).read(64 << 10)  # enough for the size fields of any common format
        try:
            width, height = Image.open(io.BytesIO(header)).size
        except Exception:  # noqa: BLE001 -- header beyond 64 KiB: read the whole member
            width, height = Image.open(tar.extractfile(member)).size
        for name, value in zip(INDEX_FIELDS, (number, member.offset_data, member.size, labels.get(key, -1),
                                              height, width)):
            rows[name].append(value)
