"""Two jobs sharing a machine through the local queue: does the cpu budget (OMP_NUM_THREADS = each job's
cores) keep them from thrashing?

On one `vipr worker --cpus 2`: first one `vipr pretrain` job with resources.cpu=2 alone, then two
identical jobs with resources.cpu=1 submitted together (the worker starts both at once). Each
job's images/s is read from its run folder's metrics.jsonl epoch records (images / epoch seconds,
the first epoch left out as warm-up when there are more). With no thrashing, the two shared jobs
together reach about the lone job's rate (shared_total_ratio ~ 1, or above: two 1-thread
processes scale better than one 2-thread process on small models), each about half of it.

    python benchmarks/job_sharing.py            # ResNet-18, 32 px, 3 epochs of 2,000 images
    python benchmarks/job_sharing.py --quick    # the tiny backbone, seconds (checks the script)

Prints one JSON line: each job's images/s, shared_total_ratio = (a + b) / alone, and
shared_each_ratio = mean(a, b) / alone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks_common import machine_info
from job_bench import TINY_PRETRAIN, start_worker, stop, submit, wait_final, wait_registered, workspace

FULL = ["vipr", "pretrain", "--data", "builtin:shapes?train=2000&test=100", "--backbone", "resnet18",
        "--image-size", "32", "--epochs", "3", "--batch-size", "128", "--no-progress", "--no-track"]
QUICK = [*TINY_PRETRAIN, "--data", "builtin:shapes?train=400&test=20&size=16", "--image-size", "16",
         "--epochs", "2", "--batch-size", "40"]


def images_per_s(run_dir: Path) -> float:
    """Images per second over the run's epochs (the first left out as warm-up when there are more)."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    epochs = [r for r in lines if "epoch_seconds" in r]
    epochs = epochs[1:] if len(epochs) > 1 else epochs
    images = sum(r["images_per_s"] * r["epoch_seconds"] for r in epochs)
    return images / sum(r["epoch_seconds"] for r in epochs)


def run_jobs(folder: Path, command: list[str], names: list[str], cpu: int) -> list[float]:
    jobs = [submit(folder, name, command, (f"resources.cpu={cpu}", "resources.memory=2Gi")) for name in names]
    rows = wait_final([j["id"] for j in jobs], timeout=3600)
    for row in rows:
        if row["state"] != "succeeded":
            raise SystemExit(f"job {row['name']} {row['state']} ({row['reason']}); see {row['log_path']}")
    return [images_per_s(Path(r["run_dir"])) for r in rows]


def measure(quick: bool) -> dict:
    from vipr.jobs import store

    command = QUICK if quick else FULL
    with workspace() as folder:
        store.list_jobs()  # the tables, before the worker's first look
        worker = start_worker(folder, "--cpus", "2")
        try:
            wait_registered()
            (alone,) = run_jobs(folder, command, ["alone"], cpu=2)
            shared = run_jobs(folder, command, ["shared-a", "shared-b"], cpu=1)
        finally:
            stop(worker)
    return {"benchmark": "job_sharing", "quick": quick, "command": " ".join(command),
            "alone_images_per_s": round(alone, 1), "shared_images_per_s": [round(x, 1) for x in shared],
            "shared_total_ratio": round(sum(shared) / alone, 3), "shared_each_ratio": round(sum(shared) / 2 / alone, 3),
            "machine": machine_info()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the tiny backbone for a few seconds")
    print(json.dumps(measure(parser.parse_args().quick)))


if __name__ == "__main__":
    main()
