"""Containers made ahead (gpu_worker.ahead) on real parts: created, not started, while the slot
is busy; started when their turn comes; removed when their job is cancelled; and never started
twice when the worker is killed between the creation and the start."""

from __future__ import annotations

import contextlib
import time

import docker
import pytest

import pink_dev as dev
from pink.config import EtcdConfig
from pink.states import JobState

from tests.helpers import starts_of, submit, wait_state

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

FAST = dict(lease_ttl_s=4, loop_interval_s=0.5, sweep_interval_s=1, etcd_overrides={"timeout_s": 2},
            web_overrides={"janitor_interval_s": 0.5, "lease_ttl_s": 3, "lost_worker_grace_s": 20})
#: A lease that outlives a restart of the worker on a loaded machine (its claims stay).
RESTART = {**FAST, "lease_ttl_s": 20}


def container(worker, job_id):
    """``docker ps -a`` of the job's container: (id, status, labels), or None."""
    with contextlib.closing(docker.DockerClient(base_url=worker.docker_url)) as engine:
        found = engine.containers.list(all=True, filters={"name": f"pink-{job_id}"})
        return (found[0].id, found[0].status, found[0].labels) if found else None


def made_ahead(worker, job_id, timeout=40):
    """The job's container once it is made ahead (created, labelled pink.ahead)."""
    return dev.wait_until(lambda: (c := container(worker, job_id)) and c[1] == "created" and "pink.ahead" in c[2] and c,
                          timeout, f"a container made ahead for {job_id}", interval=0.2)


def test_the_next_jobs_get_containers_made_ahead_started_in_turn_and_removed_on_cancel(cluster, images):
    c = cluster(max_parallel_jobs=1, containers_ahead=2, **FAST)
    w, api = c.workers[0], c.api("alice")
    since = time.time()
    running = submit(api, images["sleeper"], timeout=300).json()["job"]["id"]
    wait_state(api, running, {"RUNNING"})
    first = submit(api, images["writer"]).json()["job"]["id"]
    second = submit(api, images["writer"]).json()["job"]["id"]
    made = made_ahead(w, first)
    assert made[2]["pink.job"] == first
    made_ahead(w, second)
    assert api.get(f"/api/v1/jobs/{first}").json()["job"]["state"] == "QUEUED"  # made, not claimed
    # A cancelled job's container made ahead goes.
    assert api.post(f"/api/v1/jobs/{second}/cancel").status_code == 200
    dev.wait_until(lambda: container(w, second) is None, 20, "the cancelled job's container to go")
    # The slot frees: the container made ahead is the one that starts, once.
    assert api.post(f"/api/v1/jobs/{running}/cancel").status_code == 200
    job = wait_state(api, first, {"SUCCEEDED", "FAILED"}, timeout=60)
    assert job["state"] == "SUCCEEDED", job
    assert starts_of(w.docker_url, first, since) == 1 and starts_of(w.docker_url, second, since) == 0
    assert "hello" in api.get(f"/api/v1/jobs/{first}/logs").text
    dev.wait_until(lambda: container(w, first) is None, 20, "the reaper to remove the ended job's container")


def killed_while_made_ahead(c, images):
    """A sleeper runs in the only slot, the next job's container is made ahead, and the
    worker daemon is SIGKILLed: (worker, api, sleeper, next job, its container)."""
    w, api = c.workers[0], c.api("alice")
    running = submit(api, images["sleeper"], timeout=300).json()["job"]["id"]
    wait_state(api, running, {"RUNNING"})
    queued = submit(api, images["writer"]).json()["job"]["id"]
    made = made_ahead(w, queued)
    w.daemon.kill()
    return w, api, running, queued, made


def test_a_worker_killed_while_a_container_waits_made_ahead_runs_its_job_once(cluster, images):
    c, since = cluster(max_parallel_jobs=1, containers_ahead=1, **RESTART), time.time()
    w, api, running, queued, made = killed_while_made_ahead(c, images)
    w.daemon.start().wait_ready(30)
    # The restarted daemon does not know which record the container came from: the sweep
    # removes it while its job waits (a claim would replace it too).
    dev.wait_until(lambda: (now := container(w, queued)) is None or now[0] != made[0], 30,
                   "the container made before the restart to go")
    assert api.post(f"/api/v1/jobs/{running}/cancel").status_code == 200
    job = wait_state(api, queued, {"SUCCEEDED", "FAILED", "LOST"}, timeout=60)
    assert job["state"] == "SUCCEEDED", job
    assert starts_of(w.docker_url, queued, since) == 1


def test_a_worker_killed_between_the_claim_and_the_start_never_starts_twice(cluster, images, open_store):
    """The crash window after the claim (STARTING) and before the start of a container made
    ahead, set up exactly: kill the worker while the container waits, claim as it would have,
    restart. The job runs once, or ends LOST if the claim's lease ran out first; never twice."""
    c, since = cluster(max_parallel_jobs=1, containers_ahead=1, **RESTART), time.time()
    w, api, running, queued, made = killed_while_made_ahead(c, images)
    store = open_store(EtcdConfig(**c._etcd_section()))
    _, meta = store.etcd.call(lambda client: client.get(store._k("workers", w.name)), "lease")
    job = store.get_job(queued)
    assert store.claim(job, w.name, meta.lease_id, ()) is not None  # what the killed daemon did last
    with contextlib.closing(docker.DockerClient(base_url=w.docker_url)) as engine:
        engine.containers.get(f"pink-{running}").kill()  # its slot is free for the restart
    w.daemon.start().wait_ready(30)
    job = wait_state(api, queued, {"SUCCEEDED", "FAILED", "LOST"}, timeout=60)
    assert job["state"] in ("SUCCEEDED", "LOST"), job
    assert starts_of(w.docker_url, queued, since) == (1 if job["state"] == "SUCCEEDED" else 0)
    if job["state"] == "SUCCEEDED":
        assert container(w, queued) is None or container(w, queued)[0] != made[0]
    assert [h["state"] for h in job["history"]].count(JobState.STARTING.value) == 1
