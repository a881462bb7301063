"""Helpers shared by the integration, fault and browser tests."""

from __future__ import annotations

import io
import subprocess
import tarfile
import time

import docker

TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED", "LOST"}


def submit(api, tar, **params):
    with open(tar, "rb") as body:
        return api.post("/api/v1/jobs", params=params, data=body)


def wait_state(api, job_id, states, timeout=60):
    deadline = time.time() + timeout
    job = None
    while time.time() < deadline:
        job = api.get(f"/api/v1/jobs/{job_id}").json()["job"]
        if job["state"] in states:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not reach {states}: {job}")


def archive_members(data: bytes) -> dict[str, bytes]:
    raw = subprocess.run(["zstd", "-d", "-c"], input=data, capture_output=True, check=True).stdout
    out = {}
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        for m in tar.getmembers():
            if m.isfile():
                out[m.name.lstrip("./")] = tar.extractfile(m).read()
    return out


def starts_of(docker_url, job_id, since):
    client = docker.DockerClient(base_url=docker_url)
    try:
        events = client.events(since=int(since) - 1, until=int(time.time()) + 1, decode=True,
                               filters={"event": "start", "container": f"pink-{job_id}"})
        return sum(1 for _ in events)
    finally:
        client.close()


