"""``vipr features``: a backbone's frozen features of a data source, with labels and names, written to a file.

The features are the ones kNN and the linear probe score (``extract_features`` with the
checkpoint's preprocessing), one row per image, with what identifies the row: its split,
its index in that split, its label (-1 unlabelled) and class name, and its name (the file
path relative to an image folder's root, or ``SPLIT/ROW`` for the array sources). Files,
each written atomically (a reader never sees half of one):

* ``FILE.npy``: the (N, D) float32 matrix, ``np.load("FILE.npy")``; beside it
  ``FILE.labels.csv`` (split,row,label,class,name, one line per matrix row).
* ``FILE.npz``: everything in one file, ``d = np.load("FILE.npz")``: ``features`` (N, D) float32,
  ``labels`` (N,) int64, ``split``, ``row``, ``class_name``, ``name`` (N,), ``classes`` (C,).
* ``FILE.parquet``: one table, ``pandas.read_parquet("FILE.parquet")``: columns split, row,
  label, class, name and features (a fixed-size list of D float32). Needs pyarrow.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vipr.errors import ConfigError, DataError
from vipr.fsutil import atomic_write

SPLITS = ("all", "train", "test")
FORMATS = (".npy", ".npz", ".parquet")
PARQUET_HINT = "pip install 'vipr[parquet]' (or pip install pyarrow)"


@dataclass
class FeatureTable:
    """N rows of features and what names them, in split order (train, then test)."""

    features: np.ndarray  # (N, D) float32
    split: np.ndarray  # (N,) str: train | test
    row: np.ndarray  # (N,) int64: index in its split
    label: np.ndarray  # (N,) int64, -1 unlabelled
    class_name: np.ndarray  # (N,) str, "" unlabelled
    name: np.ndarray  # (N,) str: file path relative to the source root, or SPLIT/ROW
    classes: list[str]

    def __len__(self) -> int:
        return len(self.features)


def run_features(*, checkpoint: str, data: str, out: str | Path, split: str = "all", backbone: str | None = None,
                 image_size: int | None = None, batch_size: int = 256, device: str = "auto", precision: str = "auto",
                 progress: bool = True) -> dict:
    """``vipr features``: compute the table of ``checkpoint`` on ``data`` and write it to ``out``; returns a summary.

    ``checkpoint`` is what ``vipr eval`` takes (a checkpoint file, a run folder, or ``random``
    with ``backbone`` and ``image_size``); unlike evaluation, a source without a test split is fine.
    """
    from vipr.data.sources import open_dataset
    from vipr.engine.device import resolve_device
    from vipr.eval.features import load_eval_backbone
    from vipr.eval.runner import EvalSetup

    check_format(out)
    if split not in SPLITS:
        raise ConfigError(f"--split {split}: use one of {', '.join(SPLITS)}")
    dataset = open_dataset(data)
    model, card = load_eval_backbone(str(checkpoint), backbone, image_size)
    setup = EvalSetup(dataset, model, card, resolve_device(device), precision)
    table = compute_feature_table(setup, split, batch_size=batch_size, progress=progress)
    files = write_feature_table(table, out)
    counts = {s: int((table.split == s).sum()) for s in ("train", "test") if (table.split == s).any()}
    return {"files": [str(f) for f in files], "rows": len(table), "dim": int(table.features.shape[1]),
            "splits": counts, "labelled": int((table.label >= 0).sum()), "backbone": card.architecture,
            "image_size": card.image_size, "checkpoint": str(checkpoint), "data": data,
            "device": str(setup.device), "precision": setup.resolved_precision, "seconds": setup.seconds()}


def compute_feature_table(setup, split: str = "all", batch_size: int = 256, progress: bool = True) -> FeatureTable:
    """The features of ``split`` of ``setup.dataset`` (an ``eval.runner.EvalSetup``), with their labels and names."""
    from vipr.data.sources import stored_file_names

    dataset = setup.dataset
    chosen = [s for s in ("train", "test") if split in (s, "all") and getattr(dataset, s) is not None]
    if split == "test" and not chosen:
        raise DataError(f"{dataset.name} has no test split; use --split train or all")
    files = stored_file_names(dataset)
    parts = []
    for name in chosen:
        images = getattr(dataset, name)
        rows = np.arange(len(images))
        features = setup.features(images, rows, batch_size=batch_size, progress=progress, desc=f"{name} features")
        labels = np.asarray(images.labels, dtype=np.int64)
        parts.append((features.numpy(), np.full(len(rows), name), rows, labels,
                      files[name] if files else [f"{name}/{r}" for r in rows]))
    features, split_of, rows, labels, names = (np.concatenate([p[i] for p in parts]) for i in range(5))
    classes = list(dataset.classes)
    class_name = np.array([classes[y] if 0 <= y < len(classes) else "" for y in labels], dtype=str)
    return FeatureTable(features.astype(np.float32, copy=False), split_of.astype(str), rows.astype(np.int64),
                        labels, class_name, np.asarray(names, dtype=str), classes)


def check_format(path: str | Path, flag: str = "--out") -> str:
    """The format suffix of ``path`` (.npy | .npz | .parquet), or a ConfigError; checks pyarrow for .parquet."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"{flag} {path}: unknown file type '{suffix or '(none)'}'; end the name with "
                          f"{', '.join(FORMATS)}")
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError(f"{flag} {path}: .parquet needs pyarrow; {PARQUET_HINT}, or write .npz") from None
    return suffix


def written_files(path: str | Path) -> list[Path]:
    """The files ``write_feature_table(path)`` writes."""
    path = Path(path)
    return [path, labels_path(path)] if path.suffix.lower() == ".npy" else [path]


def labels_path(npy_path: Path) -> Path:
    """FILE.labels.csv beside FILE.npy."""
    return npy_path.with_suffix(".labels.csv")


def write_feature_table(table: FeatureTable, path: str | Path) -> list[Path]:
    """Write ``table`` as ``path``'s format (see the module docstring); returns the files written."""
    path = Path(path)
    suffix = check_format(path)
    if suffix == ".npy":
        atomic_write(labels_path(path), lambda f: f.write(_csv(table).encode("utf-8")))
        atomic_write(path, lambda f: np.save(f, table.features))
    elif suffix == ".npz":
        atomic_write(path, lambda f: np.savez(f, features=table.features, labels=table.label, split=table.split,
                                             row=table.row, class_name=table.class_name, name=table.name,
                                             classes=np.asarray(table.classes, dtype=str)))
    else:
        atomic_write(path, lambda f: _write_parquet(table, f))
    return written_files(path)


def _csv(table: FeatureTable) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["split", "row", "label", "class", "name"])
    writer.writerows(zip(table.split, table.row.tolist(), table.label.tolist(), table.class_name, table.name))
    return text.getvalue()


def _write_parquet(table: FeatureTable, file) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = table.features.shape[1]
    features = pa.FixedSizeListArray.from_arrays(pa.array(table.features.reshape(-1), pa.float32()), dim)
    columns = {"split": table.split.tolist(), "row": table.row, "label": table.label,
               "class": table.class_name.tolist(), "name": table.name.tolist(), "features": features}
    pq.write_table(pa.table(columns), file)
