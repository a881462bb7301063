"""GPU quotas kept by run slots (pink.runslots) on the store, the reorder of a queued job
(pink.reorder, PATCH /api/v1/jobs/<id>) and the admins' quota and fair-share API."""

from __future__ import annotations

import json

from pink import fairshare, runslots
from pink.config import Config, SchedulingConfig
from pink.etcd import etcdrpc, transactions as tx
from pink.model import Job
from pink.reorder import set_user_priority
from pink.states import JobState
from pink.store import QueueEntry
from webapp import admin, jobs as joblogic


def job_queued(job: Job):
    return QueueEntry.of(job).as_queued


def _claim_all(cluster, taken, jobs) -> list[Job]:
    claimed = []
    for job in jobs:
        slots = taken.pick(job_queued(job))
        if slots is None:
            continue
        got = cluster.store.claim(job, job.worker, cluster.leases[job.worker], (0,), slots)
        if got is not None:
            claimed.append(got)
    return claimed


def test_a_quota_holds_when_two_workers_claim_from_the_same_snapshot(cluster):
    """Both workers read the user's slots before either claims (none taken), then each claims
    two 1-GPU jobs: w2's claims of the slots w1 took lose; re-read, only one more of the quota's
    3 GPUs gets through, and a job's end frees its slot."""
    for name in ("w1", "w2"):
        cluster.add_worker(name, gpus=4)
    queued = {name: [cluster.add_job("alice", worker=name, gpus=1) for _ in range(2)] for name in ("w1", "w2")}
    fs = fairshare.FairShare(cluster.store, SchedulingConfig(gpu_quota=3))
    snapshots = {name: fs.taken([e.as_queued for e in cluster.store.queue(name)]) for name in queued}
    assert all(s.quotas()["alice"].gpus == 0 for s in snapshots.values())
    claimed = [j for name in queued for j in _claim_all(cluster, snapshots[name], queued[name])]
    assert [j.worker for j in claimed] == ["w1", "w1"], "w2's stale picks (slots 0 and 1) lost"
    again = fs.taken([e.as_queued for e in cluster.store.queue("w2")])
    claimed += _claim_all(cluster, again, queued["w2"])
    assert len(claimed) == 3
    held = runslots.taken(cluster.store, runslots.GPUS, "alice")
    assert sorted(held) == ["0", "1", "2"] and set(held.values()) == {j.id for j in claimed}
    ended = cluster.store.transition(claimed[0], JobState.CANCELLED, reason="test")
    assert ended.run_slots == claimed[0].run_slots
    assert len(runslots.taken(cluster.store, runslots.GPUS, "alice")) == 2
    # The plan, as the web server shows it, tells the waiting job why.
    waiting = next(j for j in cluster.store.list_jobs("alice") if j.state is JobState.QUEUED)
    info = joblogic.queue_info(cluster.store, [waiting], fairshare.FairShare(cluster.store, SchedulingConfig(gpu_quota=2)))
    assert info[waiting.id][1] == "your GPU quota (2) is in use: 2 GPUs held by 2 running jobs"


def test_without_a_quota_gpu_slots_are_named_after_the_job_and_never_collide(cluster):
    cluster.add_worker("w1", gpus=4)
    job = cluster.add_job("bob", gpus=2)
    taken = fairshare.FairShare(cluster.store, SchedulingConfig()).taken([])
    slots = taken.pick(job_queued(job))
    assert slots == (f"gpuslots/bob/{job.id}.0", f"gpuslots/bob/{job.id}.1")
    claimed = cluster.store.claim(job, "w1", cluster.leases["w1"], (0, 1), slots)
    assert [user for user, _ in runslots.all_gpu_slots(cluster.store)] == ["bob", "bob"]
    cluster.store.transition(claimed, JobState.FAILED, reason="test")
    assert runslots.all_gpu_slots(cluster.store) == []


def test_a_record_from_before_run_slots_gives_its_array_slot_back(cluster):
    cluster.add_worker("w1")
    job = cluster.add_job("alice", JobState.RUNNING, array_id="a" * 20, array_limit=2)
    old = json.loads(job.to_json())  # the same record, as an older worker wrote it
    del old["run_slots"]
    old["array_slot"] = 1
    cluster.mem.Put(etcdrpc.PutRequest(key=cluster.store.job_key(job.id).encode(), value=json.dumps(old).encode()))
    cluster.store._txn([], [tx.put(cluster.store._k("arrayslots", "a" * 20, "1"), job.id)], "old slot")
    legacy = cluster.store.get_job(job.id)
    assert legacy.run_slots == (f"arrayslots/{'a' * 20}/1",)
    cluster.store.transition(legacy, JobState.FAILED, reason="test")
    assert runslots.taken(cluster.store, runslots.ARRAY, "a" * 20) == {}


