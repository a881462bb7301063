"""The web server's views through Flask's test client, on an in-memory etcd: request limits,
job spec parsing, Range downloads, cancel races, and the janitor's sweep decisions."""

from __future__ import annotations

import hashlib
import io
import time

import pytest

from pink.config import WebConfig
from pink.states import JobState
from webapp.janitor import sweep

pytestmark = pytest.mark.unit


# ----- request bodies -------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "status"), [
    ("/api/v1/tokens", 413), ("/login", 413),
    # Refused for who sends them, before their body is read.
    ("/api/v1/layers", 401), ("/api/v1/users", 401), ("/api/v1/jobs", 401),
])
def test_an_anonymous_body_over_the_limit_is_refused_unread(client, path, status):
    body = b"x" * (64 << 10) + b"x"
    resp = client.post(path, data=body, content_type="application/json")
    assert resp.status_code == status
    assert "error" in resp.get_json()


def test_a_logged_in_json_body_over_the_limit_is_refused(client, as_user):
    resp = client.post("/api/v1/layers", data=b"[" * (64 << 10 + 1), headers=as_user("alice"),
                       content_type="application/json")
    assert resp.status_code == 413


def test_a_body_under_the_limit_is_read(client):
    resp = client.post("/api/v1/tokens", json={"username": "alice", "password": "alice-password-1"})
    assert resp.status_code == 201 and resp.get_json()["user"] == "alice"


def test_a_body_without_length_is_read_no_further_than_the_limit(client):
    body = io.BytesIO(b"{" + b" " * (1 << 20))  # chunked, as gunicorn passes it on: no length
    resp = client.post("/api/v1/tokens", input_stream=body, content_type="application/json",
                       headers={"Transfer-Encoding": "chunked"},
                       environ_overrides={"wsgi.input_terminated": True})
    assert resp.status_code in (401, 413)
    assert body.tell() <= 64 << 10


# ----- job spec parsing -----------------------------------------------------------------------
@pytest.mark.parametrize(("query", "message"), [
    ({"gpus": "two"}, "gpus must be a whole number"),
    ({"gpus": "65"}, "gpus must be between 0 and 64"),
    ({"timeout": "0"}, "timeout must be between"),
    ({"output": "everything"}, "output must be one of"),
    ({"name": "a\nb"}, "printable"),
    ({"image": "sha256:xyz"}, "image must look like"),
    ({"omitted_layers": "sha256:1,sha256:2"}, "omitted_layers"),
    ({"priority": "5"}, "priority must be between -100 and 0"),
])
def test_a_bad_job_spec_is_a_400_naming_the_field(client, as_user, cluster, query, message):
    cluster.add_worker()
    resp = client.post("/api/v1/jobs", query_string=query, data=b"", headers=as_user("alice"))
    assert resp.status_code == 400, resp.get_json()
    assert message in resp.get_json()["error"]


def test_admins_may_raise_priority(client, as_user, cluster):
    cluster.add_worker()
    resp = client.post("/api/v1/jobs", query_string={"priority": "500"}, data=b"", headers=as_user("root"))
    assert "priority must be between -100 and 100" in resp.get_json()["error"]


def test_submitting_needs_a_login(client):
    assert client.post("/api/v1/jobs", data=b"x").status_code == 401


# ----- downloads ------------------------------------------------------------------------------
ARCHIVE = bytes(range(256)) * 4  # 1 KiB


@pytest.fixture
def finished(cluster):
    """A SUCCEEDED job of alice's whose worker holds a 1 KiB archive."""
    cluster.add_worker()
    job = cluster.add_job(state=JobState.SUCCEEDED)
    cluster.links.files[(job.id, "archive")] = ARCHIVE
    return cluster.rewrite(job, output_bytes=len(ARCHIVE), output_sha256=hashlib.sha256(ARCHIVE).hexdigest())


def test_a_download_streams_the_whole_archive_with_its_checksum(client, as_user, finished):
    resp = client.get(f"/api/v1/jobs/{finished.id}/output", headers=as_user("alice"))
    assert resp.status_code == 200
    assert resp.data == ARCHIVE
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert resp.headers["X-Pink-Sha256"] == hashlib.sha256(ARCHIVE).hexdigest()


