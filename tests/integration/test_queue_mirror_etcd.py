"""The queue mirror of each web server process (pink.queues.QueueMirror) on a real etcd: it
follows the store's writes through its watch, lists again after its etcd member went away,
submissions in a row see each other (on one web server and across two), its freshness check
(a marker put that its own watch must bring back) confirms, waits for a watch that is behind, or
gives up into a full read, and a mirror that stopped following changes nothing but costs a full
read."""

from __future__ import annotations

import threading
import time

import pytest

import pink_dev as dev
from pink.config import Config, EtcdConfig, WebConfig
from pink.model import User, WorkerInfo
from pink.queues import QueueLoad, WorkerQueue
from pink.states import JobState
from pink.store import Store
from webapp import jobs
from webapp.spec import JobSpec, SubmitError

pytestmark = pytest.mark.integration

IMG = "sha256:" + "cd" * 32
ROOT = User("root", "", admin=True)  # may reuse the image the workers hold


@pytest.fixture
def store_on(open_store):
    """Makes a web server's Store on the test's etcd (closed at the end of the test)."""
    return lambda endpoints: open_store(EtcdConfig(endpoints=tuple(endpoints), prefix="/mirror"))


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
    # One worker's entries (what a queue position plans), as a read of that worker's queue has them.
    for worker in ("w1", "w2"):
        assert store.queue_mirror.queues([worker]) == ({worker: store.queue(worker)} if store.queue(worker) else {})


def test_the_mirror_follows_creations_claims_and_ends(etcd, store_on):
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


def test_submissions_in_a_row_see_each_other_on_one_web_server_and_across_two(etcd, store_on):
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


def held_watch(store: Store) -> threading.Event:
    """Hold the mirror's watch thread before it applies its next response, until the event is
    set: etcd's stream stays as it is, the copy falls behind."""
    return held_watch_of(store.queue_mirror)


def test_a_change_by_another_writer_is_confirmed_through_the_marker_without_a_full_read(etcd, store_on):
    store, other = store_on(etcd), store_on(etcd)
    register(store, "w1", "w2")
    submit(store)
    in_step(store)
    store.queue_mirror.wait_s = 10.0  # a loaded machine may be slow to deliver; none may be missed
    before = store.queue_mirror.fallbacks
    for made in range(2, 7):
        submit(other)  # its own mirror starts too: both put the one shared marker key
        assert store.queue_load().waiting == {"root": made}, "the copy has it right after"
    assert store.queue_mirror.fallbacks == before
    marker = store.etcd.call(lambda c: c.get(store.queue_mirror.sync_key), "marker")
    assert marker[0] == b"", "one shared marker key, empty"
    assert sum(len(e) for e in store.all_queues().values()) == 6, "the marker is no queue entry"


def test_a_watch_that_is_behind_is_waited_for_then_served_from_the_mirror(etcd, store_on):
    store, other = store_on(etcd), store_on(etcd)
    register(store, "w1")
    submit(store)
    in_step(store)
    store.queue_mirror.wait_s = 10.0
    go = held_watch(store)
    submit(other)
    threading.Timer(0.5, go.set).start()
    started, before = time.monotonic(), store.queue_mirror.fallbacks
    assert store.queue_load().waiting == {"root": 2}
    assert store.queue_mirror.fallbacks == before, "served from the copy once the watch caught up"
    assert time.monotonic() - started >= 0.4, "it waited for the held watch"


def test_a_marker_the_watch_does_not_bring_in_time_falls_back_to_a_full_read(etcd, store_on):
    store, other = store_on(etcd), store_on(etcd)
    register(store, "w1")
    submit(store)
    in_step(store)
    go = held_watch(store)
    submit(other)
    before = store.queue_mirror.fallbacks
    assert store.queue_load().waiting == {"root": 2}, "the full read has the other writer's job"
    assert store.queue_mirror.fallbacks == before + 1
    go.set()
    in_step(store)  # and it answers alone again once the watch moves on


def test_a_mirror_that_stopped_following_only_costs_full_reads(etcd, store_on):
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


def test_after_its_member_stops_the_mirror_lists_another_even_past_a_compaction(etcd3cluster, store_on):
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


def test_a_workers_own_queue_copy_holds_its_claims_once_asked_for_their_revision(etcd, store_on):
    """What a worker daemon reads each cycle (pink.queues.WorkerQueue): only its own entries, in
    key order as a read has them, and never a copy older than its newest claim."""
    store = store_on(etcd)
    register(store, "w1", "w10")  # "w1"'s prefix must not take in "w10"'s entries
    woken = threading.Event()
    own = WorkerQueue(store, "w1", woken.set)
    try:
        own.start()
        dev.wait_until(lambda: own.entries() is not None, 15, "the copy's listing")
        made = [submit(store) for _ in range(4)]
        dev.wait_until(lambda: own.entries() == store.queue("w1"), 15, "the copy to follow the store")
        assert woken.is_set(), "a change wakes the daemon"
        assert {e.job_id for e in own.entries()} == {j.id for j in made if j.worker == "w1"}
        go = held_watch_of(own)
        mine = next(j for j in made if j.worker == "w1")
        claimed = store.claim(mine, "w1", store.grant_lease(60), ())
        assert own.entries(claimed.mod_revision, wait_s=0.2) is None, "behind its claim: read the store"
        threading.Timer(0.3, go.set).start()
        entries = own.entries(claimed.mod_revision, wait_s=10)
        assert entries == store.queue("w1")
        assert {e.job_id: e.state for e in entries}[mine.id] is JobState.STARTING
    finally:
        own.stop()


def held_watch_of(copy) -> threading.Event:
    """Hold ``copy``'s watch thread before it applies its next response, until the event is set:
    etcd's stream stays as it is, the copy falls behind."""
    go = threading.Event()
    watch = copy._watch
    apply = watch._on_events

    def held(events: list) -> None:
        go.wait()
        apply(events)

    watch._on_events = held
    return go
