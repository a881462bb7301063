"""One job end to end on real parts: etcd, dockerd, sshd + gate, gunicorn, worker daemons."""

from __future__ import annotations

import contextlib
import hashlib
import io
import socket
import subprocess
import tarfile
import threading
import time
from urllib.parse import urlsplit

import docker
import pytest

from tests.helpers import TERMINAL, archive_members, starts_of, submit, wait_state

import pink_dev as dev
from pink.config import EtcdConfig
from pink.model import Job, new_job_id
from pink.states import JobState

pytestmark = pytest.mark.integration

def test_job_writes_a_file_and_the_archive_holds_it(cluster, images):
    c = cluster()
    api = c.api("alice")
    r = submit(api, images["writer"], name="hello", timeout=60)
    assert r.status_code == 201, r.text
    job = wait_state(api, r.json()["job"]["id"], TERMINAL)
    assert job["state"] == "SUCCEEDED", job
    assert job["exit_code"] == 0
    assert [h["state"] for h in job["history"]] == ["UPLOADING", "QUEUED", "STARTING", "RUNNING", "EXPORTING", "SUCCEEDED"]
    out = api.get(f"/api/v1/jobs/{job['id']}/output")
    assert out.status_code == 200
    assert len(out.content) == job["output_bytes"]
    assert hashlib.sha256(out.content).hexdigest() == job["output_sha256"]
    assert archive_members(out.content)["out/result.txt"] == b"result-42\n"
    # Range: the tail of the archive, as a resumed download asks for it
    part = api.get(f"/api/v1/jobs/{job['id']}/output", headers={"Range": "bytes=100-"})
    assert part.status_code == 206 and part.content == out.content[100:]
    assert api.get(f"/api/v1/jobs/{job['id']}/logs").text == "hello\n"
    # the container and the inbox file are gone; the archive stays in the outbox
    w = c.workers[0]
    assert not list(w.inbox.iterdir())
    # readable by the transfer account's group only, whatever the worker's umask
    for suffix in (".tar.zst", ".log"):
        assert (w.outbox / f"{job['id']}{suffix}").stat().st_mode & 0o777 == 0o640
    with contextlib.closing(docker.DockerClient(base_url=w.docker_url)) as engine:
        assert not engine.containers.list(all=True, filters={"name": f"pink-{job['id']}"})


def test_non_zero_exit_fails_with_its_logs(cluster, images):
    c = cluster()
    api = c.api("alice")
    job_id = submit(api, images["fail"]).json()["job"]["id"]
    job = wait_state(api, job_id, TERMINAL)
    assert job["state"] == "FAILED" and job["exit_code"] == 3
    assert "exited with code 3" in job["reason"]
    log = api.get(f"/api/v1/jobs/{job_id}/logs").text
    assert "about to fail" in log and "oops" in log


def test_an_image_whose_command_cannot_start_fails_with_dockers_reason(cluster, tmp_path):
    rootfs = io.BytesIO()
    with tarfile.open(fileobj=rootfs, mode="w") as tar:
        info = tarfile.TarInfo("etc")
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
    image = tmp_path / "nocmd.tar"
    subprocess.run(["docker", "import", "-c", 'CMD ["/no/such/program"]', "-", "pink-test-nocmd:latest"],
                   input=rootfs.getvalue(), check=True, capture_output=True)
    subprocess.run(["docker", "save", "-o", str(image), "pink-test-nocmd:latest"], check=True)
    c = cluster()
    api = c.api("alice")
    job_id = submit(api, image).json()["job"]["id"]
    job = wait_state(api, job_id, TERMINAL)
    assert job["state"] == "FAILED", job
    assert job["reason"].startswith("docker could not start the container: ") and "/no/such/program" in job["reason"]
    assert not job["started_at"]


def test_outputs_are_deleted_after_the_retention_and_then_answer_410(cluster, images):
    c = cluster(output_retention_days=3 / 86400, sweep_interval_s=0.5)
    api = c.api("alice")
    job_id = submit(api, images["writer"]).json()["job"]["id"]
    job = wait_state(api, job_id, TERMINAL)
    assert job["state"] == "SUCCEEDED" and job["output_expires_at"] == pytest.approx(job["updated_at"] + 3, abs=1)
    assert api.get(f"/api/v1/jobs/{job_id}/output").status_code == 200  # kept for 3 s
    outbox = c.workers[0].outbox
    assert sorted(p.name for p in outbox.glob(f"{job_id}.*")) == [f"{job_id}.log", f"{job_id}.tar.zst"]
    dev.wait_until(lambda: not list(outbox.glob(f"{job_id}.*")), 30, "the worker to delete the expired outputs")
    for what in ("output", "logs"):
        r = api.get(f"/api/v1/jobs/{job_id}/{what}")
        assert r.status_code == 410, (what, r.status_code)
        assert r.json()["error"].startswith(f"the output and log of job {job_id} were deleted on ")
    # A job cancelled while it runs has a log: the web server stamps it with the same retention.
    running = submit(api, images["sleeper"]).json()["job"]["id"]
    wait_state(api, running, {"RUNNING"})
    assert api.post(f"/api/v1/jobs/{running}/cancel").json()["job"]["state"] == "EXPORTING"
    cancelled = wait_state(api, running, TERMINAL)
    assert cancelled["state"] == "CANCELLED"
    assert cancelled["output_expires_at"] == pytest.approx(cancelled["updated_at"] + 3, abs=1)


