"""What a job may not do, on real parts (etcd, dockerd, sshd + gate, gunicorn, worker daemon):
keep more than the batch capabilities, use more than its memory (the kernel kills it, the job
fails saying so, the worker runs on), print more than worker.max_log_bytes (the log is cut with
a line saying so), leave more than worker.max_output_bytes of archive (the job fails saying
so, no archive) or write more than worker.max_disk_bytes to its own filesystem (it is stopped and
fails saying so). And a log under the cap is whole, even when Docker's JSON copy of it is large."""

from __future__ import annotations

import contextlib

import docker
import pytest

import pink_dev as dev
from gpu_worker.container import JOB_CAPABILITIES, LOG_FILE_FACTOR, host_memory_bytes

from tests.helpers import TERMINAL, submit, submit_spec, wait_state

pytestmark = pytest.mark.integration

MiB = 1 << 20


def shell(script):
    """A spec running ``script`` with the image's busybox sh."""
    return {"entrypoint": ["sh", "-c"], "command": [script]}


def test_a_job_keeps_only_the_batch_capabilities_and_gets_default_limits(cluster, images):
    c = cluster(max_parallel_jobs=2)
    api = c.api("alice")
    r = submit_spec(api, images["writer"], shell("grep ^CapEff /proc/self/status; sleep 60"), timeout=120)
    assert r.status_code == 201, r.text
    job = wait_state(api, r.json()["job"]["id"], {"RUNNING"} | TERMINAL)
    assert job["state"] == "RUNNING", job
    # A CPU-only job that asks for no memory gets the host's memory / max_parallel_jobs.
    assert job["memory_bytes"] == host_memory_bytes() // 2
    with contextlib.closing(docker.DockerClient(base_url=c.workers[0].docker_url)) as engine:
        host = engine.containers.get(f"pink-{job['id']}").attrs["HostConfig"]
    assert host["CapDrop"] == ["ALL"]
    assert host["CapAdd"] == list(JOB_CAPABILITIES)
    assert host["SecurityOpt"] == ["no-new-privileges"] and host["Privileged"] is False
    assert host["PidsLimit"] == 4096
    assert host["Memory"] == host["MemorySwap"] == job["memory_bytes"]
    assert host["LogConfig"] == {"Type": "json-file",
                                 "Config": {"max-size": str(LOG_FILE_FACTOR * 100 * MiB), "max-file": "2"}}
    # Inside: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID (bits 0, 1, 3-7).
    dev.wait_until(lambda: api.get(f"/api/v1/jobs/{job['id']}/logs").text == "CapEff:\t00000000000000fb\n", 30,
                   "the job's capabilities in its log")
    assert api.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 200


def test_a_job_over_its_memory_limit_fails_saying_so_and_the_worker_runs_on(cluster, images):
    c = cluster()
    api = c.api("alice")
    # tail keeps what it read of /dev/zero in memory, looking for a line's end that never comes.
    r = submit_spec(api, images["writer"], shell("echo start; exec tail /dev/zero"), memory="64m")
    assert r.status_code == 201, r.text
    job = wait_state(api, r.json()["job"]["id"], TERMINAL)
    assert job["state"] == "FAILED" and job["exit_code"] == 137, job
    # Docker says OOMKilled where it can tell (cgroup v2); the reason is hedged where it cannot.
    assert job["reason"] in {
        "out of memory: the job used its whole memory limit of 64 MiB; ask for more with --memory",
        "killed (exit code 137), most likely out of memory: the job used its whole memory limit of 64 MiB; "
        "ask for more with --memory"}, job
    assert api.get(f"/api/v1/jobs/{job['id']}/logs").text == "start\n"
    r = submit(api, images["writer"])
    assert wait_state(api, r.json()["job"]["id"], TERMINAL)["state"] == "SUCCEEDED"


