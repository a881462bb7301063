"""Image GC on real parts: a worker whose free-disk threshold is set above the real free space
(so it is always "under" it) removes the job images it loaded once no job needs them, keeps
the image of a running job and of a queued one, and never touches an image it did not load."""

from __future__ import annotations

import contextlib
import time

import docker
import docker.errors
import pytest

from pink_dev.sampleimage import build_sample_image
from tests.helpers import TERMINAL, submit, wait_state

pytestmark = pytest.mark.integration


def _held(docker_url: str, image_id: str) -> bool:
    with contextlib.closing(docker.DockerClient(base_url=docker_url)) as engine:
        try:
            engine.images.get(image_id)
            return True
        except docker.errors.ImageNotFound:
            return False


def _wait(check, what, timeout=30):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.3)


def test_a_worker_under_its_disk_threshold_removes_old_job_images_only(cluster, tmp_path):
    c = cluster(max_parallel_jobs=1, image_gc_min_free_bytes=1 << 60, image_gc_interval_s=1)
    w = c.workers[0]
    api = c.api("alice")
    # An image loaded by hand on the worker's engine: not PINK's, never removed.
    foreign = build_sample_image("pink-test-foreign:latest", "echo foreign", docker_host=w.docker_url)
    tars = {name: tmp_path / f"{name}.tar" for name in ("old", "running", "queued")}
    ids = {name: build_sample_image(f"pink-test-gc-{name}:latest", script, tars[name], docker_host=None)
           for name, script in (("old", "echo old"), ("running", "sleep 8"), ("queued", "echo queued"))}

    old = submit(api, tars["old"]).json()["job"]["id"]
    assert wait_state(api, old, TERMINAL)["state"] == "SUCCEEDED"
    # The old job's image goes within a GC interval or two, and leaves the worker's report first.
    _wait(lambda: not _held(w.docker_url, ids["old"]), "the old job's image is removed")
    worker = api.get("/api/v1/workers").json()["workers"][0]
    assert ids["old"] not in worker["images"]
    resubmit = api.post(f"/api/v1/jobs/{old}/resubmit")
    assert resubmit.status_code == 409 and "the tarball" in resubmit.json()["error"]

    running = submit(api, tars["running"]).json()["job"]["id"]
    wait_state(api, running, {"RUNNING"})
    queued = submit(api, tars["queued"]).json()["job"]["id"]  # waits: one job at a time
    assert api.get(f"/api/v1/jobs/{queued}").json()["job"]["state"] == "QUEUED"
    time.sleep(3)  # several GC passes while both are needed
    assert _held(w.docker_url, ids["running"]) and _held(w.docker_url, ids["queued"])
    assert api.get(f"/api/v1/jobs/{queued}").json()["job"]["state"] == "QUEUED"
    worker = c.api(c.admin_user).get("/api/v1/workers").json()["workers"][0]  # admins see every image
    assert worker["image_cache_bytes"] > 0 and worker["disk_free_bytes"] > 0
    assert ids["running"] in worker["images"] and ids["queued"] in worker["images"]

    assert [wait_state(api, j, TERMINAL, timeout=60)["state"] for j in (running, queued)] == ["SUCCEEDED"] * 2
    _wait(lambda: not _held(w.docker_url, ids["running"]) and not _held(w.docker_url, ids["queued"]),
          "both images are removed once their jobs ended")
    assert _held(w.docker_url, foreign), "an image PINK did not load is never removed"
    _wait(lambda: api.get("/api/v1/workers").json()["workers"][0]["image_cache_bytes"] == 0,
          "the cache is reported empty")
