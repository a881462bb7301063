"""The web server's views through Flask's test client, on an in-memory etcd: request limits,
job spec parsing, Range downloads, cancel races, and the janitor's sweep decisions."""

from __future__ import annotations

import hashlib
import io
import json
import time

import pytest

from pink.config import WebConfig
from pink.model import User
from pink.states import JobState
from webapp.janitor import sweep
from webapp.spec import JobSpec

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
    ({"priority": "5"}, "only admins may raise a job's priority above 0"),
])
def test_a_bad_job_spec_is_a_400_naming_the_field(client, as_user, cluster, query, message):
    cluster.add_worker()
    resp = client.post("/api/v1/jobs", query_string=query, data=b"", headers=as_user("alice"))
    assert resp.status_code == 400, resp.get_json()
    assert message in resp.get_json()["error"]


def _spec_400(client, as_user, query=None, spec=None, raw_header=None) -> str:
    headers = as_user("alice")
    if spec is not None:
        headers["Pink-Job-Spec"] = json.dumps(spec)
    if raw_header is not None:
        headers["Pink-Job-Spec"] = raw_header
    resp = client.post("/api/v1/jobs", query_string=query or {}, data=b"", headers=headers)
    assert resp.status_code == 400, resp.get_json()
    return resp.get_json()["error"]


@pytest.mark.parametrize(("spec", "message"), [
    ({"env": {"1X": "a"}}, "env: '1X' is not a variable name"),
    ({"env": {"A-B": "a"}}, "env: 'A-B' is not a variable name"),
    ({"env": {"A\n": "a"}}, "env: 'A\\n' is not a variable name"),
    ({"env": {"PINK_JOB_ID": "x"}}, "env: PINK_JOB_ID is reserved"),
    ({"env": {f"V{i}": "" for i in range(129)}}, "env has 129 variables; at most 128"),
    ({"env": {"A": "a\0b"}}, "env: the value of A must not contain NUL"),
    ({"env": {"A": 1}}, "env: the value of A must be a string"),
    ({"env": ["A=1"]}, "env must be an object"),
    ({"command": "python train.py"}, "command must be a list of strings"),
    ({"command": ["python", 3]}, "command must be a list of strings"),
    ({"command": []}, "command must have at least one item"),
    ({"command": [""] * 1025}, "command has 1025 items; at most 1024"),
    ({"command": ["a\0"]}, "command must not contain NUL"),
    ({"entrypoint": ["sh", None]}, "entrypoint must be a list of strings"),
    ({"entrypoint": ["x\0"]}, "entrypoint must not contain NUL"),
    ({"workdir": "relative/dir"}, "workdir must be an absolute path"),
    ({"workdir": "/" + "a" * 4096}, "workdir must be an absolute path"),
    ({"data": ["ImageNet"]}, "data: 'ImageNet' is not a dataset name"),
    ({"data": ["a" * 64]}, "is not a dataset name"),
    ({"data": ["coco\n"]}, "data: 'coco\\n' is not a dataset name"),
    ({"data": [f"d{i}" for i in range(33)]}, "data names 33 datasets; at most 32"),
    ({"data": ["coco", "coco"]}, "data: coco is named twice"),
    ({"data": [1]}, "data must be a list of dataset names"),
    ({"cpus": 0}, "cpus must be more than 0 and at most 4096"),
    ({"cpus": 4097}, "cpus must be more than 0 and at most 4096"),
    ({"cpus": "many"}, "cpus must be a number"),
    ({"cpus": True}, "cpus must be a number"),
    ({"memory": "5m"}, "memory must be at least 6 MiB"),
    ({"memory": "16x"}, "memory: '16x' is not a size"),
    ({"memory": 1.5e9}, "memory: 1500000000.0 is not a size"),
    ({"shm_size": "512k"}, "shm_size must be at least 1 MiB"),
    ({"gpus": 1.5}, "gpus must be a whole number"),
    ({"timeout": True}, "timeout must be a whole number"),
    ({"name": 7}, "name must be a string"),
    ({"image": "sha256:" + "0" * 64}, "image is not a field of the Pink-Job-Spec header"),
    ({"cmd": ["ls"]}, "cmd is not a field of the Pink-Job-Spec header"),
])
def test_a_bad_job_spec_header_is_a_400_naming_the_field(client, as_user, cluster, spec, message):
    cluster.add_worker()
    assert message in _spec_400(client, as_user, spec=spec)


