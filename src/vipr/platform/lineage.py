"""Lineage between registered models: a classifier names the pre-trained checkpoint it came from.

A linear / fine-tuned classifier's metadata holds ``parent_checkpoint``: the checkpoint (or
run folder) it was fitted on, as given to ``vipr eval``. Its content hash identifies the
parent among registered versions, whichever name they were registered under, because
``register`` tags every version with its own ``checkpoint_sha256``.
"""

from __future__ import annotations

from pathlib import Path

from vipr.engine import checkpoint
from vipr.errors import CheckpointError
from vipr.engine.checkpoint import file_sha256


def lineage_tags(meta: dict, client) -> dict:
    """``parent_checkpoint`` (+ its sha256, and ``parent_model`` NAME/VERSION when registered)."""
    parent = meta.get("parent_checkpoint")
    if not parent or parent == "random":
        return {}
    tags = {"parent_checkpoint": parent}
    sha = meta.get("parent_checkpoint_sha256")  # recorded at evaluation time, survives moves
    if sha is None:
        try:
            path = checkpoint.resolve_path(Path(parent))
        except CheckpointError:  # moved or deleted, and an older classifier without the hash
            return tags
        tags["parent_checkpoint"], sha = str(path.resolve()), file_sha256(path)
    tags["parent_checkpoint_sha256"] = sha
    tags["parent_model"] = find_by_sha256(client, sha)
    return tags


def find_by_sha256(client, sha256: str) -> str | None:
    """``NAME/VERSION`` of the first registered version of the checkpoint with this content, if any."""
    found = client.search_model_versions(f"tags.checkpoint_sha256 = '{sha256}'")
    if not found:
        return None
    first = min(found, key=lambda v: (v.creation_timestamp, v.name, int(v.version)))
    return f"{first.name}/{first.version}"
