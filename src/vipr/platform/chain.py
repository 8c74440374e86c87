"""The chain from data to deployed model, for ``vipr model show``: dataset version -> job -> run -> model -> deployments.

Built from a registered version's record (vipr.platform.registry.show) and its tags:

    dataset      ``dataset_name`` / ``dataset_version`` tags (vipr.platform.provenance), with the
                 registered digest and source; a version tagged before its data was registered is
                 found by the ``dataset_digest`` tag; unregistered data shows its source and digest
    job          ``job_id`` / ``job_name`` tags (None: not made by a job)
    run          the ``run_dir`` tag and the MLflow run id of the version
    model        NAME/VERSION, and its parent NAME/VERSION (the lineage tags), when registered
    deployments  the rows ``vipr serve`` wrote for this version (vipr.platform.deployments)
"""

from __future__ import annotations

from vipr.platform import dataset_refs, datasets, deployments
from vipr.platform.provenance import registered_by_digest


def build_chain(record: dict) -> dict:
    """The chain of one registered version's record, as plain data (what ``--json`` prints under ``chain``)."""
    tags = record["tags"]
    job = {"id": tags.get("job_id"), "name": tags.get("job_name")}
    return {"dataset": _dataset(tags), "job": job if any(job.values()) else None,
            "run": {"dir": tags.get("run_dir"), "id": record.get("run_id"), "name": record.get("run_name")},
            "model": f"{record['name']}/{record['version']}", "parent": record.get("parent_model"),
            "deployments": deployments.of_model(record["name"], record["version"])}


def _dataset(tags: dict) -> dict:
    """The dataset version of the tags, with what the registry says of it (or just source and digest)."""
    found = None
    if tags.get("dataset_name") and tags.get("dataset_version"):
        try:
            found = dataset_refs.get(f"{tags['dataset_name']}:{tags['dataset_version']}")
        except datasets.DatasetError:  # tagged with a version this database does not hold
            found = None
    else:
        found = registered_by_digest(tags.get("dataset_digest"), tags.get("dataset"))
    ref = found.ref if found else (f"{tags['dataset_name']}:{tags['dataset_version']}"
                                   if tags.get("dataset_name") else None)
    return {"ref": ref, "registered": found is not None, "digest": found.digest if found else tags.get("dataset_digest"),
            "source": found.resolved if found else tags.get("dataset")}


def format_chain(chain: dict) -> list[str]:
    """The chain as ``vipr model show`` prints it: one line of arrows, then a line per link."""
    data, job, run = chain["dataset"], chain["job"], chain["run"]
    data_text = data["ref"] or data["source"] or "-"
    digest = f"digest {data['digest']}" if data["digest"] else "no digest"
    data_line = (f"{data_text} ({digest})" if data["registered"] else
                 f"{data_text} ({digest}; not a registered dataset version)")
    job_text = " ".join(str(v) for v in (job["id"], job["name"] and f"({job['name']})") if v) if job else "-"
    run_text = run["dir"] or "-"
    if run["id"]:
        run_text += f" (MLflow run {run['id']}" + (f", {run['name']})" if run["name"] else ")")
    serving = [_deployment(d) for d in chain["deployments"]] or ["none (vipr serve " + chain["model"] + ")"]
    running = sum(d["status"] == "running" for d in chain["deployments"])
    arrows = [f"dataset {data_text}", *([f"job {job['id'] or job['name']}"] if job else []),
              f"run {(run['id'] or '-')[:8]}", f"model {chain['model']}",
              *([f"parent {chain['parent']}"] if chain["parent"] else []),
              f"{running} of {len(chain['deployments'])} deployments running"]
    rows = {"dataset": data_line, "job": job_text, "run": run_text, "model": chain["model"],
            "parent": chain["parent"] or "-", "deployments": serving[0]}
    width = max(len(key) for key in rows)
    lines = ["  chain:", "    " + " -> ".join(arrows)]
    lines += [f"    {key.ljust(width)}  {value}" for key, value in rows.items()]
    lines += [f"    {'':{width}}  {more}" for more in serving[1:]]
    return lines


def _deployment(row: dict) -> str:
    state = "running" if row["status"] == "running" else (
        "stopped (its process is gone)" if row["stale"] else f"stopped {row['stopped']}")
    return f"{row['host']}:{row['port']} on {row['machine']} (pid {row['pid']}), started {row['started']}, {state}"
