"""Which store a training run reads an image folder from: raw (decoded uint8) or encoded (JPEG bytes).

``data.store``:

* ``raw``: every image decoded once to ``store_size`` px (store.py); fastest per step, costs
  3 x store_size^2 bytes an image (196 KB at 256 px).
* ``encoded``: the files' bytes in tar shards (encoded.py), each training crop cut at decode on
  CPU threads; costs what the JPEGs cost (typically 5-10x less), pays a decode per image per step.
* ``auto`` (default): raw when the raw store of the folder fits ``data.raw_budget_gb`` (default:
  a quarter of the free disk under the cache folder), encoded otherwise. Array sources
  (built-ins, CIFAR, .npz, registered versions) are raw whatever is asked: they come as arrays;
  a folder of WebDataset ``.tar`` shards (made by other tools) is read in place as encoded.

Store side for image folders (``data.store_size`` unset): ``max(64, ceil(8/7 x image_size))``,
the 256/224 margin of the ImageNet protocol, so 224-px training reads 256-px images instead of
upsampling 64-px ones, and 32-px training keeps today's 64 px.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from vipr.data import sources
from vipr.data.decode import decode_threads
from vipr.data.encoded_source import as_dataset, is_webdataset_folder, open_encoded_folder, open_webdataset_folder
from vipr.data.types import Dataset
from vipr.errors import DataError
from vipr.fsutil import cache_root

STORES = ("auto", "raw", "encoded")
RAW_BUDGET_SHARE = 0.25  # of the free disk, when data.raw_budget_gb is unset


def default_store_size(image_size: int) -> int:
    """Side in px an image folder is stored at for crops of ``image_size`` px (see the module docstring)."""
    return max(sources.DEFAULT_STORE_SIZE, math.ceil(image_size * 8 / 7))


def raw_budget_bytes(raw_budget_gb: float | None, cache_dir=None) -> int:
    if raw_budget_gb is not None:
        return int(raw_budget_gb * 1e9)
    root = cache_root(cache_dir)
    probe = next((p for p in (root, *root.parents) if p.exists()), Path("/"))
    return int(shutil.disk_usage(probe).free * RAW_BUDGET_SHARE)


def _is_image_folder(src: str) -> bool:
    """An image-folder source (the only kind the encoded store takes), not a built-in or a CIFAR folder."""
    folder = Path(src).expanduser()
    return not src.startswith("builtin:") and folder.is_dir() and not sources.find_cifar(folder)


def choose_store(src: str, store: str, side: int, raw_budget_gb: float | None, cache_dir=None) -> str:
    """``raw`` or ``encoded`` for ``src`` (only an image folder can be encoded)."""
    if store not in STORES:
        raise DataError(f"data.store must be one of {', '.join(STORES)}, got {store!r}")
    folder = Path(src).expanduser()
    is_folder = _is_image_folder(src)
    if store == "encoded" and not is_folder:
        raise DataError(f"data.store=encoded takes an image folder; {src!r} is an array source: use data.store=raw "
                        "(or auto)")
    if store != "auto" or not is_folder:
        return "encoded" if store == "encoded" else "raw"
    listed, _ = sources.list_folder(folder)
    raw = sum(len(files) for _, files, _ in listed.values()) * 3 * side * side
    return "raw" if raw <= raw_budget_bytes(raw_budget_gb, cache_dir) else "encoded"


def open_training_dataset(src: str, *, store: str = "auto", store_size: int | None, image_size: int,
                          raw_budget_gb: float | None = None, cache_gb: float | None = None, model_threads: int = 1,
                          progress: bool = True) -> tuple[Dataset, str]:
    """(dataset, "raw" | "encoded") for a training run; an encoded dataset's splits decode when read, keeping
    at most ``cache_gb`` GB of shards mapped (None: no bound; ``vipr.data.shard_maps``)."""
    with sources.reused_listings():  # choosing the store and opening it list the folder once
        return _open_training_dataset(src, store, store_size, image_size, raw_budget_gb, cache_gb, model_threads,
                                      progress)


def _open_training_dataset(src, store, store_size, image_size, raw_budget_gb, cache_gb, model_threads, progress):
    folder = Path(src).expanduser()
    mapped = None if cache_gb is None else int(cache_gb * 1e9)
    if is_webdataset_folder(folder):  # shards made elsewhere: encoded already, read in place
        side = store_size or default_store_size(image_size)
        return as_dataset(open_webdataset_folder(src, max_mapped_bytes=mapped), side,
                          decode_threads(model_threads)), "encoded"
    side = store_size or (default_store_size(image_size) if _is_image_folder(src) else None)
    kind = choose_store(src, store, side or 0, raw_budget_gb)
    if kind == "raw":
        return sources.open_dataset(src, store_size=side, progress=progress), kind
    encoded = open_encoded_folder(src, progress=progress, max_mapped_bytes=mapped)
    return as_dataset(encoded, side, decode_threads(model_threads)), kind


def store_estimates(src: str, crop_sides=(32, 224)) -> dict | None:
    """What each store would take for image folder ``src``, and what ``auto`` picks, per training crop side:
    ``{"files": N, "encoded_mb": .., "raw": [{"crop": 224, "store_side": 256, "raw_mb": .., "auto": ..}]}``.
    None for array sources (always raw). The encoded figure is the files' bytes: JPEGs are kept as they
    are, other formats re-encoded (usually smaller)."""
    if not _is_image_folder(src):
        return None
    listed, _ = sources.list_folder(Path(src).expanduser())
    files = [f for _, split_files, _ in listed.values() for f in split_files]
    budget = raw_budget_bytes(None)
    rows = []
    for crop in crop_sides:
        side = default_store_size(crop)
        raw = len(files) * 3 * side * side
        rows.append({"crop": crop, "store_side": side, "raw_mb": raw / 1e6, "auto": "raw" if raw <= budget else "encoded"})
    return {"files": len(files), "encoded_mb": sum(size for _, size, _ in files) / 1e6, "raw_budget_mb": budget / 1e6,
            "raw": rows}
