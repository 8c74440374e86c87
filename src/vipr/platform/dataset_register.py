"""``vipr data register``: open a source, and record its decoded content as a dataset version; label-split artifacts.

The version holds what identifies and describes the data without reopening it: the store's
digest (its key), the source as given and resolved, the store size, classes, images per split
(per class for classification, instances for detection / segmentation data) and the skipped
files (their count, and the store's list). A source that is itself a reference (``flowers:V1``)
records that version's resolved source.
"""

from __future__ import annotations

from pathlib import Path

from vipr.fsutil import file_sha256
from vipr.platform import dataset_refs, datasets
from vipr.platform.datasets import DatasetError, DatasetVersion


def register(src: str, name: str, description: str = "", store_size: int | None = None,
             progress: bool = True) -> tuple[DatasetVersion, bool]:
    """(version, True) for a new version of ``name``; (the existing one, False) when its content is registered."""
    dataset_refs.check_name(name)
    from vipr.data.dense.sources import is_dense_source

    given = dataset_refs.lookup(src) if dataset_refs.parse(src) else None
    resolved = given.resolved if given else dataset_refs.resolve_source(src)
    if is_dense_source(src):
        fields = _dense_fields(src, store_size)
    else:
        fields = _classification_fields(src, store_size, progress)
    fields.update(name=name, source=src, resolved=resolved, description=description or "",
                  store_size=store_size if store_size is not None else (given.store_size if given else None))
    return datasets.add_version(fields)


def _classification_fields(src: str, store_size: int | None, progress: bool) -> dict:
    from vipr.data.info import dataset_info
    from vipr.data.sources import open_dataset

    info = dataset_info(open_dataset(src, store_size=store_size, quiet=True, progress=progress))
    counts = {split: None if s is None else {"images": s["images"], "unlabelled": s["unlabelled"],
                                              "per_class": s["per_class"]}
              for split, s in info["splits"].items()}
    return {"kind": "classification", "digest": info["digest"], "classes": info["classes"], "counts": counts,
            "skipped": info["skipped"]["count"], "skipped_file": info["skipped"]["file"]}


def _dense_fields(src: str, store_size: int | None) -> dict:
    from vipr.data.dense.info import dense_info
    from vipr.data.dense.sources import open_dense

    info = dense_info(open_dense(src, store_size=store_size))
    counts = {split: None if s is None else {"images": s["images"], "instances": s.get("instances")}
              for split, s in info["splits"].items()}
    return {"kind": "dense", "digest": info["digest"], "classes": info["classes"], "counts": counts,
            "skipped": info["skipped"]["count"],
            "skipped_file": info["skipped"]["file"] if info["skipped"]["count"] else None}


def register_split(ref: str, path: str | Path, dataset_digest: str, meta: dict) -> tuple[DatasetVersion, dict]:
    """Record the label split file ``path`` (drawn from data of ``dataset_digest``) as an artifact of ``ref``."""
    version = dataset_refs.get(ref)
    if dataset_digest != version.digest:
        raise DatasetError(f"--register {ref}: the split was drawn from data of digest {dataset_digest}, but "
                           f"{version.ref} has digest {version.digest}; draw it from {version.ref} itself "
                           f"(vipr data split {version.ref} ...)")
    path = Path(path).resolve()
    return version, datasets.add_artifact(version, "label_split", str(path), file_sha256(path), meta)
