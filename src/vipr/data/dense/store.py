"""The dense store: a classification-style cache entry (vipr.data.store) with annotation arrays.

One entry ``<cache root>/<source key>/`` holds, per split (``train``, ``test``)::

    {split}_images.npy      (N, 3, S, S) uint8      {split}_sizes.npy / _orig_sizes.npy  (N, 2) int32
    {split}_image_ids.npy   (N,) int64              {split}_names.json   file names
    {split}_offsets.npy     (N + 1,) int64          {split}_boxes.npy    (M, 4) float32 xyxy
    {split}_labels.npy, _ann_ids.npy  (M,) int64    {split}_iscrowd.npy, _difficult.npy  (M,) uint8
    {split}_rle_offsets.npy (M + 1,) int64          {split}_rle_bytes.npy (B,) uint8   (masks only)
    {split}_semantic.npy    (N, S, S) uint8         (semantic maps only)

and ``meta.json`` (format, source, classes, digest, skipped count, clipped boxes, split sizes) and
``skipped.txt`` (``split<TAB>file<TAB>id<TAB>reason``, one skipped annotation or image a line).
Written in a temporary folder and renamed into place when complete, like the classification
store; reopening memory-maps images and semantic maps read-only.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vipr.data.dense.types import IGNORE, DenseDataset, DenseSplit, Instances
from vipr.data.store import StoreWriter, _shrink_npy, ensure_entry
from vipr.errors import DataError
from vipr.fsutil import atomic_write_text

DENSE_FORMAT = "vipr-dense-store/1"
SPLITS = ("train", "test")
_CHUNK_BYTES = 64 << 20  # digest granularity: bounded RAM on stores larger than memory
INSTANCE_ARRAYS = ("offsets", "boxes", "labels", "iscrowd", "difficult", "ann_ids")
PROGRESS_MIN = 1000  # images: smaller splits decode in seconds, without a progress bar


class SplitBuilder:
    """Collects one split image by image: canvases into a memmap, annotations into lists."""

    def __init__(self, folder: Path, split: str, capacity: int, canvas: int, semantic: bool, masks: bool):
        self.folder, self.split, self.canvas = folder, split, canvas
        self.images = np.lib.format.open_memmap(folder / f"{split}_images.npy", mode="w+", dtype=np.uint8,
                                                shape=(max(capacity, 1), 3, canvas, canvas))
        self.semantic = None if not semantic else np.lib.format.open_memmap(
            folder / f"{split}_semantic.npy", mode="w+", dtype=np.uint8, shape=(max(capacity, 1), canvas, canvas))
        self.masks = masks
        self.count = 0
        self.meta: dict[str, list] = {"sizes": [], "orig_sizes": [], "image_ids": [], "names": []}
        self.inst: dict[str, list] = {"boxes": [], "labels": [], "iscrowd": [], "difficult": [], "ann_ids": []}
        self.offsets, self.rles = [0], []
        self.pixels = np.zeros(256, np.int64)  # semantic pixels per value, over the valid regions
        self.bar = tqdm(total=capacity, desc=f"decoding {split}", unit="img", file=sys.stderr, leave=False,
                        disable=capacity < PROGRESS_MIN)

    def add(self, image: np.ndarray, valid: tuple[int, int], orig: tuple[int, int], image_id: int, name: str,
            ann: dict, semantic: np.ndarray | None = None) -> None:
        """Append one canvas (3, S, S) and its instances: ``ann`` maps boxes (N, 4), labels, iscrowd,
        difficult, ann_ids (N,) and, with masks, rles (N compressed RLE strings)."""
        i = self.count
        self.images[i] = image
        if self.semantic is not None:
            self.semantic[i] = IGNORE if semantic is None else semantic  # no map for this image: all ignored
            if semantic is not None:
                self.pixels += np.bincount(semantic[:valid[0], :valid[1]].ravel(), minlength=256)
        for key, value in zip(self.meta, (valid, orig, image_id, name)):
            self.meta[key].append(value)
        n = len(ann.get("labels", ()))
        for key in self.inst:
            self.inst[key].extend(ann.get(key, ()) if n else ())
        if self.masks:
            self.rles.extend(ann["rles"] if n else ())
        self.offsets.append(self.offsets[-1] + n)
        self.count += 1
        self.bar.update()

    def finish(self) -> dict:
        """Write the split's arrays; returns its stats for meta.json."""
        self.bar.close()
        for arr, name in ((self.images, "images"), (self.semantic, "semantic")):
            if arr is not None:
                arr.flush()
                if self.count < len(arr):
                    _shrink_npy(self.folder / f"{self.split}_{name}.npy", self.count)
        self.images = self.semantic = None  # close the maps
        save = lambda name, value, dtype: np.save(self.folder / f"{self.split}_{name}.npy", np.asarray(value, dtype))
        save("sizes", np.reshape(self.meta["sizes"], (-1, 2)), np.int32)
        save("orig_sizes", np.reshape(self.meta["orig_sizes"], (-1, 2)), np.int32)
        save("image_ids", self.meta["image_ids"], np.int64)
        save("offsets", self.offsets, np.int64)
        save("boxes", np.reshape(np.asarray(self.inst["boxes"], np.float32), (-1, 4)), np.float32)
        for key, dtype in (("labels", np.int64), ("iscrowd", np.uint8), ("difficult", np.uint8), ("ann_ids", np.int64)):
            save(key, self.inst[key], dtype)
        if self.masks:
            save("rle_offsets", np.cumsum([0] + [len(r) for r in self.rles]), np.int64)
            save("rle_bytes", np.frombuffer(b"".join(self.rles), np.uint8), np.uint8)
        atomic_write_text(self.folder / f"{self.split}_names.json", json.dumps(self.meta["names"]))
        return {"images": self.count, "instances": self.offsets[-1],
                **({"semantic_pixels": self.pixels.tolist()} if self.semantic is not None or self.pixels.any() else {})}


