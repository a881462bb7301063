"""Fair share, own-job order and GPU quotas on real parts (etcd, dockerd, sshd + gate, gunicorn,
worker daemons): a user with heavy recent usage waits behind another user's newer job; `pink
reorder` changes which of a user's jobs starts first; a per-user GPU quota holds while two
workers claim at once (from the jobs' own histories)."""

from __future__ import annotations

import time

import pytest

import pink_dev as dev
from pink import config as pink_config
from pink.etcd import transactions as tx
from pink.model import day_of
from pink.store_usage import Usage
from tests.helpers import TERMINAL, cli, most_claimed_at_once, start_fake_gpu_worker, submit_spec, wait_state

pytestmark = pytest.mark.integration


def _started(api, job_id: str) -> float:
    job = wait_state(api, job_id, TERMINAL, timeout=90)
    assert job["state"] == "SUCCEEDED", job
    return next(h["at"] for h in job["history"] if h["state"] == "STARTING")


def _sleep(api, tar, seconds: float, **spec) -> str:
    resp = submit_spec(api, tar, {"command": ["sh", "-c", f"sleep {seconds}"], "output": "none", **spec})
    assert resp.status_code == 201, resp.text
    return resp.json()["job"]["id"]


def test_heavy_recent_usage_waits_behind_a_newer_job_and_reorder_picks_the_users_first(cluster, images, open_store):
    c = cluster(max_parallel_jobs=1)
    store = open_store(pink_config.load(str(c.config_path), env={}).etcd)
    # Alice used 50 GPU-hours today (as the accounting janitor would have rolled up).
    heavy = Usage(day_of(time.time()), "alice", jobs=10, gpu_seconds=50 * 3600)
    store._txn([], [tx.put(store.usage_key(heavy.day, "alice"), heavy.to_json())], "test rollup")
    alice, bob = c.api("alice"), c.api("bob")
    tar = images["writer"]
    blocker = _sleep(alice, tar, 300)  # holds the only job slot until cancelled below
    wait_state(alice, blocker, {"RUNNING"})
    a_old, a_new = _sleep(alice, tar, 0), _sleep(alice, tar, 0)
    b = _sleep(bob, tar, 0)  # the newest of all
    r = cli(c, "alice", "reorder", a_new, "10")
    assert r.returncode == 0, r.stderr
    assert f"job {a_new}: user priority 10, queue position 2" in r.stdout
    waiting = alice.get(f"/api/v1/jobs/{a_old}").json()["job"]
    assert waiting["queue_position"] == 3
    assert "fair share put bob's jobs first (recent GPU-hours, decayed: bob 0.0, yours" in waiting["waiting_reason"]
    assert alice.post(f"/api/v1/jobs/{blocker}/cancel", params={"discard": "1"}).status_code == 200
    starts = {job_id: _started(alice if job_id != b else bob, job_id) for job_id in (a_old, a_new, b)}
    assert sorted(starts, key=starts.get) == [b, a_new, a_old]
    # Admins see the usage behind it.
    shares = c.api("root").get("/api/v1/fairshare").json()["users"]
    assert next(u for u in shares if u["user"] == "alice")["usage_gpu_hours"] >= 40


def test_a_gpu_quota_holds_while_two_workers_claim_at_once(cluster, images, tmp_path, open_store):
    fakebin = tmp_path / "fakebin"
    dev.fake_nvidia_smi(fakebin, [(f"GPU-{i:08x}-0000-0000-0000-000000000000", "NVIDIA H100 80GB HBM3", 81559)
                                  for i in range(2)])
    c = cluster(workers=2, own_engines=True, start_workers=False, max_parallel_jobs=4,
                scheduling_overrides={"gpu_quota": 2})
    # A dataset on each worker steers jobs to it: "left" on worker 0, "right" on worker 1.
    for i, name in enumerate(("left", "right")):
        (tmp_path / name).mkdir()
        c.workers[i].configure(datasets={name: str(tmp_path / name)})
        start_fake_gpu_worker(c, fakebin, index=i)
    api = c.api("alice")
    tar = images["writer"]
    first = [_sleep(api, tar, 300, gpus=1, data=["left"]) for _ in range(2)]  # cancelled below
    for job_id in first:
        wait_state(api, job_id, {"RUNNING"})
    # Alice's quota is in use: these wait on both workers, and both see it free at once.
    rest = [_sleep(api, tar, 2, gpus=1, data=[side]) for side in ("left", "right", "right", "left")]
    right = api.get(f"/api/v1/jobs/{rest[1]}").json()["job"]
    assert right["state"] == "QUEUED"
    assert right["waiting_reason"] == "your GPU quota (2) is in use: 2 GPUs held by 2 running jobs"
    for job_id in first:
        assert api.post(f"/api/v1/jobs/{job_id}/cancel", params={"discard": "1"}).status_code == 200
    jobs = [wait_state(api, job_id, TERMINAL, timeout=120) for job_id in first + rest]
    assert [j["state"] for j in jobs] == ["CANCELLED"] * 2 + ["SUCCEEDED"] * 4
    assert {j["worker"] for j in jobs} == {c.workers[0].name, c.workers[1].name}
    assert most_claimed_at_once(jobs) == 2
    # Every slot went back with its job's end.
    store = open_store(pink_config.load(str(c.config_path), env={}).etcd)
    assert store._get_prefix(store._k("gpuslots", "")) == []