@pytest.mark.parametrize(("query", "message"), [
    ({"cpus": "0"}, "cpus must be more than 0"),
    ({"cpus": "nan"}, "cpus must be more than 0"),
    ({"memory": "1k"}, "memory must be at least 6 MiB"),
    ({"shm_size": "lots"}, "shm_size: 'lots' is not a size"),
    ({"workdir": "/a\0b"}, "workdir must be an absolute path"),
    ({"data": "imagenet,Coco"}, "data: 'Coco' is not a dataset name"),
    ({"data": "coco,coco"}, "data: coco is named twice"),
    ({"command": "ls"}, "command is a list or an object: send it in the Pink-Job-Spec header"),
    ({"env": "A=1"}, "env is a list or an object: send it in the Pink-Job-Spec header"),
])
def test_a_bad_job_spec_parameter_is_a_400_naming_the_field(client, as_user, cluster, query, message):
    cluster.add_worker()
    assert message in _spec_400(client, as_user, query=query)


@pytest.mark.parametrize(("raw", "message"), [
    ("not json", "the Pink-Job-Spec header is not valid JSON"),
    ('["ls"]', "the Pink-Job-Spec header must be a JSON object"),
    ('{"gpus": 1, "gpus": 2}', "'gpus' appears twice"),
    ('{"name": "caf\u00e9"}', "must be ASCII"),
    (json.dumps({"env": {"A": "x" * (32 << 10)}}), "the Pink-Job-Spec header is 32786 bytes; at most 32768"),
])
def test_a_malformed_job_spec_header_is_a_400(client, as_user, cluster, raw, message):
    cluster.add_worker()
    assert message in _spec_400(client, as_user, raw_header=raw)


def test_a_field_given_twice_is_a_400(client, as_user, cluster):
    cluster.add_worker()
    error = _spec_400(client, as_user, query={"cpus": "2"}, spec={"cpus": 4})
    assert "cpus is given both as a query parameter and in the Pink-Job-Spec header" in error


def test_the_query_and_the_header_make_one_spec():
    header = json.dumps({"command": ["python", "train.py", "--lr", "0.1"], "entrypoint": [],
                         "env": {"WANDB_MODE": "offline", "SEED": "7"}, "cpus": 2.5, "shm_size": "1g"})
    spec = JobSpec.parse({"gpus": "1", "memory": "16g", "workdir": "/work", "data": "imagenet,coco"},
                         User("alice", ""), header)
    assert spec.gpus == 1 and spec.command == ("python", "train.py", "--lr", "0.1")
    assert spec.entrypoint == () and spec.env == {"WANDB_MODE": "offline", "SEED": "7"}
    assert spec.workdir == "/work" and spec.datasets == ("imagenet", "coco")
    assert (spec.cpus, spec.memory_bytes, spec.shm_bytes) == (2.5, 16 << 30, 1 << 30)
    plain = JobSpec.parse({}, User("alice", ""))
    assert plain.command is None and plain.entrypoint is None and not plain.env
    assert (plain.cpus, plain.memory_bytes, plain.shm_bytes, plain.datasets) == (0, 0, 0, ())


def test_admins_may_raise_priority(client, as_user, cluster):
    cluster.add_worker()
    resp = client.post("/api/v1/jobs", query_string={"priority": "500"}, data=b"", headers=as_user("root"))
    assert "priority must be between -100 and 100" in resp.get_json()["error"]


def test_submitting_needs_a_login(client):
    assert client.post("/api/v1/jobs", data=b"x").status_code == 401


# ----- what a job runs with: env redaction, resubmit, datasets --------------------------------
ENV = {"WANDB_API_KEY": "s3cret", "SEED": "7"}


def test_env_values_are_shown_to_the_owner_only(client, as_user, cluster):
    cluster.add_worker()
    job = cluster.add_job(env=ENV)
    path = f"/api/v1/jobs/{job.id}"
    assert client.get(path, headers=as_user("alice")).get_json()["job"]["env"] == ENV
    hidden = {"WANDB_API_KEY": "***", "SEED": "***"}
    assert client.get(path, headers=as_user("root")).get_json()["job"]["env"] == hidden
    listed = client.get("/api/v1/jobs?all=1", headers=as_user("root")).get_json()["jobs"]
    assert [j["env"] for j in listed] == [hidden]
    assert client.get("/api/v1/jobs", headers=as_user("alice")).get_json()["jobs"][0]["env"] == ENV
    cancelled = client.post(f"{path}/cancel", headers=as_user("root")).get_json()["job"]
    assert cancelled["env"] == hidden


