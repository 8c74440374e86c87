"""Few-label splits: which train images keep their labels (1% / 10% / k per class), saved as JSON.

A split file names the dataset digest it was drawn from, so evaluating with a split made for
other images fails loudly instead of silently using the wrong labels.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vipr.data.types import Dataset
from vipr.errors import DataError
from vipr.fsutil import atomic_write_text

LABEL_SPLIT_FORMAT = "vipr-label-split/1"
_RESERVED = ("format", "dataset", "dataset_digest", "num_images", "indices")


def make_label_split(labels: np.ndarray, *, label_fraction: float | None = None, per_class: int | None = None,
                     seed: int = 0, class_names: Sequence[str] | None = None) -> np.ndarray:
    """Sorted int64 indices of the images that keep their label, stratified per class.

    Pass exactly one of ``label_fraction`` (in (0, 1]: ``round(fraction * class size)`` images of
    each class, at least one) or ``per_class`` (>= 1 images of each class). Images labelled -1
    are never chosen. Every image gets one random key from ``seed`` and each class keeps its
    lowest keys, so for one seed smaller splits are subsets of larger ones (1% inside 10%).
    ``class_names[label]`` names a class in messages (default: its label).

    Examples:
        >>> make_label_split(np.array([0, 0, 1, 1, 1, 1]), per_class=1, seed=0)
        array([1, 3])
    """
    if (label_fraction is None) == (per_class is None):
        raise ValueError(f"pass exactly one of label_fraction or per_class, got "
                         f"label_fraction={label_fraction!r}, per_class={per_class!r}")
    if label_fraction is not None and not 0 < label_fraction <= 1:
        raise ValueError(f"label_fraction must be in (0, 1], got {label_fraction!r}")
    if per_class is not None and (int(per_class) != per_class or per_class < 1):
        raise ValueError(f"per_class must be an integer >= 1, got {per_class!r}")
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    labelled = np.flatnonzero(labels >= 0)
    if len(labelled) == 0:
        raise DataError(f"none of the {len(labels)} images has a label (all are -1); a label split needs "
                        f"a labelled dataset (class folders, CIFAR, npz with y_train)")
    classes, counts = np.unique(labels[labelled], return_counts=True)
    if per_class is not None:
        short = np.flatnonzero(counts < per_class)
        if len(short):
            raise DataError(f"per_class={per_class} but class {_class_name(classes[short[0]], class_names)} has "
                            f"only {counts[short[0]]} images; lower per_class to at most {counts.min()}")
        take = np.full(len(classes), int(per_class))
    else:
        take = np.maximum(1, np.floor(label_fraction * counts + 0.5)).astype(np.int64)
    keys = np.random.default_rng(seed).random(len(labels))[labelled]  # one key per image: nested splits
    cls = np.searchsorted(classes, labels[labelled])  # class position 0..K-1 of each labelled image
    order = np.lexsort((keys, cls))  # by class, then by key
    rank = np.arange(len(order)) - np.concatenate([[0], np.cumsum(counts)[:-1]])[cls[order]]
    return np.sort(labelled[order[rank < take[cls[order]]]]).astype(np.int64)


def _class_name(label: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= label < len(class_names):
        return f"{class_names[label]!r} (label {label})"
    return str(label)


def save_label_split(path: str | os.PathLike, indices: np.ndarray, dataset: Dataset, **meta) -> None:
    """Write the split of ``dataset.train`` as JSON (atomically), with ``meta`` such as label_fraction, seed."""
    clash = sorted(set(meta) & set(_RESERVED))
    if clash:
        raise ValueError(f"meta keys {clash} are reserved by the split file format; rename them")
    indices = _checked(np.asarray(indices), len(dataset.train), f"indices for {dataset.name}")
    doc = {"format": LABEL_SPLIT_FORMAT, "dataset": dataset.name, "dataset_digest": dataset.digest,
           "num_images": len(dataset.train), **meta, "indices": indices.tolist()}
    atomic_write_text(path, json.dumps(doc))


def load_label_split(path: str | os.PathLike, dataset: Dataset) -> np.ndarray:
    """The indices saved by ``save_label_split``, checked against ``dataset`` (digest and range)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"label split {path} is a folder; pass the JSON file `vipr data split` wrote")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"label split file {path} does not exist; {_fix(path, dataset, {})}") from None
    except OSError as e:
        raise DataError(f"label split file {path} cannot be read ({e.strerror}); check its permissions") from None
    except ValueError:  # not JSON (or not UTF-8): someone else's file, never to be overwritten
        raise DataError(f"{path} is not a label split (not JSON); {_fix(_new_path(path), dataset, {})}") from None
    if not isinstance(doc, dict) or doc.get("format") != LABEL_SPLIT_FORMAT or "indices" not in doc:
        raise DataError(f"{path} is not a {LABEL_SPLIT_FORMAT} file; {_fix(_new_path(path), dataset, {})}")
    if doc.get("dataset_digest") != dataset.digest:
        raise DataError(f"label split {path} was drawn from {doc.get('dataset')!r} (digest "
                        f"{doc.get('dataset_digest')}), but {dataset.name!r} has digest {dataset.digest}: "
                        f"the images or labels differ; {_fix(path, dataset, doc)}")
    try:
        return _checked(np.asarray(doc["indices"]), len(dataset.train), str(path))
    except ValueError as e:
        raise DataError(f"{e}; {_fix(path, dataset, doc)}") from None


def _checked(indices: np.ndarray, num_images: int, what: str) -> np.ndarray:
    """Sorted unique int64 indices within [0, num_images), else ValueError naming the problem."""
    if indices.ndim != 1 or (indices.size and not np.issubdtype(indices.dtype, np.integer)):
        raise ValueError(f"{what}: indices must be a flat list of integers, got {indices.dtype} {indices.shape}")
    indices = np.unique(indices.astype(np.int64))
    if indices.size and (indices[0] < 0 or indices[-1] >= num_images):
        raise ValueError(f"{what}: index {indices[0] if indices[0] < 0 else indices[-1]} is outside the "
                         f"train split's {num_images} images")
    return indices


def _new_path(path: Path) -> Path:
    """Where to write a new split instead of ``path``, which holds something else."""
    return path.with_name("label-split.json") if path.name != "label-split.json" else path.with_name("label-split-2.json")


def _fix(path: Path, dataset: Dataset, doc: dict) -> str:
    """The command that re-creates the split, with the options recorded in the old file when known."""
    if doc.get("per_class") is not None:
        option = f"--per-class {doc['per_class']}"
    else:
        option = f"--label-fraction {doc.get('label_fraction', 'F')}"
    return f"re-create it with `vipr data split {dataset.name} {option} --seed {doc.get('seed', 0)} --out {path}`"
