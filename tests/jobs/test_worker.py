"""The worker, running real subprocesses (tests/jobs/fake_command.py) from a real SQLite file: exits, retries,
timeouts, the budget and the queue order, its own SIGTERM, and recovery after a worker is killed -9."""

import os
import shutil
import signal
import time

import pytest

from vipr.errors import RegistryError
from vipr.jobs import process, store

FAILS_ONCE = {"FAKE_FAIL_ATTEMPTS": "1"}


def starts(kit, job):
    return [a for a in kit.attempts(job) if a["event"] == "start"]


def test_a_job_succeeds_with_its_threads_identity_and_tracking_run(kit):
    job = kit.submit("ok", resources={"cpu": 2.5})
    kit.run_worker(cpus=4)
    done = store.get_job("ok")
    assert (done["state"], done["exit_code"], done["attempts"], done["reason"]) == ("succeeded", 0, 1, None)
    assert done["tracking_run_id"] == f"run-{job['id']}"  # read from RUN_DIR/mlflow_run.json for this workspace
    start = starts(kit, job)[0]
    assert (start["OMP_NUM_THREADS"], start["MKL_NUM_THREADS"]) == ("2", "2")
    assert (start["VIPR_JOB_ID"], start["VIPR_JOB_NAME"]) == (job["id"], "ok")
    assert start["pgid"] == start["pid"]  # its own process group
    log = open(done["log_path"]).read()
    assert "attempt 1 of job ok" in log and '"event": "end"' in log


def test_a_failure_records_its_exit_code_and_a_retry_by_policy_resumes(kit):
    failed = kit.submit("fails", env={"FAKE_EXIT": "3"})  # retry.on defaults to evicted only
    retried = kit.submit("retried", env=FAILS_ONCE, retry={"max_retries": 1, "on": ["failed"]})
    kit.run_worker()
    assert (store.get_job("fails")["state"], store.get_job("fails")["exit_code"]) == ("failed", 3)
    assert store.get_job("fails")["reason"] == "failed" and len(starts(kit, failed)) == 1
    done = store.get_job("retried")
    assert (done["state"], done["attempts"], done["retries"]) == ("succeeded", 2, 1)
    first, second = starts(kit, retried)
    assert "--resume" not in first["argv"] and second["argv"][-1] == "--resume"  # the same run folder, continued


def test_a_timeout_stops_with_sigterm_and_sigkills_what_ignores_it(kit):
    kit.submit("deaf", seconds=60, timeout=1, env={"FAKE_IGNORE_TERM": "1"})
    polite = kit.submit("polite", seconds=60, timeout=1, retry={"max_retries": 1, "on": ["timeout"]})
    began = time.monotonic()
    kit.run_worker(grace_s=0.5)
    assert time.monotonic() - began < 15
    deaf = store.get_job("deaf")
    assert (deaf["state"], deaf["reason"], deaf["exit_code"]) == ("failed", "timeout", -signal.SIGKILL)
    done = store.get_job("polite")  # saved its checkpoint on SIGTERM (exit 130), retried once, resumed
    assert (done["state"], done["reason"], done["exit_code"], done["attempts"]) == ("failed", "timeout", 130, 2)
    assert starts(kit, polite)[1]["argv"][-1] == "--resume"


def test_the_queue_runs_by_priority_then_submit_order_within_the_cpu_budget(kit):
    names = [("low", 0), ("high", 5), ("low-later", 0)]
    jobs = [kit.submit(name, seconds=0.2, priority=priority) for name, priority in names]
    kit.run_worker(cpus=1)  # two 1-cpu jobs on a 1-cpu worker: one after the other
    spans = {}
    for job in jobs:
        lines = kit.attempts(job)
        spans[job["name"]] = (lines[0]["time"], lines[-1]["time"])
    order = sorted(spans, key=lambda n: spans[n][0])
    assert order == ["high", "low", "low-later"]
    assert all(spans[a][1] <= spans[b][0] for a, b in zip(order, order[1:]))  # never two at once


def test_jobs_share_the_budget_and_a_job_bigger_than_the_worker_waits_for_another(kit):
    big = kit.submit("big", seconds=0.3, priority=9, resources={"cpu": 2})
    halves = [kit.submit(f"half-{i}", seconds=0.3, resources={"cpu": 1}) for i in range(2)]
    kit.submit("huge", resources={"cpu": 3})
    kit.run_worker(cpus=2)
    span = {j["name"]: (kit.attempts(j)[0]["time"], kit.attempts(j)[-1]["time"]) for j in (big, *halves)}
    assert span["big"][1] <= min(span["half-0"][0], span["half-1"][0])  # alone: it holds both cores
    assert max(span["half-0"][0], span["half-1"][0]) < min(span["half-0"][1], span["half-1"][1])  # side by side
    assert store.get_job("huge")["state"] == "queued"  # 3 cpus: left for a bigger worker


