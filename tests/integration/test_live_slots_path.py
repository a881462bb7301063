"""Live job slots and estimated start times on real parts (etcd, dockerd, sshd, gunicorn, a
worker daemon): a queued job's estimate follows the time limit of the job ahead; an admin gives
the worker a second slot with `pink-admin worker slots` and the queued job starts without a
restart; a reset lowers it again and stops no running job."""

from __future__ import annotations

import time

import pytest

import pink_dev as dev
from pink_dev.config import run_admin
from tests.helpers import TERMINAL, cli, submit, wait_state

pytestmark = pytest.mark.integration

LIMIT = 120


def _worker(api):
    return api.get("/api/v1/workers").json()["workers"][0]


def test_slots_change_live_and_queued_jobs_start_by_their_estimate(cluster, images):
    # A CPU-only job's default memory is the host's / the CONFIGURED slots (all of it here):
    # a worker whose slots are raised live needs memory_per_job for more jobs to fit.
    c = cluster(max_parallel_jobs=1, memory_per_job="256m")
    api, admin = c.api("alice"), c.api(c.admin_user)
    name = _worker(api)["name"]
    assert (_worker(api)["max_parallel_jobs"], _worker(api)["slots_configured"]) == (1, 1)
    pid = c.workers[0].daemon.pid

    first = submit(api, images["sleeper"], timeout=LIMIT).json()["job"]["id"]
    started = wait_state(api, first, {"RUNNING"})["started_at"]
    second = submit(api, images["sleeper"], timeout=60).json()["job"]["id"]
    job = wait_state(api, second, {"QUEUED"})
    assert job["waiting_reason"] == "waiting for a free job slot (1 running)"
    # It starts by the first job's limit at the latest: within LIMIT of that job's start.
    assert abs(job["estimated_start_at"] - (started + LIMIT)) < 1.0, (job, started)
    assert time.time() < job["estimated_start_at"] <= time.time() + LIMIT
    status = cli(c, "alice", "status", second)
    assert "at the latest" in status.stdout and "full time limits" in status.stdout, status

    # A second slot, live: the queued job starts within moments, the daemon is the same process.
    out = run_admin(c.config_path, "worker", "slots", name, "2")
    assert f"worker {name}: 2 job slots" in out
    t0 = time.monotonic()
    wait_state(api, second, {"RUNNING"}, timeout=30)
    took = time.monotonic() - t0
    assert c.workers[0].daemon.pid == pid, "no restart"
    worker = dev.wait_until(lambda: (w := _worker(api))["max_parallel_jobs"] == 2 and w, 10, "the heartbeat's slots")
    assert worker["slots_configured"] == 1
    assert "2 (config 1)" in cli(c, "alice", "workers").stdout

    # Bad input is refused and changes nothing.
    r = admin.put(f"/api/v1/workers/{name}/slots", json={"slots": 0})
    assert r.status_code == 400 and "from 1 to 256" in r.json()["error"]

    # Back to the configured 1 while two run: neither stops; a third job waits.
    r = admin.delete(f"/api/v1/workers/{name}/slots")
    assert r.status_code == 200 and r.json()["reset"] is True
    dev.wait_until(lambda: _worker(api)["max_parallel_jobs"] == 1, 10, "the slots back at 1")
    third = submit(api, images["writer"], timeout=30).json()["job"]["id"]
    job = wait_state(api, third, {"QUEUED"})
    time.sleep(2)
    assert api.get(f"/api/v1/jobs/{third}").json()["job"]["state"] == "QUEUED"
    assert [api.get(f"/api/v1/jobs/{j}").json()["job"]["state"] for j in (first, second)] == ["RUNNING"] * 2
    # Its estimate: when both jobs ahead have reached their limits (first + LIMIT, second + 60).
    second_started = api.get(f"/api/v1/jobs/{second}").json()["job"]["started_at"]
    expected = max(started + LIMIT, second_started + 60)
    assert abs(api.get(f"/api/v1/jobs/{third}").json()["job"]["estimated_start_at"] - expected) < 1.0

    # The setting survives a restart of the worker until reset; this one is reset, so 1.
    for j in (first, second):
        api.post(f"/api/v1/jobs/{j}/cancel")
    assert wait_state(api, third, TERMINAL, timeout=90)["state"] == "SUCCEEDED"
    print(f"queued job started {took:.2f} s after `pink-admin worker slots`")


def test_a_slot_setting_survives_a_worker_restart(cluster, images):
    c = cluster(max_parallel_jobs=1)
    api = c.api("alice")
    name = _worker(api)["name"]
    run_admin(c.config_path, "worker", "slots", name, "3")
    dev.wait_until(lambda: _worker(api)["max_parallel_jobs"] == 3, 10, "3 slots")
    c.stop_worker(0)
    c.workers[0].daemon.start().wait_ready(60)
    dev.wait_until(lambda: (w := _worker(api))["alive"] and w["max_parallel_jobs"] == 3, 30, "3 slots after a restart")
    assert "back to its configured max_parallel_jobs (1)" in run_admin(c.config_path, "worker", "slots", name, "--reset")
    dev.wait_until(lambda: _worker(api)["max_parallel_jobs"] == 1, 10, "1 slot after the reset")
