"""Accounting and record retention on real parts (etcd, dockerd, sshd, gunicorn): jobs run,
the janitor adds them to the usage rollups once, `pink usage` prints them, the records leave
etcd when their retention (seconds here) runs out while their usage stays; and the paged job
listing through the real API and `pink ls`."""

from __future__ import annotations

import time

import pytest

import pink_dev as dev
from pink import store_usage
from pink.config import Config, EtcdConfig, WebConfig
from pink.model import User, WorkerInfo, day_of
from pink.states import JobState
from webapp import jobs as webjobs
from webapp.spec import JobSpec

from tests.helpers import cli, submit, wait_state

pytestmark = pytest.mark.integration

RETENTION_S = 12


def test_ended_jobs_are_counted_once_and_leave_etcd_after_retention_but_their_usage_stays(cluster, images, open_store):
    # Workers keep outputs forever (0): a record's retention counts from the job's end.
    c = cluster(output_retention_days=0, web_overrides={
        "janitor_interval_s": 0.5, "lease_ttl_s": 3, "job_record_retention_days": RETENTION_S / 86400})
    store = open_store(EtcdConfig(**c._etcd_section()))
    alice, bob = c.api("alice"), c.api("bob")
    with open(images["writer"], "rb") as body:
        first = alice.post("/api/v1/jobs", data=body, headers={"Idempotency-Key": "k1"}).json()["job"]["id"]
    assert store.job_for_idempotency_key("alice", "k1").id == first
    ids = [first,
           submit(alice, images["fail"]).json()["job"]["id"],
           submit(bob, images["writer"]).json()["job"]["id"]]
    ended = [wait_state(alice if i < 2 else bob, job_id, {"SUCCEEDED", "FAILED"}) for i, job_id in enumerate(ids)]
    assert [j["state"] for j in ended] == ["SUCCEEDED", "FAILED", "SUCCEEDED"]

    # Pages through the real API, newest first, while the records are there.
    admin = c.api(c.admin_user)
    seen, cursor = [], ""
    while True:
        page = admin.get("/api/v1/jobs", params={"all": "1", "limit": "1", **({"before": cursor} if cursor else {})}).json()
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next"] or ""
        if not cursor:
            break
    assert seen == sorted(ids, reverse=True)
    listed = cli(c, c.admin_user, "ls", "--all", "-n", "2")
    assert listed.returncode == 0, listed.stderr
    assert f"--before {sorted(ids)[-2]}" in listed.stderr and sorted(ids)[0] not in listed.stdout

    # The janitor accounts each job once, with its numbers.
    accounted = dev.wait_until(lambda: all((j := alice.get(f"/api/v1/jobs/{i}").json()["job"])["accounted_at"]
                                           for i in ids[:2]) and j, 15, "alice's jobs to be accounted", interval=0.3)
    assert accounted
    usage = alice.get("/api/v1/usage").json()
    assert usage["total"]["jobs"] == 2 and usage["total"]["states"] == {"SUCCEEDED": 1, "FAILED": 1}
    writer = ended[0]
    assert usage["total"]["bytes_out"] == writer["output_bytes"] + ended[1]["output_bytes"]
    assert usage["total"]["bytes_in"] == writer["image_bytes"] + ended[1]["image_bytes"] > 0
    # CPU-seconds: the job's CPUs (its worker's when it had no limit) x its run time, which
    # is about 0 for these jobs (docker's FinishedAt may even come a little before StartedAt).
    expected = sum((j["cpus"] or store.get_worker(j["worker"]).cpus) * max(0.0, j["finished_at"] - j["started_at"])
                   for j in ended[:2])
    assert usage["total"]["cpu_seconds"] == pytest.approx(expected, abs=0.002)
    printed = cli(c, "alice", "usage")
    assert printed.returncode == 0, printed.stderr
    assert "alice" in printed.stdout and "failed 1, succeeded 1" in printed.stdout and "bob" not in printed.stdout
    by_day = cli(c, c.admin_user, "usage", "--by", "day", "--since", day_of(time.time() - 86400))
    assert day_of(time.time()) in by_day.stdout and "failed 1, succeeded 2" in by_day.stdout
    assert cli(c, "alice", "usage", "--user", "bob").returncode != 0

    # Past retention the records leave etcd with their indexes and idempotency key.
    for job_id in ids:
        dev.wait_until(lambda: store.get_job(job_id) is None, RETENTION_S + 20, f"job {job_id} to leave etcd",
                       interval=0.5)
    assert alice.get(f"/api/v1/jobs/{ids[0]}").status_code == 404
    assert store.job_for_idempotency_key("alice", "k1") is None
    assert alice.get("/api/v1/jobs").json() == {"jobs": [], "next": None}
    assert not [k for k, _, _ in store._get_prefix(store._k(""), keys_only=True)
                if any(i in k for i in ids)]  # nothing of them is left (no index, mark or tombstone)
    after = admin.get("/api/v1/usage").json()
    assert after["total"]["jobs"] == 3 and [u["user"] for u in after["by_user"]] == ["alice", "bob"]
    assert after["by_user"][0] == {**usage["total"], "user": "alice", "day": ""}  # (a sum over days)


def test_many_ended_jobs_of_one_user_are_accounted_in_full_transactions_on_real_etcd(etcd, open_store):
    """A rollup's group of jobs (store_usage.ACCOUNT_GROUP: 32 jobs, 97 operations and 33
    compares) is one transaction etcd takes (its default limit is 128 operations)."""
    store = open_store(EtcdConfig(endpoints=tuple(etcd), prefix="/acct"))
    image = "sha256:" + "cd" * 32
    lease = store.grant_lease(600)
    store.register_worker(WorkerInfo(name="w1", ssh_host="127.0.0.1", ssh_port=22, ssh_user="pink-transfer",
                                     inbox="/in", outbox="/out", cpus=8, max_parallel_jobs=4,
                                     memory_bytes=1 << 36, images=(image,)), lease)
    cfg, root = Config(web=WebConfig(quota_queued_jobs=1000)), User("root", "", admin=True)
    n = store_usage.ACCOUNT_GROUP + 8
    for _ in range(n):
        job, _ = webjobs.submit(cfg, store, None, None, root, JobSpec(image_id=image), body=None, length=None)
        job = store.claim(job, "w1", lease, ())
        job = store.transition(job, JobState.RUNNING, started_at=time.time())
        job = store.transition(job, JobState.EXPORTING)
        assert store.transition(job, JobState.SUCCEEDED, finished_at=time.time()) is not None
    txns = []
    txn = store._txn
    store._txn = lambda c, s, what: what.startswith("account") and txns.append(what) or txn(c, s, what)
    assert store.account_pending(limit=200) == n
    assert sorted(txns, key=len) == ["account 8 jobs of root", f"account {store_usage.ACCOUNT_GROUP} jobs of root"]
    [usage] = store.usage("2000-01-01", "2999-12-31")
    assert usage.jobs == n and usage.states == {"SUCCEEDED": n}
    assert store.account_pending() == 0
