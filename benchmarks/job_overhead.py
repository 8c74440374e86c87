"""What the local job queue adds to a command: submit -> succeeded, for a no-op job and for the cheapest torch job.

One `vipr worker` (default settings) on a fresh SQLite workspace; RUNS jobs of each command one
after another, each submitted with `vipr job submit` (its own process, as a user runs it) and
watched until its row says succeeded. The no-op job is `vipr version` (job_bench.NOOP: no heavy
import); the torch job a kNN probe of a random tiny backbone (job_bench.KNN_PROBE), whose run is
almost all importing torch. Overhead = total minus the command's own run (the row's started ->
finished).

    python benchmarks/job_overhead.py [--runs 20]

Prints one JSON line: for each command, medians in seconds of total, submit (the CLI process),
queue wait (submitted -> started: the poll), run and overhead; with the machine.
"""

from __future__ import annotations

import argparse
import json
import time

from benchmarks_common import machine_info
from job_bench import KNN_PROBE, NOOP, median, start_worker, stop, submit, wait_final, wait_registered, workspace

COMMANDS = {"noop": NOOP, "knn_probe": KNN_PROBE}


def one_job(folder, name: str, command: list[str]) -> dict:
    """Submit ``command`` and wait for its success; its phases in seconds."""
    began = time.time()
    job = submit(folder, name, command)
    submitted = time.time()
    row = wait_final([job["id"]], timeout=600, poll_s=0.01)[0]
    if row["state"] != "succeeded":
        raise SystemExit(f"job {name} {row['state']} ({row['reason']}); see {row['log_path']}")
    return {"total": time.time() - began, "submit": submitted - began,
            "queue_wait": row["started"] - row["submitted"], "run": row["finished"] - row["started"]}


def summary(command: list[str], rows: list[dict]) -> dict:
    medians = {f"median_{key}_s": round(median([r[key] for r in rows]), 3) for key in rows[0]}
    return {"command": " ".join(command), **medians,
            "median_overhead_s": round(median([r["total"] - r["run"] for r in rows]), 3),
            "max_total_s": round(max(r["total"] for r in rows), 3)}


def measure(runs: int) -> dict:
    from vipr.jobs import store

    with workspace() as folder:
        store.list_jobs()  # the tables, before the worker's first look
        worker = start_worker(folder)
        try:
            wait_registered()
            results = {key: summary(command, [one_job(folder, f"{key.replace('_', '-')}-{i}", command)
                                              for i in range(runs)])
                       for key, command in COMMANDS.items()}
        finally:
            stop(worker)
    return {"benchmark": "job_overhead", "runs": runs, **results, "machine": machine_info()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="jobs of each command, one after another (default 20)")
    print(json.dumps(measure(parser.parse_args().runs)))


if __name__ == "__main__":
    main()
