"""Helpers shared by the integration, fault and browser tests."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import docker
import pytest

import pink_dev as dev
from pink.states import TERMINAL as TERMINAL_STATES

TERMINAL = frozenset(s.value for s in TERMINAL_STATES)
#: Services whose log tails go into the report of a failing test (see tests/conftest.py).
LOGGED_SERVICES = pytest.StashKey[list[dev.Service]]()


def track_logs(node: pytest.Item | pytest.Session, *services: dev.Service) -> None:
    """A test of ``node`` (one test, or the whole session) that fails shows these logs' tails."""
    node.stash.setdefault(LOGGED_SERVICES, []).extend(services)


def cli(cluster, user, *argv):
    """Run the ``pink`` CLI as ``user`` against ``cluster`` (its token; no saved login)."""
    env = {**os.environ, "PINK_URL": cluster.url, "PINK_TOKEN": cluster.tokens[user],
           "PINK_CLI_CONFIG": "/nonexistent/pink-cli.json"}
    if cluster.ca_cert:
        env["PINK_CA_CERT"] = str(cluster.ca_cert)
    return subprocess.run([sys.executable, "-m", "pink_client", *argv], env=env, cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=300)


def most_claimed_at_once(jobs: list[dict]) -> int:
    """From the jobs' histories: the most that were claimed (STARTING until they ended) at once."""
    edges = []
    for job in jobs:
        states = {h["state"]: h["at"] for h in job["history"]}
        if "STARTING" in states:
            edges += [(states["STARTING"], 1), (states[job["state"]], -1)]
    most = now = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):  # an end before a start at the same time
        now += step
        most = max(most, now)
    return most


def submit(api, tar, **params):
    with open(tar, "rb") as body:
        return api.post("/api/v1/jobs", params=params, data=body)


def submit_spec(api, tar, spec, **params):
    """Submit with the spec in the Pink-Job-Spec header (as the CLI sends lists and objects)."""
    with open(tar, "rb") as body:
        return api.post("/api/v1/jobs", params=params, data=body,
                        headers={"Pink-Job-Spec": json.dumps(spec, ensure_ascii=True)})


def wait_state(api, job_id, states, timeout=60):
    """The job once it is in one of ``states``."""
    return dev.wait_until(lambda: (job := api.get(f"/api/v1/jobs/{job_id}").json()["job"])["state"] in states and job,
                          timeout, f"job {job_id} to reach {sorted(states)}", interval=0.2)


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




def start_fake_gpu_worker(cluster, fakebin: Path, index: int = 0):
    """Start ``cluster``'s worker ``index`` (made with start_workers=False) and its engine with the
    fake GPU tools in ``fakebin`` (dev.fake_nvidia_smi) on their PATH. dockerd enables its
    "nvidia" device driver when nvidia-container-runtime-hook is on its PATH; a stub of it lets
    containers start without a GPU, with everything up to the hook done for real."""
    hook = fakebin / "nvidia-container-runtime-hook"
    hook.write_text("#!/bin/sh\nexit 0\n")
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    path = f"{fakebin}:{os.environ['PATH']}"
    w = cluster.workers[index]
    w.dockerd.stop()
    w.dockerd.extra_args = ["--add-runtime", "nvidia=/usr/sbin/runc"]
    w.dockerd.extra_env["PATH"] = path
    w.dockerd.start().wait_ready(60)
    w.daemon.extra_env["PATH"] = path
    w.daemon.start().wait_ready(60)
    return w
