"""The one resume rule of every loop (pre-training, NAS train, NAS search): the same config digest.

A checkpoint records ``config_digest`` (vipr.config) of the settings that change what a run
computes (run-only keys such as progress, threads and device left out); ``--resume`` continues
it only under the same digest.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vipr.errors import CheckpointError


def check_same_config(saved_digest: str | None, digest: str, path: Path,
                      changes: Callable[[], str] | None = None) -> None:
    """CheckpointError unless the checkpoint at ``path`` was written under ``digest``.

    ``changes`` (called only on a mismatch) says what differs, e.g. ``vipr.config.describe_changes``."""
    if saved_digest != digest:
        detail = f" ({changes()})" if changes is not None else ""
        raise CheckpointError(f"{path} was written with another configuration{detail}; resume with the same "
                              "options, or start a new --out folder")
