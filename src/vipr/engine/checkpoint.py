"""Checkpoints: atomic writes, exact-resume state, and metadata that travels with the weights.

A checkpoint is one ``torch.save`` dict::

    format    "vipr-checkpoint/1"
    meta      backbone name + kwargs, image_size, mean/std, method, classes, dataset digest,
              config hash, vipr version (DESIGN.md, "Contracts")
    backbone  backbone state_dict (what evaluation, export and serving load)
    state     everything else to resume exactly: method module (heads, momentum encoder,
              queue, banks), optimizer, scheduler, step, RNG states (absent in exports)
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vipr.errors import CheckpointError
from vipr.models import Backbone, create_backbone

FORMAT = "vipr-checkpoint/1"
CHECKPOINT_NAME = "checkpoint.pt"


def rng_state(generator: torch.Generator) -> dict:
    """Every random stream a run draws from: torch (CPU and CUDA), numpy, python, and ``generator``."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
             "augment": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    """Restore what ``rng_state`` saved (streams it lacks, e.g. CUDA on a CPU machine, stay as they are)."""
    torch.set_rng_state(state["torch"])
    generator.set_state(state["augment"])
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "python" in state:
        random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` with torch.save to a temp file in the same folder, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def load(path: str | os.PathLike, expected_format: str = FORMAT) -> dict:
    """A checkpoint dict whose ``format`` is ``expected_format`` (e.g. a NAS search's), or a CheckpointError."""
    path = resolve_path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"cannot read checkpoint {path}: {err}; it may be truncated, re-run or pick another") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != expected_format:
        raise CheckpointError(f"{path} is not a vipr checkpoint of format {expected_format}")
    return ckpt


def build_backbone(meta: dict) -> Backbone:
    return create_backbone(meta["backbone"], **meta.get("backbone_kwargs", {}))


def load_backbone(path: str | os.PathLike) -> tuple[Backbone, dict]:
    """The backbone (with its head, if the checkpoint has one) and the checkpoint's metadata."""
    ckpt = load(path)
    meta = ckpt["meta"]
    model = build_backbone(meta)
    if meta.get("num_classes"):
        model.reset_head(meta["num_classes"])
    try:
        model.load_state_dict(ckpt["backbone"])
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path} does not match backbone '{meta['backbone']}': {err}") from None
    return model, meta


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks): a checkpoint's identity for lineage."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parent_record(checkpoint: str) -> dict:
    """Where a derived model came from: the absolute checkpoint path and its sha256 ("random": none)."""
    if checkpoint == "random":
        return {"parent_checkpoint": "random"}
    path = resolve_path(checkpoint).resolve()
    return {"parent_checkpoint": str(path), "parent_checkpoint_sha256": file_sha256(path)}
