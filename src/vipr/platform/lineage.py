"""Lineage between registered models: a classifier names the pre-trained checkpoint it came from.

A linear / fine-tuned classifier's card holds ``parent``: the checkpoint it was fitted on
(its absolute path when ``vipr eval`` ran) and that file's sha256. The content hash identifies the
parent among registered versions, whichever name they were registered under, because
``register`` tags every version with its own ``checkpoint_sha256``.
"""

from __future__ import annotations

from pathlib import Path

from vipr.engine import checkpoint
from vipr.engine.card import RANDOM, ModelCard
from vipr.errors import CheckpointError
from vipr.fsutil import file_sha256


def lineage_tags(card: ModelCard, client) -> dict:
    """``parent_checkpoint`` (+ its sha256, and ``parent_model`` NAME/VERSION when registered)."""
    if card.parent is None or card.parent.checkpoint == RANDOM:
        return {}
    parent = card.parent.checkpoint
    tags = {"parent_checkpoint": parent}
    sha = card.parent.sha256  # recorded at evaluation time, survives moves
    if sha is None:
        try:
            path = checkpoint.resolve_path(Path(parent))
        except CheckpointError:  # moved or deleted, and an older classifier without the hash
            return tags
        tags["parent_checkpoint"], sha = str(path.resolve()), file_sha256(path)
    tags["parent_checkpoint_sha256"] = sha
    tags["parent_model"] = find_by_sha256(client, sha)
    return tags


def orphaned_by_deleting(client, version) -> list[str]:
    """``NAME/VERSION`` of the versions that would lose their registered parent if ``version`` went.

    Children find their parent by content, so none is orphaned while another version holds the
    same checkpoint (the same file registered twice, or under another name).
    """
    sha = version.tags.get("checkpoint_sha256")
    if not sha:
        return []
    twins = [v for v in client.search_model_versions(f"tags.checkpoint_sha256 = '{sha}'")
             if (v.name, str(v.version)) != (version.name, str(version.version))]
    if twins:
        return []
    children = client.search_model_versions(f"tags.parent_checkpoint_sha256 = '{sha}'")
    return sorted((f"{v.name}/{v.version}" for v in children), key=lambda ref: (ref.split("/")[0], int(ref.split("/")[1])))


def find_by_sha256(client, sha256: str) -> str | None:
    """``NAME/VERSION`` of the first registered version of the checkpoint with this content, if any."""
    found = client.search_model_versions(f"tags.checkpoint_sha256 = '{sha256}'")
    if not found:
        return None
    first = min(found, key=lambda v: (v.creation_timestamp, v.name, int(v.version)))
    return f"{first.name}/{first.version}"
