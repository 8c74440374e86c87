"""The job table on a real SQLite file: rows, the atomic state changes, and processes racing to claim."""

import time
from pathlib import Path

import pytest

from vipr.errors import ViprError
from vipr.jobs import store
from vipr.jobs.spec import parse_spec


def test_a_submitted_job_is_one_queued_row_found_by_id_or_name(kit):
    workspace = kit.root
    spec = kit.make_spec("first", inputs=[{"kind": "dataset", "ref": "builtin:shapes"}], priority=3)
    job = store.insert_job(spec, Path.cwd())
    assert len(job["id"]) == 8 and job["state"] == "queued" and job["attempts"] == 0
    assert store.get_job(job["id"]) == store.get_job("first")
    row = store.get_job("first")
    assert parse_spec(row["spec"]) == spec  # the spec round-trips through its JSON
    assert row["datasets"] == ["builtin:shapes"] and row["priority"] == 3
    assert row["run_dir"] == str(workspace / "runs" / "first")
    assert row["log_path"] == str(workspace / "ws" / "jobs" / f"{job['id']}.log")
    assert (workspace / "ws" / "vipr.db").is_file()


def test_names_are_unique_and_an_unknown_job_says_how_to_list_them(kit):
    kit.submit("twice")
    with pytest.raises(ViprError, match="a job named twice already exists; pick another --name"):
        kit.submit("twice")
    with pytest.raises(store.JobNotFound, match=r"no job 'nope' in the local queue .*; `vipr job list` lists"):
        store.get_job("nope")


def test_the_queue_order_is_priority_then_submit_order(kit):
    for name, priority in (("low", 0), ("high", 5), ("low-later", 0), ("high-later", 5)):
        kit.submit(name, priority=priority)
    assert [j["name"] for j in store.list_jobs(("queued",))] == ["high", "high-later", "low", "low-later"]


def test_a_claim_wins_once(kit):
    job = kit.submit("claimed")
    first = store.claim(job["id"], "w1", "host")
    assert first["state"] == "running" and first["attempts"] == 1 and first["worker_id"] == "w1"
    assert store.claim(job["id"], "w2", "host") is None
    assert not store.finish(job["id"], "w2", "succeeded")  # only its own worker ends an attempt
    assert store.finish(job["id"], "w1", "failed", exit_code=3, reason="failed")
    assert store.get_job("claimed")["state"] == "failed"


def test_cancel_retry_and_delete_move_only_the_states_they_may(kit):
    queued = kit.submit("q")
    assert store.request_cancel(queued) == "cancelled"
    assert store.get_job("q")["reason"] == "cancelled"
    assert store.retry(queued) and store.get_job("q")["state"] == "queued"
    running = store.claim(queued["id"], "w", "host")
    assert store.request_cancel(running) == "running" and store.cancel_flags([running["id"]]) == {running["id"]}
    assert not store.retry(running) and not store.delete_job(running)
    store.finish(running["id"], "w", "cancelled")
    assert store.delete_job(running) and store.list_jobs() == []


def test_processes_racing_on_one_sqlite_file_never_take_the_same_job(kit):
    kit.race_for_claims(jobs=24, racers=3)


def test_heartbeat_says_which_jobs_are_still_this_workers(kit):
    store.add_worker("w", 1, 2.0, 2**30)
    mine, lost = kit.submit("mine"), kit.submit("lost")
    store.claim(mine["id"], "w", "host")
    store.claim(lost["id"], "w", "host")
    store.requeue(lost["id"], "w", "evicted", None, counted=True)  # as a recoverer would
    before = time.time()
    assert store.heartbeat("w", [mine["id"], lost["id"]]) == {mine["id"]}
    assert store.get_job("mine")["heartbeat"] >= before and store.get_job("lost")["retries"] == 1
    assert store.touch_worker("w") and [w["id"] for w in store.workers()] == ["w"]
    store.remove_worker("w")
    assert not store.touch_worker("w")


def test_a_table_another_process_created_between_check_and_create_is_no_error(kit, monkeypatch):
    from sqlalchemy import Table

    from vipr.platform import db

    store.list_jobs()  # the tables exist now, as after another worker's first look
    create = Table.create
    monkeypatch.setattr(Table, "create", lambda self, bind, checkfirst=True: create(self, bind, checkfirst=False))
    db._create.__wrapped__(db.database_url(), "jobs", store.JOBS)  # CREATE TABLE fails: no DatabaseError