@pytest.mark.parametrize("query", ["job={id}", "all=1"])
def test_env_values_stay_hidden_in_an_admins_event_stream(client, as_user, cluster, query):
    cluster.add_worker()
    job = cluster.add_job(env=ENV)
    resp = client.get(f"/api/v1/events?{query.format(id=job.id)}", headers=as_user("root"), buffered=False)
    first = next(chunk for chunk in resp.response if chunk.startswith(b"event:"))
    resp.close()
    assert b'"SEED":"***"' in first and b"s3cret" not in first


def test_a_resubmit_runs_with_what_the_old_job_ran_with(client, as_user, cluster):
    image = "sha256:" + "ab" * 32
    cluster.add_worker(images=(image,), datasets=("imagenet",))
    ran_with = dict(command=("python", "train.py", "--epochs", "3"), entrypoint=(), env=ENV,
                    workdir="/work", datasets=("imagenet",), cpus=4.0, memory_bytes=16 << 30,
                    shm_bytes=1 << 30)
    old = cluster.add_job(state=JobState.SUCCEEDED, image_id=image, image_bytes=1000, **ran_with)
    resp = client.post(f"/api/v1/jobs/{old.id}/resubmit", headers=as_user("alice"))
    assert resp.status_code == 201, resp.get_json()
    new = cluster.store.get_job(resp.get_json()["job"]["id"])
    assert new.resubmit_of == old.id
    assert {k: getattr(new, k) for k in ran_with} == ran_with


def test_datasets_lists_each_with_its_workers_and_whether_a_job_can_get_it(client, as_user, cluster):
    cluster.add_worker("w1", datasets=("imagenet", "coco"))
    cluster.add_worker("w2", datasets=("imagenet",))
    cluster.add_worker("w3", datasets=("coco", "laion"))
    cluster.add_worker("w4")
    cluster.store.set_drained("w1", True)
    cluster.worker_dies("w3")
    resp = client.get("/api/v1/datasets", headers=as_user("alice"))
    assert resp.get_json() == {"datasets": [
        {"name": "coco", "workers": ["w1", "w3"], "available": False},
        {"name": "imagenet", "workers": ["w1", "w2"], "available": True},
        {"name": "laion", "workers": ["w3"], "available": False},
    ]}
    assert client.get("/api/v1/datasets").status_code == 401


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
    # discard=1: a running job ends at once (without it, its worker stops and exports it first).
    resp = client.post(f"/api/v1/jobs/{job.id}/cancel?discard=1", headers=as_user("alice"))
    assert resp.status_code == 200
    done = resp.get_json()["job"]
    assert done["state"] == "CANCELLED" and done["reason"] == "cancelled by alice; its output thrown away as asked"
    assert done["discard_output"] is True
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
    assert sweep(cluster.store, CFG) == {"LOST": 0, "FAILED": 0, "CANCELLED": 0}
    assert [cluster.store.get_job(j.id).state for j in jobs] == [j.state for j in jobs]


def test_sweep_marks_claimed_jobs_of_a_dead_worker_lost_and_waits_for_queued_ones(cluster):
    cluster.add_worker()
    running = cluster.add_job(state=JobState.RUNNING)
    queued = cluster.add_job(state=JobState.QUEUED)
    cluster.worker_dies()
    now = time.time()
    assert sweep(cluster.store, CFG, now=now) == {"LOST": 1, "FAILED": 0, "CANCELLED": 0}
    lost = cluster.store.get_job(running.id)
    assert lost.state is JobState.LOST and "may or may not have run" in lost.reason
    assert lost.output_expires_at == pytest.approx(now + 86400)
    # Within the grace the queued job waits (a reboot keeps the inbox); after it, it fails.
    assert sweep(cluster.store, CFG, now=now + 30) == {"LOST": 0, "FAILED": 0, "CANCELLED": 0}
    assert sweep(cluster.store, CFG, now=now + 61) == {"LOST": 0, "FAILED": 1, "CANCELLED": 0}
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
