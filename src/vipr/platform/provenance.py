"""Where a run came from, as tags of its tracked run and of every model version registered from it.

    dataset_name, dataset_version   the registered dataset version (``dataset_version``: ``V2``):
                                    the card's ``dataset`` when the data was opened as NAME:Vn,
                                    else the version whose digest equals the card's
                                    ``dataset_digest`` (one whose resolved source is the card's
                                    dataset first, then the oldest), looked up when tagging
    job_id, job_name                the job that ran it: env.json's ``job`` (the job worker sets
                                    VIPR_JOB_ID / VIPR_JOB_NAME for each job), else this process's

A missing metadata database gives no dataset tags (nothing is registered); one that cannot be
read warns and tags without them: provenance never fails a run's tracking or registration.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from vipr.engine.card import ModelCard
from vipr.engine.rundir import job_from_env


def provenance_tags(card: ModelCard | None, env: dict | None = None) -> dict:
    """The tags above (only those known) for a run with ``card`` whose env.json holds ``env``."""
    return {**dataset_tags(card), **job_tags(env)}


def dataset_tags(card: ModelCard | None) -> dict:
    """``dataset_name`` and ``dataset_version`` of the card's data, when it is a registered version."""
    from vipr.platform import dataset_refs

    if card is None:
        return {}
    pinned = dataset_refs.pinned(card.dataset)
    if pinned:
        return {"dataset_name": pinned[0], "dataset_version": f"V{pinned[1]}"}
    found = registered_by_digest(card.dataset_digest, card.dataset)
    return {"dataset_name": found.name, "dataset_version": f"V{found.version}"} if found else {}


def registered_by_digest(digest: str | None, source: str | None = None):
    """The registered ``DatasetVersion`` holding ``digest`` (that of ``source`` first, then the oldest), or None."""
    from vipr.platform import dataset_refs, datasets

    if not digest:
        return None
    try:
        found = datasets.with_digest(digest)
    except Exception as err:  # noqa: BLE001  (an unreachable database: tag without, say so)
        warnings.warn(f"dataset versions not looked up ({type(err).__name__}: {str(err).splitlines()[0]})",
                      stacklevel=2)
        return None
    if source and not source.startswith("builtin:"):
        source = dataset_refs.resolve_source(source)
    return next((v for v in found if v.resolved == source), found[0] if found else None)


def job_tags(env: dict | None = None) -> dict:
    """``job_id`` and ``job_name`` from env.json's ``job``, else from this process's environment."""
    job = (env or {}).get("job") or job_from_env() or {}
    return {f"job_{key}": value for key, value in job.items() if value}


def run_env(run_dir: Path | None) -> dict:
    """The run folder's env.json (it names the job), {} without one."""
    try:
        return json.loads((Path(run_dir) / "env.json").read_text()) if run_dir else {}
    except (OSError, ValueError):
        return {}
