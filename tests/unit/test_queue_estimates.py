"""Estimated start times in the job JSON (webapp.jobs.queue_info through the API): from the
queue index in etcd, each claimed job ending by its start plus its time limit."""

from __future__ import annotations

import time

from pink.states import JobState
from pink.store import QueueEntry


def get(client, as_user, job_id, user="alice"):
    resp = client.get(f"/api/v1/jobs/{job_id}", headers=as_user(user))
    assert resp.status_code == 200
    return resp.json["job"]


def test_queued_jobs_start_by_the_limits_of_the_jobs_ahead(client, cluster, as_user):
    cluster.add_worker("w1", max_parallel_jobs=1)
    started = time.time() - 100
    running = cluster.add_job("bob", JobState.RUNNING, timeout_s=600, started_at=started)
    first = cluster.add_job("alice", timeout_s=300)
    second = cluster.add_job("alice", timeout_s=60)
    assert get(client, as_user, running.id, "bob")["estimated_start_at"] is None  # not queued
    job = get(client, as_user, first.id)
    assert job["queue_position"] == 1 and job["waiting_reason"] == "waiting for a free job slot (1 running)"
    assert abs(job["estimated_start_at"] - (started + 600)) < 1e-3
    assert abs(get(client, as_user, second.id)["estimated_start_at"] - (started + 900)) < 1e-3
    # The listing carries it too.
    listed = {j["id"]: j for j in client.get("/api/v1/jobs", headers=as_user("alice")).json["jobs"]}
    assert abs(listed[second.id]["estimated_start_at"] - (started + 900)) < 1e-3


def test_a_starting_job_counts_from_now(client, cluster, as_user):
    cluster.add_worker("w1", max_parallel_jobs=1)
    cluster.add_job("bob", JobState.STARTING, timeout_s=600)
    queued = cluster.add_job("alice", timeout_s=60)
    before = time.time()
    eta = get(client, as_user, queued.id)["estimated_start_at"]
    assert before + 600 <= eta <= time.time() + 600


def test_more_slots_start_sooner_and_a_job_that_fits_starts_now(client, cluster, as_user):
    cluster.add_worker("w1", max_parallel_jobs=2)
    cluster.add_job("bob", JobState.RUNNING, timeout_s=600, started_at=time.time())
    queued = cluster.add_job("alice", timeout_s=60)
    job = get(client, as_user, queued.id)
    assert job["waiting_reason"] == "starting" and job["estimated_start_at"] <= time.time()


def test_no_estimate_on_a_drained_or_dead_worker(client, cluster, as_user):
    cluster.add_worker("w1", max_parallel_jobs=1)
    queued = cluster.add_job("alice", timeout_s=60)
    cluster.store.set_drained("w1", True)
    job = get(client, as_user, queued.id)
    assert "drained" in job["waiting_reason"] and job["estimated_start_at"] is None
    cluster.store.set_drained("w1", False)
    assert get(client, as_user, queued.id)["estimated_start_at"] is not None
    cluster.worker_dies("w1")
    job = get(client, as_user, queued.id)
    assert "down" in job["waiting_reason"] and job["estimated_start_at"] is None


def test_queue_entries_carry_the_start_and_read_a_newer_releases_fields():
    entry = QueueEntry("j1", "alice", JobState.RUNNING, 0, 60, 0, 1.0, started_at=5.0)
    assert QueueEntry.from_json(entry.to_json()).started_at == 5.0
    newer = entry.to_json().replace(b"}", b',"from_the_future":1}')
    assert QueueEntry.from_json(newer) == entry


def test_a_submissions_answer_leaves_the_queue_position_to_the_next_get(client, cluster, as_user):
    image = "sha256:" + "ef" * 32
    cluster.add_worker("w1", max_parallel_jobs=1, images=(image,))
    cluster.add_job("bob", JobState.RUNNING, timeout_s=600, started_at=time.time())
    resp = client.post("/api/v1/jobs", query_string={"image": image}, data=b"", headers=as_user("root"))
    assert resp.status_code == 201, resp.json
    answer = resp.json["job"]
    assert answer["state"] == "QUEUED"
    assert (answer["queue_position"], answer["waiting_reason"], answer["estimated_start_at"]) == (None, "", None)
    job = get(client, as_user, answer["id"], "root")
    assert job["queue_position"] == 1 and job["waiting_reason"] == "waiting for a free job slot (1 running)"
    assert job["estimated_start_at"] is not None
