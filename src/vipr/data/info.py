"""A JSON-ready summary of a decoded dataset (what ``vipr data info`` prints)."""

from __future__ import annotations

import numpy as np

from vipr.data.types import Dataset, ImageSplit

MAX_SKIPPED_SHOWN = 10  # the full list stays in the cache entry's meta.json


def dataset_info(ds: Dataset) -> dict:
    """Name, digest, classes, image size, per-split and per-class counts, skipped files.

    Examples:
        >>> dataset_info(open_dataset("builtin:digits"))["splits"]["test"]["images"]
        360
    """
    return {
        "name": ds.name,
        "digest": ds.digest,
        "num_classes": ds.num_classes,
        "classes": list(ds.classes),
        "image_size": list(ds.train.image_size),  # [height, width] in pixels
        "splits": {"train": _split_info(ds.train, ds.classes),
                   "test": None if ds.test is None else _split_info(ds.test, ds.classes)},
        "skipped": {"count": len(ds.skipped),
                    "first": [list(item) for item in ds.skipped[:MAX_SKIPPED_SHOWN]]},
    }


def _split_info(split: ImageSplit, classes: list[str]) -> dict:
    labels = np.asarray(split.labels)
    counts = np.bincount(labels[labels >= 0], minlength=len(classes))
    return {
        "images": len(split),
        "unlabelled": int((labels < 0).sum()),
        "per_class": {name: int(count) for name, count in zip(classes, counts)},
    }
