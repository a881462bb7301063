"""Usage rollups (exactly once, racing janitors), record retention, paged listings, on the
in-memory etcd (pink.store_usage, pink.store_retention, webapp.janitor.tidy)."""

from __future__ import annotations

import threading
import time

import pytest

from pink.config import WebConfig
from pink.model import Job, new_job_id
from pink.states import JobState
from pink.model import day_of, parse_day
from webapp.janitor import tidy

DAY_S = 86400.0


def _ended(cluster, user="alice", state=JobState.SUCCEEDED, **fields) -> Job:
    if "w1" not in cluster.leases:
        cluster.add_worker("w1")  # 4 CPUs
    job = cluster.add_job(user, JobState.RUNNING, **fields)
    job = cluster.store.transition(job, JobState.EXPORTING, started_at=job.updated_at - 10)
    return cluster.store.transition(job, state, finished_at=job.updated_at + 50, gpu_seconds=120.0,
                                    output_bytes=1000, output_expires_at=time.time() + 100)


def test_a_job_is_accounted_once_even_with_racing_janitors(cluster):
    jobs = [_ended(cluster, image_bytes=500, cpus=2.0) for _ in range(5)]
    jobs.append(_ended(cluster, state=JobState.FAILED))  # no CPU limit: the worker's 4 count
    barrier = threading.Barrier(4)

    def janitor():
        barrier.wait()
        for _ in range(3):
            cluster.store.account_pending()

    threads = [threading.Thread(target=janitor) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    [usage] = cluster.store.usage(day_of(time.time() - DAY_S), day_of(time.time() + DAY_S))
    assert usage.user == "alice" and usage.jobs == 6
    assert usage.states == {"SUCCEEDED": 5, "FAILED": 1}
    assert usage.gpu_seconds == 6 * 120.0
    assert usage.cpu_seconds == pytest.approx(5 * 2 * 60 + 4 * 60, abs=1)
    assert usage.bytes_in == 5 * 500 and usage.bytes_out == 6 * 1000
    assert all(cluster.store.get_job(j.id).accounted_at for j in jobs)
    assert cluster.store.account_pending() == 0  # nothing left to account


def test_the_jobs_of_one_rollup_are_accounted_together_and_a_lost_race_one_at_a_time(cluster, monkeypatch):
    """One transaction per rollup (up to ACCOUNT_GROUP jobs); when the rollup changed between its
    read and the transaction (another janitor), each job is accounted on its own, once."""
    from pink import store_usage

    monkeypatch.setattr(store_usage, "ACCOUNT_GROUP", 4)
    jobs = [_ended(cluster, "alice") for _ in range(6)] + [_ended(cluster, "bob") for _ in range(2)]
    txns = []
    txn = cluster.store._txn
    monkeypatch.setattr(cluster.store, "_txn",
                        lambda c, s, what: what.startswith("account") and txns.append(what) or txn(c, s, what))
    assert cluster.store.account_pending() == 8
    assert sorted(txns) == ["account 2 jobs of alice", "account 2 jobs of bob", "account 4 jobs of alice"]
    late = [_ended(cluster, "alice") for _ in range(3)]
    get, raced_once = cluster.store._get, []

    def raced(key):  # another janitor adds to alice's rollup right after this one read it
        value, revision = get(key)
        if "/usage/" in key and not raced_once:
            raced_once.append(key)
            assert cluster.store.account_job(late[0]) is not None
        return value, revision

    monkeypatch.setattr(cluster.store, "_get", raced)
    assert cluster.store.account_pending() == 3
    monkeypatch.setattr(cluster.store, "_get", get)
    [alice] = cluster.store.usage("2000-01-01", "2999-12-31", user="alice")
    assert alice.jobs == 9 and alice.gpu_seconds == 9 * 120.0
    assert all(cluster.store.get_job(j.id).accounted_at for j in jobs + late)
    assert cluster.store.account_pending() == 0


def test_a_job_changed_under_the_accountant_is_not_counted_twice(cluster):
    job = _ended(cluster)
    done = cluster.store.account_job(job)
    assert done is not None and done.accounted_at
    stale = cluster.store.account_job(job)  # a copy read before: the record changed since
    assert stale is not None and stale.accounted_at == done.accounted_at
    [usage] = cluster.store.usage("2000-01-01", "2999-12-31")
    assert usage.jobs == 1


def test_rollups_are_per_user_and_day_and_filtered(cluster):
    _ended(cluster, "alice")
    _ended(cluster, "bob")
    cluster.store.account_pending()
    today = day_of(time.time())
    assert {u.user for u in cluster.store.usage(today, today)} == {"alice", "bob"}
    assert [u.user for u in cluster.store.usage(today, today, user="bob")] == ["bob"]
    assert cluster.store.usage("2000-01-01", "2000-01-02") == []
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        parse_day("2026-13-01")


def test_retention_removes_only_accounted_expired_records_and_keeps_usage(cluster):
    store = cluster.store
    cfg = WebConfig(job_record_retention_days=1.0)
    old = _ended(cluster, idempotency_key="k-1")
    young = _ended(cluster)
    running = cluster.add_job("alice", JobState.RUNNING)
    now = time.time()
    # Not accounted yet: the record stays whatever its age.
    assert store.retire_expired(DAY_S, now=now + 10 * DAY_S) == 0
    assert tidy(store, cfg, now=now)["accounted"] == 2
    # `young`'s outputs expire later: only `old` is past (expiry + 1 day) at this time.
    young = cluster.rewrite(store.get_job(young.id), output_expires_at=now + 5 * DAY_S)
    result = tidy(store, cfg, now=now + 2 * DAY_S)
    assert result["retired"] == 1
    assert store.get_job(old.id) is None and store.get_job(young.id) is not None
    assert store.get_job(running.id) is not None
    assert store.job_for_idempotency_key("alice", "k-1") is None  # the key went with the record
    assert store.tombstone(old.id) is None  # retention leaves no tombstone
    assert old.id not in [j.id for j in store.list_jobs("alice")]
    [usage] = store.usage("2000-01-01", "2999-12-31")
    assert usage.jobs == 2  # the removed job's usage stays
    # 0 keeps records forever.
    assert tidy(store, WebConfig(job_record_retention_days=0), now=now + 100 * DAY_S)["retired"] == 0
    assert tidy(store, cfg, now=now + 7 * DAY_S)["retired"] == 1


def test_retention_waits_for_a_pending_reaction(cluster):
    job = _ended(cluster, notify=True)  # its outbox key waits for the reactor
    store = cluster.store
    store.account_pending()
    assert store.retire_expired(DAY_S, now=time.time() + 10 * DAY_S) == 0
    assert store.get_job(job.id) is not None


def test_deleting_an_unaccounted_job_accounts_it_in_the_same_transaction(cluster):
    job = _ended(cluster)
    assert cluster.store.delete_job(job, "alice", 60) is not None
    assert cluster.store.account_pending() == 0
    [usage] = cluster.store.usage("2000-01-01", "2999-12-31")
    assert usage.jobs == 1


def test_pages_read_newest_first_with_a_cursor(cluster):
    ids = []
    for i in range(7):
        job, _ = cluster.store.create_job(Job(id=new_job_id(time.time() + i), user="alice" if i % 2 else "bob",
                                              state=JobState.QUEUED, worker="w1"))
        ids.append(job.id)
    newest = sorted(ids, reverse=True)
    seen, cursor = [], ""
    while True:
        page, cursor = cluster.store.jobs_page(None, limit=3, before=cursor)
        seen += [j.id for j in page]
        assert len(page) <= 3
        if not cursor:
            break
    assert seen == newest
    alice, cursor = cluster.store.jobs_page("alice", limit=2)
    assert [j.id for j in alice] == [i for i in newest if cluster.store.get_job(i).user == "alice"][:2]
    rest, end = cluster.store.jobs_page("alice", limit=2, before=cursor)
    assert len(rest) == 1 and end == ""
