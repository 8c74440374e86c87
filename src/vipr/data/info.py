"""A JSON-ready summary of a decoded dataset, and its table (what ``vipr data info`` prints)."""

from __future__ import annotations

import json

import numpy as np

from vipr.data.types import Dataset, ImageSplit

MAX_SKIPPED_SHOWN = 10  # the full list is the store's skipped.txt


def dataset_info(ds: Dataset) -> dict:
    """Name, digest, classes, stored image size (px), store size (MB), per-split and per-class counts, skipped files.

    Examples:
        >>> dataset_info(open_dataset("builtin:digits"))["splits"]["test"]["images"]
        360
    """
    return {
        "name": ds.name,
        "digest": ds.digest,
        "num_classes": ds.num_classes,
        "classes": list(ds.classes),
        "image_size": list(ds.train.image_size),  # [height, width] in pixels, as stored: what every command reads
        "store_size": _store_side(ds),  # side in px decoded files were resized to; None: the source's own size
        "store": {"path": None if ds.store_dir is None else str(ds.store_dir), "megabytes": _megabytes(ds)},
        "splits": {"train": _split_info(ds.train, ds.classes),
                   "test": None if ds.test is None else _split_info(ds.test, ds.classes)},
        "skipped": {"count": len(ds.skipped), "file": str(ds.skipped_file) if ds.skipped and ds.skipped_file else None,
                    "first": [list(item) for item in ds.skipped[:MAX_SKIPPED_SHOWN]]},
    }


def skipped_note(count: int, listed_in) -> str:
    """``skipped 3 unreadable images (list: PATH)``: the line every command shows when files were skipped."""
    noun = "image" if count == 1 else "images"
    return f"skipped {count} unreadable {noun} (list: {listed_in})"


def format_info(info: dict) -> str:
    """The human table of a ``dataset_info`` record: sizes with units, a split table, a class table."""
    height, width = info["image_size"]
    side = info["store_size"]
    how = f"decoded at {side} px: shorter side resized, then centre-cropped" if side else "the source's own size"
    store = info["store"]
    lines = [f"dataset     {info['name']} (digest {info['digest']})",
             f"image size  {height} x {width} px as stored ({how})",
             f"store size  {_mb(store['megabytes'])} MB" + (f" in {store['path']}" if store["path"] else ""),
             f"classes     {info['num_classes']}", ""]
    splits = {name: split for name, split in info["splits"].items() if split is not None}
    lines += _table(["split", "images", "unlabelled"],
                    [[name, f"{s['images']:,}", f"{s['unlabelled']:,}"] for name, s in splits.items()])
    if info["classes"]:
        lines += [""] + _table(["class", *splits],
                               [[name, *(f"{s['per_class'][name]:,}" for s in splits.values())]
                                for name in info["classes"]])
    if info.get("stores"):
        lines += ["", *_store_lines(info["stores"])]
    skipped = info["skipped"]
    lines += ["", skipped_note(skipped["count"], skipped["file"]) if skipped["count"] else "skipped: none"]
    return "\n".join(lines)


def _store_lines(stores: dict) -> list[str]:
    """Raw vs encoded store sizes per training crop side, and what data.store=auto picks (vipr.data.stores)."""
    lines = [f"stores      encoded (the files' bytes): {_mb(stores['encoded_mb'])} MB for {stores['files']:,} files; "
             f"raw budget {_mb(stores['raw_budget_mb'])} MB (data.raw_budget_gb)"]
    lines += [f"            crop {row['crop']} px: raw at {row['store_side']} px {_mb(row['raw_mb'])} MB -> "
              f"data.store=auto reads {row['auto']}" for row in stores["raw"]]
    return lines


def _mb(megabytes: float) -> str:
    """3 significant figures below 100 MB (0.052, 5.52, 55.2), whole MB above (1,234)."""
    return f"{megabytes:,.0f}" if megabytes >= 100 else f"{megabytes:.3g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Left-aligned first column, right-aligned numbers."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return ["  ".join([str(row[0]).ljust(widths[0])] + [str(c).rjust(w) for c, w in zip(row[1:], widths[1:])])
            for row in [header, *rows]]


def _split_info(split: ImageSplit, classes: list[str]) -> dict:
    labels = np.asarray(split.labels)
    counts = np.bincount(labels[labels >= 0], minlength=len(classes))
    return {
        "images": len(split),
        "unlabelled": int((labels < 0).sum()),
        "per_class": {name: int(count) for name, count in zip(classes, counts)},
    }


def _megabytes(ds: Dataset) -> float:
    """The store's size on disk (its cache entry), else the arrays' bytes, in MB (10^6 bytes)."""
    if ds.store_dir is not None and ds.store_dir.is_dir():
        total = sum(path.stat().st_size for path in ds.store_dir.iterdir() if path.is_file())
    else:
        total = sum(split.images.nbytes + split.labels.nbytes for split in (ds.train, ds.test) if split is not None)
    return round(total / 1e6, 3)


def _store_side(ds: Dataset) -> int | None:
    if ds.store_dir is None or not (ds.store_dir / "meta.json").is_file():
        return None
    return json.loads((ds.store_dir / "meta.json").read_text(encoding="utf-8")).get("store_size")