@pytest.mark.parametrize(("header", "status", "start", "end"), [
    ("bytes=0-", 206, 0, 1023),
    ("bytes=100-", 206, 100, 1023),
    ("bytes=100-199", 206, 100, 199),
    ("bytes=1000-5000", 206, 1000, 1023),  # an end past the file is cut to it
    ("bytes=1023-1023", 206, 1023, 1023),
])
def test_a_range_download_sends_exactly_that_range(client, as_user, finished, header, status, start, end):
    resp = client.get(f"/api/v1/jobs/{finished.id}/output", headers={**as_user("alice"), "Range": header})
    assert resp.status_code == status
    assert resp.data == ARCHIVE[start:end + 1]
    assert resp.headers["Content-Range"] == f"bytes {start}-{end}/{len(ARCHIVE)}"
    assert int(resp.headers["Content-Length"]) == end - start + 1


@pytest.mark.parametrize("header", ["bytes=1024-", "bytes=200-100", "bytes=-5", "items=0-1", "bytes=0-1,5-6"])
def test_an_unsatisfiable_range_is_a_416_with_the_size(client, as_user, finished, header):
    resp = client.get(f"/api/v1/jobs/{finished.id}/output", headers={**as_user("alice"), "Range": header})
    assert resp.status_code == 416
    assert resp.headers["Content-Range"] == f"bytes */{len(ARCHIVE)}"


def test_head_tells_the_size_without_reading_the_worker(client, as_user, finished, cluster):
    cluster.links.files.clear()  # nothing to read: HEAD must not try
    resp = client.head(f"/api/v1/jobs/{finished.id}/output", headers=as_user("alice"))
    assert resp.status_code == 200 and resp.headers["Content-Length"] == str(len(ARCHIVE))


def test_other_users_get_404_and_admins_get_the_archive(client, as_user, finished):
    assert client.get(f"/api/v1/jobs/{finished.id}/output", headers=as_user("bob")).status_code == 404
    assert client.get(f"/api/v1/jobs/{finished.id}/output", headers=as_user("root")).data == ARCHIVE


def test_an_archive_gone_after_its_retention_is_410(client, as_user, finished, cluster):
    cluster.rewrite(finished, output_expires_at=time.time() - 60)
    cluster.links.files.clear()
    resp = client.get(f"/api/v1/jobs/{finished.id}/output", headers=as_user("alice"))
    assert resp.status_code == 410 and "retention" in resp.get_json()["error"]


def test_a_running_job_has_no_archive_yet(client, as_user, cluster):
    cluster.add_worker()
    job = cluster.add_job(state=JobState.RUNNING)
    resp = client.get(f"/api/v1/jobs/{job.id}/output", headers=as_user("alice"))
    assert resp.status_code == 409 and "RUNNING" in resp.get_json()["error"]


# ----- cancel ---------------------------------------------------------------------------------
def test_cancel_retries_when_the_worker_moves_the_job_meanwhile(client, as_user, cluster, monkeypatch):
    cluster.add_worker()
    job = cluster.add_job(state=JobState.STARTING)
    real = cluster.store.transition
    raced = []

    def worker_first(current, new, **kw):
        if not raced:  # the worker starts the container between the view's read and its write
            raced.append(real(cluster.store.get_job(current.id), JobState.RUNNING))
        return real(current, new, **kw)

    monkeypatch.setattr(cluster.store, "transition", worker_first)
    resp = client.post(f"/api/v1/jobs/{job.id}/cancel", headers=as_user("alice"))
    assert resp.status_code == 200
    done = resp.get_json()["job"]
    assert done["state"] == "CANCELLED" and done["reason"] == "cancelled by alice"
    assert [h["state"] for h in done["history"]][-2:] == ["RUNNING", "CANCELLED"]
    # A claimed job has a log on the worker: it is kept for the worker's retention (1 day).
    assert done["output_expires_at"] == pytest.approx(time.time() + 86400, abs=30)


def test_cancel_of_a_job_that_ended_meanwhile_is_409(client, as_user, cluster, monkeypatch):
    cluster.add_worker()
    job = cluster.add_job(state=JobState.RUNNING)
    real = cluster.store.transition

    def job_ends_first(current, new, **kw):
        fresh = cluster.store.get_job(current.id)
        if not fresh.state.terminal:
            fresh = real(real(fresh, JobState.EXPORTING), JobState.SUCCEEDED)
        return real(current, new, **kw)

    monkeypatch.setattr(cluster.store, "transition", job_ends_first)
    resp = client.post(f"/api/v1/jobs/{job.id}/cancel", headers=as_user("alice"))
    assert resp.status_code == 409 and "already ended (SUCCEEDED)" in resp.get_json()["error"]