def test_reorder_rewrites_job_and_queue_entry_and_loses_a_race(cluster):
    cluster.add_worker("w1")
    job = cluster.add_job("alice")
    moved = set_user_priority(cluster.store, job, 7)
    assert moved.user_priority == 7 and cluster.store.get_job(job.id).user_priority == 7
    assert cluster.store.queue("w1")[0].as_queued.user_priority == 7
    assert set_user_priority(cluster.store, job, 9) is None, "an old read loses"


def test_the_api_reorders_only_queued_jobs_of_the_caller(client, as_user, cluster):
    cluster.add_worker("w1")
    job = cluster.add_job("alice")
    alice = as_user("alice")
    resp = client.patch(f"/api/v1/jobs/{job.id}", json={"user_priority": 42}, headers=alice)
    assert resp.status_code == 200, resp.json
    assert resp.json["job"]["user_priority"] == 42 and resp.json["job"]["queue_position"] == 1
    assert client.patch(f"/api/v1/jobs/{job.id}", json={"user_priority": 101}, headers=alice).status_code == 400
    assert client.patch(f"/api/v1/jobs/{job.id}", json={"priority": 5}, headers=alice).status_code == 400
    assert client.patch(f"/api/v1/jobs/{job.id}", json={"user_priority": "1"}, headers=alice).status_code == 400
    assert client.patch(f"/api/v1/jobs/{job.id}", json={"user_priority": 1}, headers=as_user("bob")).status_code == 404
    running = cluster.add_job("alice", JobState.RUNNING)
    resp = client.patch(f"/api/v1/jobs/{running.id}", json={"user_priority": 1}, headers=alice)
    assert resp.status_code == 409 and "only a QUEUED job" in resp.json["error"]


def test_admins_set_and_reset_quotas_and_see_fair_share(client, as_user, cluster):
    root = as_user("root")
    assert client.put("/api/v1/users/alice/quota", json={"gpus": 4}, headers=as_user("alice")).status_code == 403
    assert client.put("/api/v1/users/nobody/quota", json={"gpus": 4}, headers=root).status_code == 404
    assert client.put("/api/v1/users/alice/quota", json={"gpus": -1}, headers=root).status_code == 400
    resp = client.put("/api/v1/users/alice/quota", json={"gpus": 4}, headers=root)
    assert resp.status_code == 200 and resp.json["gpu_quota"] == 4
    shares = client.get("/api/v1/fairshare", headers=root).json
    assert shares["half_life_days"] == 7.0
    assert shares["users"] == [{"user": "alice", "usage_gpu_hours": 0.0, "gpus_held": 0, "gpu_quota": 4,
                                "quota_set_by": "root"}]
    assert client.delete("/api/v1/users/alice/quota", headers=root).json["gpu_quota"] == 0
    assert client.get("/api/v1/fairshare", headers=root).json["users"] == []
    assert client.get("/api/v1/fairshare", headers=as_user("alice")).status_code == 403


def test_pink_admin_quota_commands(cluster, monkeypatch, capsys, app):
    monkeypatch.setattr(admin, "Store", lambda _cfg: cluster.store)
    monkeypatch.setattr(admin.config, "load", lambda _path: Config(scheduling=SchedulingConfig(gpu_quota=8)))
    assert admin.main(["quota", "set", "alice", "2"]) == 0
    assert "GPU quota of alice: 2" in capsys.readouterr().out
    assert fairshare.quota_overrides(cluster.store)["alice"]["gpus"] == 2
    assert admin.main(["quota", "set", "nobody", "2"]) == 1
    assert "no user 'nobody'" in capsys.readouterr().err
    assert admin.main(["quota", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("user\t") and lines[1].startswith("alice\t0.0\t0\t2\tpink-admin (")
    assert admin.main(["quota", "reset", "alice"]) == 0
    assert "the default (8)" in capsys.readouterr().out
    assert fairshare.quota_overrides(cluster.store) == {}
