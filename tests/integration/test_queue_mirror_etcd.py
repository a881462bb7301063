"""The queue mirror of each web server process (pink.queues.QueueMirror) on a real etcd: it
follows the store's writes through its watch, lists again after its etcd member went away,
submissions in a row see each other (on one web server and across two), and a mirror that
stopped following changes nothing but costs a full read."""

from __future__ import annotations

import time

import pytest

import pink_dev as dev
from pink.config import Config, EtcdConfig, WebConfig
from pink.model import User, WorkerInfo
from pink.queues import QueueLoad
from pink.states import JobState
from pink.store import Store
from webapp import jobs
from webapp.spec import JobSpec, SubmitError

pytestmark = pytest.mark.integration

IMG = "sha256:" + "cd" * 32
ROOT = User("root", "", admin=True)  # may reuse the image the workers hold


def store_on(endpoints) -> Store:
    return Store(EtcdConfig(endpoints=tuple(endpoints), prefix="/mirror"))


def register(store: Store, *names: str) -> None:
    lease = store.grant_lease(600)
    for name in names:
        store.register_worker(WorkerInfo(
            name=name, ssh_host="127.0.0.1", ssh_port=22, ssh_user="pink-transfer", inbox="/in",
            outbox="/out", cpus=8, max_parallel_jobs=4, memory_bytes=1 << 36, images=(IMG,)), lease)


def submit(store: Store, quota: int = 100, user: User = ROOT):
    cfg = Config(web=WebConfig(quota_queued_jobs=quota))
    job, created = jobs.submit(cfg, store, None, None, user, JobSpec(image_id=IMG), body=None, length=None)
    assert created
    return job


def sums(load: QueueLoad) -> tuple[dict, dict]:
    return {n: (w.jobs, w.queued, w.running, w.gpu_seconds) for n, w in load.workers.items()}, load.waiting


def in_step(store: Store) -> None:
    """Wait until the mirror answers alone (its watch delivered everything), and check that its
    sums are those of a full read."""
    def answers_alone() -> bool:
        before = store.queue_mirror.fallbacks
        store.queue_load()
        return store.queue_mirror.fallbacks == before

    dev.wait_until(answers_alone, 15, "the mirror to catch up")
    assert sums(store.queue_load()) == sums(QueueLoad.of(store.all_queues()))
    ids = lambda queues: {w: sorted(e.job_id for e in entries) for w, entries in queues.items()}  # noqa: E731
    assert ids(store.queue_mirror.queues()) == ids(store.all_queues())


def test_the_mirror_follows_creations_claims_and_ends(etcd):
    store = store_on(etcd)
    register(store, "w1", "w2")
    first, second = submit(store), submit(store)
    assert {first.worker, second.worker} == {"w1", "w2"}, "the second job went to the idle worker"
    in_step(store)
    lease = store.grant_lease(60)
    claimed = store.claim(first, first.worker, lease, ())
    assert claimed is not None
    in_step(store)
    assert store.queue_load().worker(first.worker).running == 1
    store.transition(second, JobState.CANCELLED)
    in_step(store)
    assert second.worker not in store.queue_load().workers, "an ended job leaves its worker's load"
    assert store.queue_mirror.fallbacks <= 3


def test_submissions_in_a_row_see_each_other_on_one_web_server_and_across_two(etcd):
    web1, web2 = store_on(etcd), store_on(etcd)
    register(web1, "w1")
    submit(web1)  # starts web1's mirror; in step from then on
    in_step(web1)
    with pytest.raises(SubmitError) as refused:
        submit(web1, quota=1)  # right after: the first counts against the quota
    assert refused.value.status == 429
    submit(web2, quota=2)
    with pytest.raises(SubmitError):
        submit(web1, quota=2)  # web2's job, made just before, counts on web1 too


def test_a_mirror_that_stopped_following_only_costs_full_reads(etcd):
    store = store_on(etcd)
    register(store, "w1", "w2")
    submit(store)
    in_step(store)
    store.queue_mirror.stop()
    made = [submit(store, quota=4) for _ in range(3)]
    with pytest.raises(SubmitError):
        submit(store, quota=4)
    assert store.queue_mirror.fallbacks >= 3, "a stale mirror is never used"
    assert sums(store.queue_load()) == sums(QueueLoad.of(store.all_queues()))
    # Jobs are made and claimed by their own transactions, whatever the mirror says.
    lease = store.grant_lease(60)
    assert store.claim(made[0], made[0].worker, lease, ()) is not None
    assert store.claim(made[0], made[0].worker, lease, ()) is None, "claimed at most once"


def test_after_its_member_stops_the_mirror_lists_another_even_past_a_compaction(etcd3cluster):
    endpoints = etcd3cluster.endpoints
    store = store_on(endpoints)
    register(store, "w1", "w2")
    submit(store)
    in_step(store)
    etcd3cluster.stop_member(0)  # the one the watch streams from
    other = store_on(endpoints[1:])
    made = [submit(other) for _ in range(3)]
    other.transition(made[0], JobState.CANCELLED)
    revision = other.etcd.call(lambda c: c.get_response("/mirror").header.revision, "revision")
    other.etcd.call(lambda c: c.compact(revision, physical=True), "compact")
    time.sleep(0.5)
    in_step(store)
    assert store.queue_load().waiting == {"root": 3}
    etcd3cluster.start_member(0)
    submit(store)
    in_step(store)
    assert store.queue_load().waiting == {"root": 4}