def test_only_the_owner_or_an_admin_cancels(client, as_user, cluster):
    cluster.add_worker()
    job = cluster.add_job(state=JobState.QUEUED)
    assert client.post(f"/api/v1/jobs/{job.id}/cancel", headers=as_user("bob")).status_code == 404
    assert client.post(f"/api/v1/jobs/{job.id}/cancel", headers=as_user("root")).status_code == 200
    assert cluster.store.get_job(job.id).state is JobState.CANCELLED


# ----- the janitor's sweep --------------------------------------------------------------------
CFG = WebConfig(lost_worker_grace_s=60)


def test_sweep_leaves_a_live_worker_alone(cluster):
    cluster.add_worker()
    jobs = [cluster.add_job(state=s) for s in (JobState.QUEUED, JobState.RUNNING, JobState.UPLOADING)]
    assert sweep(cluster.store, CFG) == {"LOST": 0, "FAILED": 0}
    assert [cluster.store.get_job(j.id).state for j in jobs] == [j.state for j in jobs]


def test_sweep_marks_claimed_jobs_of_a_dead_worker_lost_and_waits_for_queued_ones(cluster):
    cluster.add_worker()
    running = cluster.add_job(state=JobState.RUNNING)
    queued = cluster.add_job(state=JobState.QUEUED)
    cluster.worker_dies()
    now = time.time()
    assert sweep(cluster.store, CFG, now=now) == {"LOST": 1, "FAILED": 0}
    lost = cluster.store.get_job(running.id)
    assert lost.state is JobState.LOST and "may or may not have run" in lost.reason
    assert lost.output_expires_at == pytest.approx(now + 86400)
    # Within the grace the queued job waits (a reboot keeps the inbox); after it, it fails.
    assert sweep(cluster.store, CFG, now=now + 30) == {"LOST": 0, "FAILED": 0}
    assert sweep(cluster.store, CFG, now=now + 61) == {"LOST": 0, "FAILED": 1}
    failed = cluster.store.get_job(queued.id)
    assert failed.state is JobState.FAILED and "never started" in failed.reason


def test_sweep_does_not_mark_lost_a_job_whose_worker_renewed_its_claim(cluster):
    cluster.add_worker()
    job = cluster.add_job(state=JobState.RUNNING)
    old_lease = cluster.leases["w1"]
    # The worker restarted with a new lease and re-attached its claim before the old one ended.
    cluster.leases["w1"] = cluster.store.grant_lease(10)
    cluster.store.renew_claim(cluster.store.get_job(job.id), "w1", cluster.leases["w1"])
    cluster.mem.expire(old_lease)
    assert sweep(cluster.store, CFG)["LOST"] == 0
    assert cluster.store.get_job(job.id).state is JobState.RUNNING


def test_mark_lost_loses_to_a_claim_renewed_after_the_read(cluster):
    cluster.add_worker()
    job = cluster.add_job(state=JobState.RUNNING)
    cluster.worker_dies()
    seen = cluster.store.get_job(job.id)  # a web server read it claim-less ...
    cluster.leases["w1"] = cluster.store.grant_lease(10)
    cluster.store.renew_claim(seen, "w1", cluster.leases["w1"])  # ... the worker came back first
    assert cluster.store.mark_lost_if_unclaimed(seen, reason="gone", now=time.time(), output_expires_at=0) is None
    assert cluster.store.get_job(job.id).state is JobState.RUNNING


def test_sweep_fails_an_upload_whose_web_server_died(cluster):
    cluster.add_worker()
    job = cluster.add_job(state=JobState.UPLOADING)
    assert sweep(cluster.store, CFG)["FAILED"] == 0  # its upload key is alive
    upload_lease = next(kv.lease for k, kv in cluster.mem.kvs.items() if k.decode() == cluster.store.upload_key(job.id))
    cluster.mem.expire(upload_lease)
    assert sweep(cluster.store, CFG)["FAILED"] == 1
    failed = cluster.store.get_job(job.id)
    assert failed.state is JobState.FAILED and "upload never finished" in failed.reason