def test_timeout_stops_the_container_and_still_gives_an_archive(cluster, images):
    c = cluster(stop_grace_s=2)
    api = c.api("alice")
    job_id = submit(api, images["sleeper"], timeout=3).json()["job"]["id"]
    job = wait_state(api, job_id, TERMINAL, timeout=60)
    assert job["state"] == "TIMED_OUT", job
    files = archive_members(api.get(f"/api/v1/jobs/{job_id}/output").content)
    assert files["out/progress.txt"].startswith(b"working")
    assert "got TERM" in api.get(f"/api/v1/jobs/{job_id}/logs").text


def test_cancel_while_running_stops_the_container(cluster, images):
    c = cluster()
    api = c.api("alice")
    job_id = submit(api, images["sleeper"], timeout=300).json()["job"]["id"]
    wait_state(api, job_id, {"RUNNING"})
    r = api.post(f"/api/v1/jobs/{job_id}/cancel")
    # Its worker stops it and exports what it wrote (tests/integration/test_output_modes.py).
    assert r.status_code == 200 and r.json()["job"]["state"] == "EXPORTING"
    assert wait_state(api, job_id, TERMINAL)["state"] == "CANCELLED"
    assert api.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 409
    with contextlib.closing(docker.DockerClient(base_url=c.workers[0].docker_url)) as engine:
        dev.wait_until(lambda: not engine.containers.list(all=True, filters={"name": f"pink-{job_id}"}), 30,
                       "the container of the cancelled job to go")
    assert api.get(f"/api/v1/jobs/{job_id}").json()["job"]["state"] == "CANCELLED"


