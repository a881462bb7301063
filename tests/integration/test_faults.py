"""The at-most-once promise under crashes (DESIGN §3), on real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from urllib.parse import urlsplit

import docker
import pytest

import pink_dev as dev
from pink.config import EtcdConfig, WebConfig
from pink.model import Job, new_job_id
from pink.states import JobState
from webapp.janitor import sweep

from tests.helpers import TERMINAL, archive_members, starts_of, submit, wait_state

pytestmark = [
    pytest.mark.integration,
    # Test-side docker-py clients whose engine or containers vanish under them may leave a
    # socket for the garbage collector; PINK's own processes are separate from this one.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

#: Short leases and sweeps so failures are detected in seconds, not minutes.
FAST = dict(
    lease_ttl_s=4, loop_interval_s=0.5, sweep_interval_s=1,
    etcd_overrides={"timeout_s": 2},
    web_overrides={"janitor_interval_s": 0.5, "lease_ttl_s": 3, "lost_worker_grace_s": 4},
)


def containers_of(worker, job_id):
    with contextlib.closing(docker.DockerClient(base_url=worker.docker_url)) as engine:
        return engine.containers.list(all=True, filters={"name": f"pink-{job_id}"})


def test_a_worker_gone_for_good_loses_its_claimed_jobs_and_fails_its_queue(cluster, images):
    c = cluster(max_parallel_jobs=1, **FAST)
    api = c.api("alice")
    running = submit(api, images["sleeper"], timeout=300).json()["job"]["id"]
    wait_state(api, running, {"RUNNING"})
    queued = submit(api, images["writer"]).json()["job"]["id"]
    assert "slot" in api.get(f"/api/v1/jobs/{queued}").json()["job"]["waiting_reason"]
    # The host dies: daemon and container with it.
    c.workers[0].daemon.kill()
    with contextlib.closing(docker.DockerClient(base_url=c.workers[0].docker_url)) as engine:
        engine.containers.get(f"pink-{running}").kill()
    gone = time.time()
    lost = wait_state(api, running, {"LOST"}, timeout=20)
    assert time.time() - gone <= 4 + 5  # lease TTL + a few seconds
    assert "resubmit" in lost["reason"]
    # Its log stays on the host for the default retention (14 days) if the host comes back.
    assert lost["output_expires_at"] == pytest.approx(lost["updated_at"] + 14 * 86400, abs=5)
    assert "is down" in api.get(f"/api/v1/jobs/{queued}").json()["job"]["waiting_reason"]
    failed = wait_state(api, queued, {"FAILED"}, timeout=30)
    assert "unavailable" in failed["reason"] and "never started" in failed["reason"]


def test_a_worker_back_after_its_job_was_lost_kills_it_and_never_reruns_it(cluster, images):
    c = cluster(**FAST)
    api = c.api("alice")
    since = time.time()
    job_id = submit(api, images["sleeper"], timeout=300).json()["job"]["id"]
    wait_state(api, job_id, {"RUNNING"})
    c.workers[0].daemon.kill()
    wait_state(api, job_id, {"LOST"}, timeout=20)
    assert containers_of(c.workers[0], job_id)  # still running on the "partitioned" host
    c.workers[0].daemon.start()
    dev.wait_until(lambda: not containers_of(c.workers[0], job_id), 30, "the lost job's container to go")
    time.sleep(2)
    assert api.get(f"/api/v1/jobs/{job_id}").json()["job"]["state"] == "LOST"
    assert starts_of(c.workers[0].docker_url, job_id, since) == 1


def test_a_docker_engine_restart_keeps_the_running_job_and_its_output(cluster, images):
    # `systemctl restart docker` on a worker: with live-restore (as deployed) the container
    # runs on while the engine is away; the worker resumes watching it, exports and succeeds.
    c = cluster(own_engines=True, **FAST)
    api = c.api("alice")
    job_id = submit(api, images["counter"], timeout=120).json()["job"]["id"]
    running = wait_state(api, job_id, {"RUNNING"})
    engine = c.workers[0].dockerd
    engine.stop(keep_containers=True)
    time.sleep(1)
    engine.start().wait_ready(60)
    job = wait_state(api, job_id, TERMINAL, timeout=60)
    assert job["state"] == "SUCCEEDED", job
    assert job["started_at"] == running["started_at"]  # the same start, adopted
    files = archive_members(api.get(f"/api/v1/jobs/{job_id}/output").content)
    assert files["out/starts"] == b"started\n" and files["out/result.txt"] == b"done\n"


def test_a_web_server_killed_mid_upload_leaves_a_failed_job_and_no_file(cluster, images):
    c = cluster(web_servers=2, **FAST)
    body = images["writer"].read_bytes()
    target = urlsplit(c.web[0].url)
    sock = socket.create_connection((target.hostname, target.port))
    head = (f"POST /api/v1/jobs HTTP/1.1\r\nHost: {target.netloc}\r\n"
            f"Authorization: Bearer {c.tokens['alice']}\r\nContent-Length: {len(body)}\r\n\r\n")
    sock.sendall(head.encode() + body[: len(body) // 2])
    other = c.api("alice", url=c.web[1].url)
    dev.wait_until(lambda: other.get("/api/v1/jobs").json()["jobs"], 10, "the upload to start")
    dev.wait_until(lambda: list(c.workers[0].inbox.iterdir()), 10, "the partial file")
    os.killpg(c.web[0].pid, signal.SIGKILL)  # gunicorn master and its workers, all at once
    sock.close()
    job = other.get("/api/v1/jobs").json()["jobs"][0]
    job = wait_state(other, job["id"], TERMINAL, timeout=20)
    assert job["state"] == "FAILED" and "upload never finished" in job["reason"]
    dev.wait_until(lambda: not list(c.workers[0].inbox.iterdir()), 20, "the worker to remove the partial upload")
    assert not containers_of(c.workers[0], job["id"])


def test_one_etcd_member_down_loses_no_job_and_two_down_answer_503_then_recover(cluster, etcd3cluster, images):
    c = cluster(etcd_endpoints=etcd3cluster.endpoints, **FAST)
    api = c.api("alice")
    accepted, errors = [], []

    def submitter():
        for i in range(8):
            r = submit(api, images["writer"], name=f"s{i}")
            (accepted if r.status_code == 201 else errors).append(r)

    thread = threading.Thread(target=submitter)
    thread.start()
    time.sleep(1)
    etcd3cluster.stop_member(0)
    thread.join(120)
    assert accepted, [e.text for e in errors]
    for r in accepted:
        job = wait_state(api, r.json()["job"]["id"], TERMINAL, timeout=90)
        assert job["state"] == "SUCCEEDED", job
    for r in errors:  # a refused submission is fine, if it says why
        assert r.status_code == 503 and "etcd" in r.json()["error"]

    etcd3cluster.stop_member(1)
    r = api.get("/api/v1/jobs")
    assert r.status_code == 503 and "etcd" in r.json()["error"] and "try again" in r.json()["error"]
    etcd3cluster.start_member(0)
    etcd3cluster.start_member(1)
    dev.wait_until(lambda: api.get("/api/v1/jobs").status_code == 200, 60, "the API to recover")
    again = submit(api, images["writer"])
    assert again.status_code == 201, again.text
    assert wait_state(api, again.json()["job"]["id"], TERMINAL, timeout=90)["state"] == "SUCCEEDED"


def _raw_post(url: str, token: str, body: bytes, key: str, send: int, before_hanging_up=None) -> None:
    """POST ``send`` bytes of ``body`` and hang up without reading the answer."""
    target = urlsplit(url)
    with socket.create_connection((target.hostname, target.port)) as sock:
        head = (f"POST /api/v1/jobs HTTP/1.1\r\nHost: {target.netloc}\r\nAuthorization: Bearer {token}\r\n"
                f"Idempotency-Key: {key}\r\nContent-Length: {len(body)}\r\n\r\n")
        sock.sendall(head.encode() + body[:send])
        if send == len(body):
            time.sleep(1.5)  # let the server finish, then drop before reading the answer
        if before_hanging_up:
            before_hanging_up()


def test_a_retry_while_the_first_uploads_web_server_is_dead_takes_the_job_over(cluster, images):
    c = cluster(web_servers=2, **FAST)
    other = c.api("alice", url=c.web[1].url)
    body = images["writer"].read_bytes()

    def kill_the_first_web_server():
        dev.wait_until(lambda: other.get("/api/v1/jobs").json()["jobs"], 10, "the upload to start")
        os.killpg(c.web[0].pid, signal.SIGKILL)

    _raw_post(c.web[0].url, c.tokens["alice"], body, "key-dead", len(body) // 2, kill_the_first_web_server)
    # At once, while the dead server's lease (3 s) still holds the first job in UPLOADING.
    retry = other.post("/api/v1/jobs", data=body, headers={"Idempotency-Key": "key-dead"})
    assert retry.status_code == 201, retry.text
    job = wait_state(other, retry.json()["job"]["id"], TERMINAL)
    assert job["state"] == "SUCCEEDED", job
    first = [j for j in other.get("/api/v1/jobs").json()["jobs"] if j["id"] != job["id"]]
    assert [(j["state"], "upload never finished" in j["reason"]) for j in first] == [("FAILED", True)]


def test_a_hung_etcd_member_costs_one_timeout_then_the_next_member_answers(etcd, open_store):
    # A member whose host is gone answers nothing (no refusal): like this socket, which takes
    # connections and never speaks. The request must still succeed on the next member.
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        cfg = EtcdConfig(endpoints=(f"127.0.0.1:{hung.getsockname()[1]}", *etcd), timeout_s=2,
                         prefix=f"/hung{time.time_ns()}")
        store = open_store(cfg)
        started = time.monotonic()
        job, created = store.create_job(Job(id=new_job_id(), user="alice", state=JobState.QUEUED, worker="w1"))
        assert created and store.get_job(job.id) == job
        assert time.monotonic() - started < 2 * cfg.timeout_s + 1


def test_client_retries_with_the_same_idempotency_key_make_one_job(cluster, images):
    c = cluster()
    api = c.api("alice")
    body = images["writer"].read_bytes()
    # 1. The answer is lost after the server accepted the job: the retry gets that job.
    _raw_post(c.url, c.tokens["alice"], body, "key-a", len(body))
    retry = api.post("/api/v1/jobs", data=body, headers={"Idempotency-Key": "key-a"})
    assert retry.status_code == 200, retry.text
    # 2. The connection drops mid-upload: the retry takes over the key and its job runs.
    _raw_post(c.url, c.tokens["alice"], body, "key-b", len(body) // 2)
    dev.wait_until(lambda: any(j["state"] == "FAILED" for j in api.get("/api/v1/jobs").json()["jobs"]), 10,
                   "the broken upload to fail")
    second = api.post("/api/v1/jobs", data=body, headers={"Idempotency-Key": "key-b"})
    assert second.status_code == 201, second.text
    third = api.post("/api/v1/jobs", data=body, headers={"Idempotency-Key": "key-b"})
    assert third.status_code == 200 and third.json()["job"]["id"] == second.json()["job"]["id"]
    jobs = api.get("/api/v1/jobs").json()["jobs"]
    ran = [wait_state(api, j["id"], TERMINAL) for j in jobs]
    assert sorted(j["state"] for j in ran) == ["FAILED", "SUCCEEDED", "SUCCEEDED"]


def test_web_servers_racing_to_mark_a_job_lost_make_exactly_one_write(etcd, open_store):
    prefix = f"/lostrace{time.time_ns()}"
    cfg = EtcdConfig(endpoints=tuple(etcd), prefix=prefix)
    store = open_store(cfg)
    job, _ = store.create_job(Job(id=new_job_id(), user="alice", state=JobState.QUEUED, worker="w1"))
    lease = store.grant_lease(60)
    job = store.claim(job, "w1", lease, ())
    job = store.transition(job, JobState.RUNNING)
    store.revoke_lease(lease)  # the worker's lease ends: its claim vanishes
    sweepers = [open_store(cfg) for _ in range(10)]  # ten web servers, each with its own connection
    barrier = threading.Barrier(len(sweepers))
    results = []

    def run(s):
        barrier.wait()
        results.append(sweep(s, WebConfig())["LOST"])

    threads = [threading.Thread(target=run, args=(s,)) for s in sweepers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 1
    final = store.get_job(job.id)
    assert final.state is JobState.LOST
    assert [h["state"] for h in final.history].count("LOST") == 1