def test_a_stopped_worker_queues_its_jobs_again_uncounted_and_they_resume(kit, worker_process):
    job = kit.submit("long", seconds=60, env={"FAKE_LATER_SECONDS": "0"})
    worker = worker_process()
    kit.wait_until(lambda: starts(kit, job), what="first attempt")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    stopped = store.get_job("long")
    assert (stopped["state"], stopped["reason"], stopped["retries"], stopped["exit_code"]) == \
           ("queued", "stopped", 0, 130)  # vipr saved its checkpoint on SIGTERM
    assert store.workers() == []
    kit.run_worker()
    assert store.get_job("long")["state"] == "succeeded" and starts(kit, job)[1]["argv"][-1] == "--resume"


def test_a_worker_killed_9_leaves_jobs_the_next_worker_recovers_exactly_once(kit, worker_process):
    saved = kit.submit("saved", seconds=60, env={"FAKE_LATER_SECONDS": "0"})  # retry.on: [evicted], 2 retries
    lost = kit.submit("lost", seconds=60, retry={"max_retries": 0})
    worker = worker_process(cpus=2)
    kit.wait_until(lambda: starts(kit, saved) and starts(kit, lost), what="both attempts")
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    orphans = [starts(kit, j)[0]["pid"] for j in (saved, lost)]
    assert all(process.pid_alive(pid) for pid in orphans)  # the attempts outlive their worker
    kit.run_worker()
    assert not any(process.pid_alive(pid) for pid in orphans)  # killed before anything ran again
    done = store.get_job("saved")
    assert (done["state"], done["attempts"], done["retries"], done["reason"]) == ("succeeded", 2, 1, "evicted")
    lines = kit.attempts(saved)
    assert [line["event"] for line in lines] == ["start", "start", "end"] and lines[-1]["code"] == 0
    assert lines[1]["argv"][-1] == "--resume" or "--resume" not in lines[1]["argv"]  # resumes only with a checkpoint
    assert (store.get_job("lost")["state"], store.get_job("lost")["reason"]) == ("failed", "evicted")
    assert [w["pid"] for w in store.workers()] == []  # the dead worker's row is gone too


def test_several_worker_processes_never_run_one_job_twice(kit, worker_process):
    jobs = [kit.submit(f"many-{i}", seconds=0.1) for i in range(9)]
    workers = [worker_process(cpus=1, exit_when_idle=1.0) for _ in range(3)]
    for worker in workers:
        assert worker.wait(timeout=60) == 0
    assert {store.get_job(j["id"])["state"] for j in jobs} == {"succeeded"}
    assert all(len(starts(kit, j)) == 1 for j in jobs)  # one attempt each: no job was taken twice
    ran_by = {store.get_job(j["id"])["worker_id"] for j in jobs}
    assert len(ran_by) >= 2 and os.getpid() not in ran_by  # the work was shared


def test_a_success_registers_the_checkpoint_and_a_registration_error_fails_the_job(kit, monkeypatch):
    def register(run_dir, name, alias, env):
        if name == "broken":
            raise RegistryError(f"{run_dir} holds no checkpoint.pt or classifier.pt")
        assert env["VIPR_JOB_NAME"] == "registered" and alias == "candidate"
        return f"{name}/7"

    monkeypatch.setattr("vipr.jobs.worker.register_run", register)  # the real registry: the slow test below
    kit.submit("registered", outputs={"register": {"name": "model", "alias": "candidate"}})
    kit.submit("unregistrable", outputs={"register": {"name": "broken"}})
    kit.run_worker()
    done = store.get_job("registered")
    assert (done["state"], done["model_version"]) == ("succeeded", "model/7")
    failed = store.get_job("unregistrable")
    assert (failed["state"], failed["exit_code"]) == ("failed", 0)
    assert failed["reason"].startswith("registration failed: ") and "holds no checkpoint.pt" in failed["reason"]


@pytest.mark.slow
def test_the_registry_gets_the_run_folders_checkpoint(kit, pretrain_run):
    job = kit.submit("real-registry", outputs={"register": {"name": "job-model", "alias": "candidate"}})
    shutil.copytree(pretrain_run, job["run_dir"])  # the fake command leaves a real run folder as it is
    kit.run_worker()
    done = store.get_job("real-registry")
    assert (done["state"], done["model_version"]) == ("succeeded", "job-model/1"), done["reason"]
    from vipr.platform import registry

    assert registry.show("job-model@candidate")["version"] == 1