def _tar_bytes(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buf.getvalue()


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _bad_archives(valid: bytes) -> dict[str, tuple[bytes, str]]:
    link = tarfile.TarInfo("evil")
    link.type, link.linkname = tarfile.SYMTYPE, "../../etc/passwd"
    return {
        "not a tar": (b"\x00garbage" * 5000, "not a tar"),
        "truncated": (valid[: len(valid) // 2], "ends"),
        "path traversal": (_tar_bytes([(_file("../escape.txt"), b"x")]), ".."),
        "absolute path": (_tar_bytes([(_file("/etc/cron.d/x"), b"x")]), "absolute"),
        "symlink escape": (_tar_bytes([(link, b"")]), "outside the archive"),
        "no manifest": (_tar_bytes([(_file("hello.txt"), b"hi")]), "manifest.json"),
    }


def test_bad_archives_get_a_clear_400_and_leave_nothing_behind(cluster, images):
    c = cluster()
    api = c.api("alice")
    valid = images["writer"].read_bytes()
    for label, (body, words) in _bad_archives(valid).items():
        r = api.post("/api/v1/jobs", data=body)
        assert r.status_code == 400, (label, r.text)
        assert words in r.json()["error"], (label, r.json())
    assert not list(c.workers[0].inbox.iterdir())
    jobs = api.get("/api/v1/jobs").json()["jobs"]
    assert jobs and all(j["state"] == "FAILED" and j["reason"] for j in jobs)


def test_an_upload_cut_short_by_the_client_fails_and_leaves_no_file(cluster, images):
    c = cluster()
    body = images["writer"].read_bytes()
    url = urlsplit(c.url)
    with socket.create_connection((url.hostname, url.port)) as sock:
        head = (f"POST /api/v1/jobs HTTP/1.1\r\nHost: {url.netloc}\r\n"
                f"Authorization: Bearer {c.tokens['alice']}\r\nContent-Length: {len(body)}\r\n\r\n")
        sock.sendall(head.encode() + body[: len(body) // 3])
        time.sleep(0.5)
    api = c.api("alice")

    def failed_job():
        jobs = api.get("/api/v1/jobs").json()["jobs"]
        return jobs[0] if jobs and jobs[0]["state"] == "FAILED" else None

    job = dev.wait_until(failed_job, 20, "the cut upload to fail")
    assert "interrupted" in job["reason"] or "truncated" in job["reason"]
    assert not list(c.workers[0].inbox.iterdir())


def test_two_workers_share_the_jobs_by_free_capacity(cluster, images):
    c = cluster(workers=2)
    api = c.api("alice")
    ids = [submit(api, images["sleeper"], timeout=2).json()["job"]["id"] for _ in range(4)]
    jobs = [wait_state(api, i, TERMINAL) for i in ids]
    placed = [j["worker"] for j in jobs]
    assert sorted(placed) == sorted([c.workers[0].name, c.workers[1].name] * 2), placed


def test_idempotency_key_returns_the_same_job(cluster, images):
    c = cluster()
    api = c.api("alice")
    first = submit(api, images["writer"], name="once")
    with open(images["writer"], "rb") as body:
        again = api.post("/api/v1/jobs", data=body, headers={"Idempotency-Key": "k-1"})
    with open(images["writer"], "rb") as body:
        retry = api.post("/api/v1/jobs", data=body, headers={"Idempotency-Key": "k-1"})
    assert (first.status_code, again.status_code, retry.status_code) == (201, 201, 200), (first.text, again.text, retry.text)
    assert again.json()["job"]["id"] == retry.json()["job"]["id"] != first.json()["job"]["id"]


def test_resubmitting_a_held_image_sends_zero_bytes(cluster, images):
    c = cluster()
    api = c.api("alice")
    first = wait_state(api, submit(api, images["writer"]).json()["job"]["id"], TERMINAL)
    image = first["image_id"]
    dev.wait_until(lambda: api.get(f"/api/v1/images/{image}").json()["workers"], 30,
                   "the worker to report the loaded image")
    r = api.post("/api/v1/jobs", params={"image": image}, data=b"")
    assert r.status_code == 201, r.text
    job = wait_state(api, r.json()["job"]["id"], TERMINAL)
    assert job["state"] == "SUCCEEDED" and job["image_bytes"] == 0
    unknown = "sha256:" + "0" * 64
    assert api.post("/api/v1/jobs", params={"image": unknown}, data=b"").status_code == 409
    # Someone who never uploaded the image can neither see where it is nor run it for free.
    bob = c.api("bob")
    assert bob.get(f"/api/v1/images/{image}").json()["workers"] == []
    refused = bob.post("/api/v1/jobs", params={"image": image}, data=b"")
    assert refused.status_code == 409 and "upload the tarball" in refused.json()["error"]


def test_a_user_cannot_see_or_touch_another_users_job(cluster, images):
    c = cluster()
    alice, bob = c.api("alice"), c.api("bob")
    job_id = submit(alice, images["writer"]).json()["job"]["id"]
    wait_state(alice, job_id, TERMINAL)
    for method, path in [("get", ""), ("post", "/cancel"), ("get", "/logs"), ("get", "/output")]:
        r = getattr(bob, method)(f"/api/v1/jobs/{job_id}{path}")
        assert r.status_code == 404, (path, r.status_code)
    assert job_id not in [j["id"] for j in bob.get("/api/v1/jobs").json()["jobs"]]
    assert c.api(None).get("/api/v1/jobs").status_code == 401


def test_worker_killed_mid_job_is_adopted_and_the_job_runs_once(cluster, images):
    c = cluster(lease_ttl_s=30)  # a slow restart on a loaded machine must not look like a dead host
    api = c.api("alice")
    since = time.time()
    job_id = submit(api, images["counter"], timeout=120).json()["job"]["id"]
    wait_state(api, job_id, {"RUNNING"})
    c.workers[0].daemon.kill()  # SIGKILL: no goodbye, the lease is still valid for a while
    time.sleep(1)
    c.workers[0].daemon.start()
    job = wait_state(api, job_id, TERMINAL, timeout=90)
    assert job["state"] == "SUCCEEDED", job
    assert starts_of(c.workers[0].docker_url, job_id, since) == 1
    files = archive_members(api.get(f"/api/v1/jobs/{job_id}/output").content)
    assert files["out/starts"] == b"started\n"


def test_twenty_racers_one_winner(etcd, open_store):
    store = open_store(EtcdConfig(endpoints=tuple(etcd), prefix=f"/race{time.time_ns()}"))
    job, _ = store.create_job(Job(id=new_job_id(), user="alice", state=JobState.QUEUED, worker="w1"))
    lease = store.grant_lease(30)
    barrier = threading.Barrier(20)
    wins = []

    def racer(i):
        barrier.wait()
        if store.claim(job, f"w{i}", lease, ()) is not None:
            wins.append(i)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert store.get_job(job.id).state is JobState.STARTING
    assert list(store.claims().values()) == [f"w{wins[0]}"]


def test_listing_more_jobs_than_one_etcd_transaction_may_hold(etcd, open_store):
    store = open_store(EtcdConfig(endpoints=tuple(etcd), prefix=f"/many{time.time_ns()}"))
    made = {store.create_job(Job(id=new_job_id(), user="alice", state=JobState.QUEUED, worker="w1"))[0].id
            for _ in range(300)}
    listed = store.list_jobs("alice", limit=1000)
    assert {j.id for j in listed} == made
    assert [j.id for j in listed] == sorted(made, reverse=True)

