"""What the local job queue adds to a command: submit -> succeeded for the cheapest real vipr command.

One `vipr worker` (default settings: 0.5 s poll) on a fresh SQLite workspace; RUNS jobs one after
another, each submitted with `vipr job submit` (its own process, as a user runs it) and watched
until its row says succeeded. The command (job_bench.NOOP: a kNN probe of a random tiny backbone
on 30 images of 8 px) spends its seconds importing torch, so the figure of interest is the
overhead: total minus the command's own run time (the row's started -> finished).

    python benchmarks/job_overhead.py [--runs 20]

Prints one JSON line: medians in seconds of total, submit (the CLI process), queue wait
(submitted -> started: the poll), run, and overhead, with the machine.
"""

from __future__ import annotations

import argparse
import json
import time

from benchmarks_common import machine_info
from job_bench import NOOP, median, start_worker, stop, submit, wait_final, wait_registered, workspace


def measure(runs: int) -> dict:
    from vipr.jobs import store

    with workspace() as folder:
        store.list_jobs()  # the tables, before the worker's first look
        worker = start_worker(folder)
        try:
            wait_registered()
            rows = []
            for i in range(runs):
                began = time.time()
                job = submit(folder, f"noop-{i}", NOOP)
                submitted = time.time()
                row = wait_final([job["id"]], timeout=600, poll_s=0.01)[0]
                if row["state"] != "succeeded":
                    raise SystemExit(f"job noop-{i} {row['state']} ({row['reason']}); see {row['log_path']}")
                rows.append({"total": time.time() - began, "submit": submitted - began,
                             "queue_wait": row["started"] - row["submitted"], "run": row["finished"] - row["started"]})
        finally:
            stop(worker)
    medians = {f"median_{key}_s": round(median([r[key] for r in rows]), 3) for key in rows[0]}
    overhead = median([r["total"] - r["run"] for r in rows])
    return {"benchmark": "job_overhead", "runs": runs, "command": " ".join(NOOP), **medians,
            "median_overhead_s": round(overhead, 3), "machine": machine_info()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="jobs, one after another (default 20)")
    print(json.dumps(measure(parser.parse_args().runs)))


if __name__ == "__main__":
    main()