def test_a_log_under_the_cap_is_whole(cluster, images):
    """6 MB in 300,000 lines is ~27 MB of Docker's JSON, which Docker sends for seconds after the
    job ended: the worker waits for all of it (it gave up after 10 s, and Docker's 100 MB
    json-file, rotated under the copy, lost more of longer logs of short lines)."""
    c = cluster()
    api = c.api("alice")
    # In bursts: Docker drops what it has not stored 2 s after a job's end (its limit, not ours).
    r = submit_spec(api, images["writer"], shell(
        "i=0; while [ $i -lt 60 ]; do yes 0123456789abcdefghi | head -n 5000; sleep 0.05; i=$((i+1)); done"))
    job = wait_state(api, r.json()["job"]["id"], TERMINAL, timeout=180)
    assert job["state"] == "SUCCEEDED", job
    assert job["log_bytes"] == 6_000_000
    assert api.get(f"/api/v1/jobs/{job['id']}/logs").content == b"0123456789abcdefghi\n" * 300_000


def test_the_log_and_output_caps(cluster, images):
    c = cluster(max_log_bytes=100_000, max_output_bytes=4 * MiB)  # busybox alone is ~1 MiB
    api = c.api("alice")
    outbox = c.workers[0].outbox
    line = "x" * 99 + "\n"
    r = submit_spec(api, images["writer"], shell(f"yes {line[:-1]} | head -n 3000; echo done > /out.txt"))
    chatty = wait_state(api, r.json()["job"]["id"], TERMINAL)
    # A long log does not fail the job: it keeps its first 100000 bytes and says it was cut.
    assert chatty["state"] == "SUCCEEDED", chatty["reason"]
    log = api.get(f"/api/v1/jobs/{chatty['id']}/logs").text
    assert log == line * 1000 + "[PINK: log cut at 100000 bytes: the job printed more]\n"
    assert chatty["log_bytes"] == len(log) == (outbox / f"{chatty['id']}.log").stat().st_size
    assert chatty["output_bytes"] > 0

    # 8 MB of random bytes do not compress under the cap of 4 MiB: no archive, and a reason.
    r = submit_spec(api, images["writer"], shell("echo writing; head -c 8000000 /dev/urandom > /big"))
    big = wait_state(api, r.json()["job"]["id"], TERMINAL)
    assert big["state"] == "FAILED" and big["exit_code"] == 0, big
    assert big["reason"] == ("the output passed the cap of 4194304 bytes (worker.max_output_bytes): "
                             "write less, or ask the operators")
    assert big["output_bytes"] == 0
    assert sorted(p.name for p in outbox.iterdir() if p.name.startswith(big["id"])) == [f"{big['id']}.log"]
    assert api.get(f"/api/v1/jobs/{big['id']}/logs").text == "writing\n"


def test_a_job_past_its_disk_cap_is_stopped_fails_saying_so_and_the_worker_runs_on(cluster, images):
    c = cluster(max_disk_bytes=64 * MiB, disk_check_interval_s=0.5, stop_grace_s=1)
    api = c.api("alice")
    # 128 MiB of zeros into /tmp (the writable layer, no tmpfs), then wait to be stopped.
    r = submit_spec(api, images["writer"], shell("head -c 134217728 /dev/zero > /tmp/big; echo wrote; sleep 120"),
                    timeout=600)
    assert r.status_code == 201, r.text
    job = wait_state(api, r.json()["job"]["id"], TERMINAL, timeout=120)
    assert job["state"] == "FAILED", job
    assert job["reason"] == ("the job wrote more than 67108864 bytes to its own filesystem (worker.max_disk_bytes): "
                             "write less, or ask the operators"), job
    assert job["exit_code"] in {137, 143}, job  # sh as PID 1 ignores SIGTERM: SIGKILL after the grace
    assert job["finished_at"] - job["started_at"] < 60, job
    # As after a timeout, what it wrote is exported (zeros compress to little).
    assert job["output_bytes"] > 0
    assert api.get(f"/api/v1/jobs/{job['id']}/logs").text == "wrote\n"
    r = submit(api, images["writer"])
    assert wait_state(api, r.json()["job"]["id"], TERMINAL)["state"] == "SUCCEEDED"
