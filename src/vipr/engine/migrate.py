"""Reading checkpoints of earlier formats: format 1 (vipr 0.1, an untyped ``meta`` dict) -> format 2.

Format 1 kept its metadata as a dict of string keys (``backbone``, ``image_size``, ...) and
numpy's RNG state as numpy's own tuple (an ndarray inside). Migration maps the dict onto a
model card; keys the card has no field for go to ``card.extra`` so nothing is lost. The RNG
tuple is restored as it is (``checkpoint.set_rng_state`` reads both forms), so a format-1
run resumes exactly. ``tests/engine/fixtures`` holds files written by the format-1 code.
"""

from __future__ import annotations

import numpy as np

from vipr.engine.card import CARD_FORMAT, TASKS, ModelCard
from vipr.errors import CheckpointError

FORMAT_V1 = "vipr-checkpoint/1"
_V1_STORE_FORMAT = "vipr-store/1"  # every format-1 dataset digest was computed in this store format
_V1_REQUIRED = ("backbone", "image_size", "mean", "std")  # the preprocessing every format-1 writer recorded
_V1_MAPPED = {"backbone", "backbone_kwargs", "num_classes", "image_size", "mean", "std", "classes", "method",
              "dataset", "dataset_digest", "config_hash", "config", "parent_checkpoint", "parent_checkpoint_sha256",
              "label_split", "eval", "test", "vipr_version"}

# The globals a format-1 pickle of numpy's RNG state names (numpy >= 2 writes numpy._core, older numpy.core):
# they rebuild a uint32 array (the Mersenne Twister words) from its raw bytes, and call nothing else.
_reconstruct = (getattr(np, "_core", None) or np.core).multiarray._reconstruct
LEGACY_GLOBALS = [np.ndarray, np.dtype, type(np.dtype(np.uint32)),
                  (_reconstruct, "numpy._core.multiarray._reconstruct"),
                  (_reconstruct, "numpy.core.multiarray._reconstruct")]


def migrate_v1(ckpt: dict, source: str) -> dict:
    """A format-1 checkpoint dict as format 2 (``card`` for ``meta``), less the ``format`` key."""
    out = {"card": card_from_v1(ckpt.get("meta"), source).to_dict(), "backbone": ckpt.get("backbone")}
    if "state" in ckpt:
        out["state"] = ckpt["state"]
    return out


def card_from_v1(meta, source: str) -> ModelCard:
    """The card of a format-1 ``meta`` dict; CheckpointError naming the file and what it lacks."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{source} (format {FORMAT_V1}) has no metadata dict; re-create it with this vipr")
    missing = [key for key in _V1_REQUIRED if meta.get(key) is None]
    if missing:
        raise CheckpointError(f"{source} has no {', '.join(missing)} in its metadata (format {FORMAT_V1}), and "
                              f"evaluation, export and serving need the preprocessing that travels with the "
                              f"weights; re-create it with `vipr pretrain` or `vipr eval linear --out`")
    num_classes = int(meta.get("num_classes") or 0)
    parent = meta.get("parent_checkpoint")
    return ModelCard.from_dict({
        "architecture": meta["backbone"], "architecture_kwargs": dict(meta.get("backbone_kwargs") or {}),
        "task": TASKS[1] if num_classes else TASKS[0], "num_classes": num_classes,
        "image_size": meta["image_size"], "mean": meta["mean"], "std": meta["std"],
        "classes": list(meta.get("classes") or []), "method": meta.get("method") or "unknown",
        "dataset": meta.get("dataset"), "dataset_digest": meta.get("dataset_digest"),
        "data_version": _V1_STORE_FORMAT if meta.get("dataset_digest") else None,
        "config_hash": meta.get("config_hash"), "config": dict(meta.get("config") or {}),
        "parent": {"checkpoint": parent, "sha256": meta.get("parent_checkpoint_sha256")} if parent else None,
        "label_split": meta.get("label_split"), "evaluation": dict(meta.get("eval") or meta.get("test") or {}),
        "extra": {key: value for key, value in meta.items() if key not in _V1_MAPPED},
        "vipr_version": meta.get("vipr_version") or "unknown", "format": CARD_FORMAT}, source=source)