class DenseWriter(StoreWriter):
    """A StoreWriter whose splits are SplitBuilders; ``commit_dense`` publishes the entry."""

    def __init__(self, root: Path, key: str, canvas: int | None, source: str):
        super().__init__(root, key)
        self.canvas, self.source, self.stats = canvas, source, {}

    def split(self, split: str, capacity: int, *, semantic: bool, masks: bool) -> SplitBuilder:
        """A builder for ``split``; the source's build sets ``canvas`` first when store_size was unset."""
        if not self.canvas:
            raise RuntimeError("the canvas size must be set before a split is built")
        return SplitBuilder(self.folder, split, capacity, self.canvas, semantic, masks)

    def finish(self, builder: SplitBuilder) -> None:
        self.stats[builder.split] = builder.finish()

    def commit_dense(self, *, kind: str, classes: list[str], category_ids: list[int],
                     skipped: list[tuple], clipped: int = 0) -> None:
        source = self.source
        if "train" not in self.stats or not self.stats["train"]["images"]:
            first = next((item for item in skipped if str(item[2]).startswith("image")), skipped[0] if skipped else None)
            raise DataError(f"{source}: no usable train image (skipped {len(skipped)} items"
                            + (f"; e.g. {' '.join(map(str, first))}" if first else "")
                            + "); check that the images lie where the annotations say")
        lines = "".join("\t".join(str(v).replace("\t", " ").replace("\n", " ") for v in item) + "\n"
                        for item in skipped)
        atomic_write_text(self.folder / "skipped.txt", lines)
        meta = {"format": DENSE_FORMAT, "source": source, "kind": kind, "classes": list(classes),
                "category_ids": [int(c) for c in category_ids], "canvas": self.canvas,
                "digest": _digest(self.folder, classes), "splits": self.stats, "clipped": int(clipped),
                "skipped": len(skipped), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self.publish(meta)


def load_or_build_dense(root: Path, key: str, name: str, canvas: int | None,
                        build: Callable[[DenseWriter], None]) -> DenseDataset:
    """Open the entry ``root/key``, building it first with ``build(writer)`` if it is not cached."""
    return open_dense_entry(ensure_entry(root, key, lambda: DenseWriter(root, key, canvas, name), build), name)


def open_dense_entry(entry: Path, name: str) -> DenseDataset:
    """Reopen a finished entry: images and semantic maps memory-mapped read-only, the rest in RAM."""
    try:
        meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != DENSE_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {DENSE_FORMAT!r}")
        splits = {split: _open_split(entry, split, stats) for split, stats in meta["splits"].items()}
        skipped = [tuple(line.split("\t")) for line in
                   (entry / "skipped.txt").read_text(encoding="utf-8").splitlines()]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"the data cache entry {entry} is damaged ({e}); delete that folder and "
                        f"open the dataset again to rebuild it") from None
    test = splits.get("test")
    return DenseDataset(name=name, kind=meta["kind"], train=splits["train"], test=test if test else None,
                        classes=meta["classes"], category_ids=meta["category_ids"], digest=meta["digest"],
                        skipped=skipped, clipped=meta["clipped"], skipped_file=str(entry / "skipped.txt"),
                        stats=meta["splits"])


def _open_split(entry: Path, split: str, stats: dict) -> DenseSplit:
    path = lambda name: entry / f"{split}_{name}.npy"
    arrays = {name: np.load(path(name)) for name in INSTANCE_ARRAYS}
    masks = path("rle_offsets").is_file()
    instances = Instances(**arrays, rle_offsets=np.load(path("rle_offsets")) if masks else None,
                          rle_bytes=np.load(path("rle_bytes")) if masks else None)
    images = np.load(path("images"), mmap_mode="r")
    if len(images) != stats["images"] or int(instances.offsets[-1]) != stats["instances"]:
        raise ValueError(f"{split} holds {len(images)} images and {instances.offsets[-1]} instances, "
                         f"meta says {stats['images']} and {stats['instances']}")
    return DenseSplit(images=images, sizes=np.load(path("sizes")), orig_sizes=np.load(path("orig_sizes")),
                      image_ids=np.load(path("image_ids")),
                      names=json.loads((entry / f"{split}_names.json").read_text(encoding="utf-8")),
                      instances=instances,
                      semantic_maps=np.load(path("semantic"), mmap_mode="r") if path("semantic").is_file() else None)


def _digest(folder: Path, classes: list[str]) -> str:
    """sha256 over every data file of the entry (name and bytes, chunked) and the class names (16 hex)."""
    h = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.suffix not in (".npy", ".json") or path.name == "meta.json":
            continue
        h.update(f"{path.name}:{path.stat().st_size};".encode())
        with open(path, "rb") as f:
            while block := f.read(_CHUNK_BYTES):
                h.update(block)
    h.update(json.dumps(list(classes)).encode())
    return h.hexdigest()[:16]
