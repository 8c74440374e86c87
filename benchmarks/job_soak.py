"""Soak test of the local job queue: many short jobs, two workers, one of them killed -9 again and again.

JOBS tiny `vipr pretrain` jobs (a checkpoint every 5 steps, so a killed attempt leaves something to
resume) run on two `vipr worker --cpus 1` processes sharing one SQLite file. KILLS times, at a random
moment while it runs a job, worker 0 gets SIGKILL and is started again at once: the new one
recovers what the dead one left (kills the orphaned attempt, marks it evicted, queues it again,
and the next attempt resumes the checkpoint). A monitor thread reads /proc every 0.1 s for the
jobs' processes (VIPR_JOB_ID in their environment) and counts the process groups -- attempts --
alive at once for each job.

Checked at the end: every job has one row, in a final state (succeeded, with its metrics.json
at its last step); no job ever had two attempts alive at once (as sampled); every run resumed
after an eviction loads its checkpoint (resumed_runs continued it with --resume; restarted_runs
were killed before their first checkpoint and started over). Prints one JSON line with the counts; exits 1 if any
check fails.

    python benchmarks/job_soak.py                       # 50 jobs, 3 kills
    python benchmarks/job_soak.py --jobs 4 --kills 1    # a small check of the script
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

from job_bench import TINY_PRETRAIN, start_worker, stop, submit, wait_final, wait_registered, workspace

# 60 steps (a few seconds of training after the seconds torch takes to import), a checkpoint every 5
COMMAND = [*TINY_PRETRAIN, "--data", "builtin:shapes?train=400&test=20&size=16", "--image-size", "16",
           "--epochs", "3", "--batch-size", "20", "--set", "train.checkpoint_every=5", "train.log_every=5"]
PROC = Path("/proc")


class Monitor(threading.Thread):
    """Samples, every ``period_s``, which process groups run each job; keeps the most seen at once."""

    def __init__(self, period_s: float = 0.1):
        super().__init__(daemon=True)
        self.period_s, self.most, self.samples, self.done = period_s, defaultdict(int), 0, threading.Event()

    def run(self) -> None:
        from vipr.jobs.process import _job_of, _stat

        while not self.done.is_set():
            groups = defaultdict(set)
            for entry in PROC.iterdir():
                if entry.name.isdigit() and (job := _job_of(int(entry.name))):
                    fields = _stat(int(entry.name))
                    if fields and fields[0] not in ("Z", "X"):
                        groups[job].add(fields[2])
            for job, found in groups.items():
                self.most[job] = max(self.most[job], len(found))
            self.samples += 1
            time.sleep(self.period_s)


def running_on(worker) -> bool:
    from vipr.jobs import store

    return any(j["worker_id"] and f"-{worker.pid}-" in j["worker_id"] for j in store.running_jobs())


def kill_and_restart(folder: Path, workers: list, kills: int, rng: random.Random, ids: list[str]) -> int:
    """SIGKILL worker 0 ``kills`` times, each at a random moment while it runs a job; how many happened."""
    from vipr.jobs import store

    done = 0
    while done < kills:
        time.sleep(rng.uniform(1.0, 10.0))  # seconds: an attempt spends its first few importing torch
        if all(store.find_job(i)["state"] in store.FINAL for i in ids):
            break  # the queue drained before every kill could land: fewer kills, said in the result
        if not running_on(workers[0]):
            continue
        workers[0].kill()
        workers[0].wait()
        done += 1
        workers[0] = start_worker(folder, "--cpus", "1", "--exit-when-idle", "5", log_name=f"worker0-{done}")
    return done


def check(rows: list[dict], monitor: Monitor) -> dict:
    """The end state's counts and every failed check."""
    from vipr.engine import checkpoint

    problems, resumed, restarted, loaded = [], 0, 0, 0
    if len({r["name"] for r in rows}) != len(rows):
        problems.append("a job has two rows")
    for row in rows:
        metrics = Path(row["run_dir"]) / "metrics.json"
        if row["state"] != "succeeded" or not metrics.is_file():
            problems.append(f"{row['name']}: {row['state']} ({row['reason']})")
        if row["attempts"] > 1:
            headers = [line for line in Path(row["log_path"]).read_text().splitlines() if line.startswith("--- ")]
            if any(line.endswith(" --resume") for line in headers):
                resumed += 1
            else:  # killed before its first checkpoint: started over
                restarted += 1
            try:
                checkpoint.load(Path(row["run_dir"]) / "checkpoint.pt")
                loaded += 1
            except Exception as err:  # any unreadable checkpoint is a finding, whatever its error
                problems.append(f"{row['name']}: checkpoint does not load ({err})")
    twice = sorted(job for job, most in monitor.most.items() if most > 1)
    problems += [f"job {job}: two attempts alive at once" for job in twice]
    states = defaultdict(int)
    for row in rows:
        states[row["state"]] += 1
    return {"states": dict(states), "attempts": sum(r["attempts"] for r in rows),
            "evicted_retries": sum(r["retries"] for r in rows), "resumed_runs": resumed, "restarted_runs": restarted,
            "resumed_checkpoints_loaded": loaded, "jobs_seen_by_monitor": len(monitor.most),
            "monitor_samples": monitor.samples, "max_attempts_alive_at_once": max(monitor.most.values(), default=0),
            "problems": problems}


def soak(jobs: int, kills: int, seed: int) -> dict:
    from vipr.jobs import store

    rng, began = random.Random(seed), time.time()
    with workspace() as folder:
        store.list_jobs()  # the tables, before the workers' first look
        monitor = Monitor()
        monitor.start()
        workers = [start_worker(folder, "--cpus", "1", "--exit-when-idle", "5", log_name=f"worker{i}") for i in (0, 1)]
        try:
            wait_registered(2)
            ids = [submit(folder, f"soak-{i}", COMMAND, (f"retry.max_retries={kills + 2}",))["id"]
                   for i in range(jobs)]
            done = kill_and_restart(folder, workers, kills, rng, ids)
            rows = wait_final(ids, timeout=120 + 30 * jobs)
        finally:
            monitor.done.set()
            for worker in workers:
                stop(worker)
        result = check(rows, monitor)
    return {"benchmark": "job_soak", "jobs": jobs, "kills_asked": kills, "kills": done, "seed": seed,
            "seconds": round(time.time() - began, 1), **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50, help="short pre-training jobs (default 50)")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs of worker 0 (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="of the kill moments (default 0)")
    args = parser.parse_args()
    result = soak(args.jobs, args.kills, args.seed)
    print(json.dumps(result))
    sys.exit(1 if result["problems"] else 0)


if __name__ == "__main__":
    main()
