"""Checkpoints: atomic writes, safe reads, exact-resume state, and the model card that travels with the weights.

A checkpoint is one ``torch.save`` dict of plain data (tensors, dicts, lists, str, numbers,
None), so it is read with ``weights_only=True`` and no file can run code when loaded::

    format    "vipr-checkpoint/2"
    card      ModelCard.to_dict(): architecture + kwargs, task, image_size, mean/std, classes,
              method, dataset digest, config hash, parent, vipr version (vipr.engine.card)
    backbone  backbone state_dict (what evaluation, export and serving load)
    state     everything else to resume exactly: method module (heads, momentum encoder,
              queue, banks), optimizer, scheduler, step, RNG states (absent in exports)

A job whose product is no model (a NAS search: its genotype is written beside the checkpoint)
saves a :class:`RunRecord`'s ``format``, ``config`` and ``config_hash`` instead of card and
backbone, and the same ``state``.

Files of format 1 (an untyped ``meta`` dict) are migrated when read (vipr.engine.migrate).
This module builds no model: ``vipr.models.loading`` turns a card into its backbone.
"""

from __future__ import annotations

import os
import pickle
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vipr.engine.card import RANDOM, ModelCard, Parent
from vipr.engine.migrate import FORMAT_V1, LEGACY_GLOBALS, migrate_v1
from vipr.errors import CheckpointError
from vipr.fsutil import atomic_write, file_sha256

FORMAT = "vipr-checkpoint/2"
CHECKPOINT_NAME = "checkpoint.pt"

__all__ = ["CHECKPOINT_NAME", "FORMAT", "RunRecord", "file_sha256", "load", "load_card", "parent_record", "read_card",
           "resolve_path", "rng_state", "save_atomic", "set_rng_state"]


@dataclass(frozen=True)
class RunRecord:
    """What the checkpoint of a job that ships no model carries beside ``state`` (see the module docstring).

    ``config`` is the compared config as plain data; a resume continues only under ``config_hash``."""

    format: str  # e.g. "vipr-nas-search/2"
    config: dict
    config_hash: str


def rng_state(generator: torch.Generator) -> dict:
    """Every random stream a run draws from: torch (CPU and CUDA), numpy, python, and ``generator``.

    numpy's state becomes tensors and numbers (its own form holds an ndarray, which
    ``weights_only`` loading refuses); python's is a tuple of ints, plain data already.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "augment": generator.get_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    """Restore what ``rng_state`` saved (streams it lacks, e.g. CUDA on a CPU machine, stay as they are)."""
    torch.set_rng_state(state["torch"])
    generator.set_state(state["augment"])
    if "numpy" in state:
        np.random.set_state(_numpy_state(state["numpy"]))
    if "python" in state:
        random.setstate(_python_state(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state(saved) -> tuple:
    """numpy's own state tuple from ``rng_state``'s dict (format-1 files hold the tuple itself)."""
    if not isinstance(saved, dict):
        return tuple(saved)
    keys = saved["keys"].numpy().astype(np.uint32)  # (624,) Mersenne Twister words
    return saved["kind"], keys, saved["pos"], saved["has_gauss"], saved["cached_gaussian"]


def _python_state(saved) -> tuple:
    """random.setstate wants tuples; a state gathered over processes may come back with lists."""
    version, words, gauss = saved
    return version, tuple(words), gauss


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """torch.save ``obj`` to a temp file beside ``path``, then rename it over ``path`` (vipr.fsutil)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def resolve_path(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run folder holding one (classifier.pt preferred for eval runs)."""
    path = Path(path)
    if path.is_dir():
        for name in (CHECKPOINT_NAME, "classifier.pt"):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"no {CHECKPOINT_NAME} in run folder {path}; pass the .pt file itself or a folder from `vipr pretrain --out`")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def load(path: str | os.PathLike, expected_format: str = FORMAT, mmap: bool = False) -> dict:
    """A checkpoint dict whose ``format`` is ``expected_format`` (e.g. a NAS search's), or a CheckpointError.

    Model checkpoints of format 1 come back migrated to the current format, their card checked.
    """
    path = resolve_path(path)
    ckpt = _read(path, mmap)
    if expected_format == FORMAT and isinstance(ckpt, dict) and ckpt.get("format") == FORMAT_V1:
        ckpt = {**migrate_v1(ckpt, str(path)), "format": FORMAT}
    if not isinstance(ckpt, dict) or ckpt.get("format") != expected_format:
        raise CheckpointError(f"{path} is not a vipr checkpoint of format {expected_format}")
    if expected_format == FORMAT:
        read_card(ckpt, path)  # a bad card fails here, naming the file
    return ckpt


def read_card(ckpt: dict, source: str | os.PathLike) -> ModelCard:
    """The checked card of a checkpoint dict that ``load`` returned."""
    return ModelCard.from_dict(ckpt.get("card"), source=str(source))


def load_card(path: str | os.PathLike) -> ModelCard:
    """A checkpoint's card without reading its tensors into memory (they stay memory-mapped)."""
    return read_card(load(path, mmap=True), resolve_path(path))


def _read(path: Path, mmap: bool) -> Any:
    """``torch.load`` with ``weights_only=True``: a pickle that would build anything but plain data is refused."""
    try:
        # numpy's array rebuild (raw bytes -> ndarray) is allowed for format-1 RNG states only: it
        # runs no callable the file names, and checkpoints written now hold no numpy at all
        with torch.serialization.safe_globals(LEGACY_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        raise CheckpointError(f"refused {path}: it holds objects beyond plain data and may be unsafe to load "
                              f"(not a vipr checkpoint of a supported format); only load files you trust") from None
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"cannot read checkpoint {path}: {err}; it may be truncated, re-run or pick another") from None


def parent_record(checkpoint: str) -> Parent:
    """Where a derived model came from: the absolute checkpoint path and its sha256 ("random": none)."""
    if checkpoint == RANDOM:
        return Parent(RANDOM)
    path = resolve_path(checkpoint).resolve()
    return Parent(str(path), file_sha256(path))
