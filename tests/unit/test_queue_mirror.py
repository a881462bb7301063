"""The queues' load that placement reads (pink.queues): the sums per worker and per user, the
mirror's listing and events, and its freshness check (a marker put the watch must bring back)
with the fall back to a full read — on the in-memory etcd, the watch played by the test."""

from __future__ import annotations

import dataclasses
import threading
import time
from types import SimpleNamespace

from pink.etcd import ListWatch, etcdrpc
from etcd3.etcdrpc.kv_pb2 import Event, KeyValue  # noqa: E402 - after pink.etcd sets up protobuf
from pink.model import new_job_id
from pink.queues import QueueEntry, QueueLoad, QueueMirror
from pink.states import JobState


def entry(user="alice", state=JobState.QUEUED, gpus=1, timeout_s=60) -> QueueEntry:
    return QueueEntry(new_job_id(), user, state, gpus, timeout_s, 0, time.time())


def sums(load: QueueLoad) -> tuple[dict, dict]:
    return ({n: (w.jobs, w.queued, w.uploading, w.running, w.gpu_seconds) for n, w in load.workers.items()},
            dict(load.waiting))


def test_the_load_sums_jobs_gpu_seconds_and_waiting_jobs_and_forgets_what_leaves():
    a, b, c = entry(gpus=2, timeout_s=100), entry("bob", JobState.RUNNING), entry(state=JobState.UPLOADING)
    load = QueueLoad.of({"w1": [a, b], "w2": [c]})
    assert sums(load) == ({"w1": (2, 1, 0, 1, 260), "w2": (1, 0, 1, 0, 60)}, {"alice": 2})
    assert load.worker("w3").jobs == 0  # a worker without jobs
    copy = load.copy()
    for worker, e in (("w1", a), ("w1", b), ("w2", c)):
        load.add(worker, e, -1)
    assert sums(load) == ({}, {})
    assert sums(copy)[1] == {"alice": 2}, "a copy does not change with the mirror"


class Watch:
    """Plays etcd's watch for a mirror on the in-memory etcd: lists, then hands over events;
    ``following``: it brings every change right after the mirror puts its marker."""

    def __init__(self, cluster, wait_s: float = 0.05, following: bool = True) -> None:
        self.mem, self.store = cluster.mem, cluster.store
        self.mirror = QueueMirror(self.store, wait_s=wait_s)
        self.mirror.start()  # (the in-memory client's watch does nothing)
        self.seen: dict[bytes, KeyValue] = {}
        self.following = following
        mark = self.mirror._mark

        def mark_then_follow() -> int:
            revision = mark()
            if self.following:
                self.deliver()
            return revision

        self.mirror._mark = mark_then_follow

    def watched(self) -> dict[bytes, KeyValue]:
        """The keys the mirror's watch covers: its marker and the queues."""
        start = self.mirror.sync_key.encode()
        end = self.store.queues_prefix().encode()[:-1] + b"0"
        return {k: v for k, v in self.mem.kvs.items() if start <= k < end}

    def list(self) -> None:
        self.seen = self.watched()
        self.mirror._on_list(list(self.seen.values()), self.mem.revision)

    def deliver(self) -> None:
        """The events that take the mirror from what it saw to what etcd has now."""
        now = self.watched()
        events = [Event(type=Event.PUT, kv=kv) for k, kv in now.items() if self.seen.get(k) != kv]
        events += [Event(type=Event.DELETE, kv=KeyValue(key=k, mod_revision=self.mem.revision))
                   for k in self.seen.keys() - now.keys()]
        self.mirror._on_events(sorted(events, key=lambda e: e.kv.mod_revision))
        self.seen = now


def put(cluster, worker: str, e: QueueEntry) -> None:
    cluster.mem.Put(etcdrpc.PutRequest(key=cluster.store.queue_key(worker, e.job_id).encode(), value=e.to_json()))


def delete(cluster, worker: str, e: QueueEntry) -> None:
    cluster.mem.DeleteRange(etcdrpc.DeleteRangeRequest(key=cluster.store.queue_key(worker, e.job_id).encode()))


def test_the_mirror_answers_alone_while_it_has_every_change(cluster):
    entries = [entry(), entry("bob", JobState.RUNNING), entry(gpus=4)]
    for i, e in enumerate(entries):
        put(cluster, f"w{i % 2}", e)
    watch = Watch(cluster)
    watch.list()
    assert sums(watch.mirror.load()) == sums(QueueLoad.of(cluster.store.all_queues()))
    put(cluster, "w1", entry("carol"))
    delete(cluster, "w0", entries[0])
    replaced = entries[1]
    put(cluster, "w1", dataclasses.replace(replaced, state=JobState.EXPORTING))
    watch.deliver()
    assert sums(watch.mirror.load()) == sums(QueueLoad.of(cluster.store.all_queues()))
    assert watch.mirror.fallbacks == 0


def test_a_mirror_behind_etcd_waits_then_reads_everything(cluster):
    watch = Watch(cluster, following=False)
    watch.list()
    put(cluster, "w1", entry())  # the watch has not delivered it
    load = watch.mirror.load()
    assert load.waiting == {"alice": 1} and watch.mirror.fallbacks == 1
    watch.following = True
    first = entry("bob")
    put(cluster, "w2", first)
    assert watch.mirror.load().waiting == {"alice": 1, "bob": 1} and watch.mirror.fallbacks == 1
    watch.following = False
    delete(cluster, "w2", first)  # a delete alone
    assert watch.mirror.load().waiting == {"alice": 1} and watch.mirror.fallbacks == 2


def test_a_change_the_watch_brings_during_the_wait_is_served_from_the_mirror(cluster):
    watch = Watch(cluster, wait_s=5.0, following=False)
    watch.list()
    put(cluster, "w1", entry())
    later = threading.Timer(0.1, watch.deliver)
    later.start()
    started = time.monotonic()
    assert watch.mirror.load().waiting == {"alice": 1}
    assert watch.mirror.fallbacks == 0 and time.monotonic() - started < 4
    later.join()


def test_a_listing_at_or_after_the_marker_is_enough_and_the_marker_is_no_entry(cluster):
    """A watch that lists again (after a reconnect or a compaction) at a revision at least the
    marker's has every change before it; the marker key itself counts as no job."""
    put(cluster, "w1", entry())
    watch = Watch(cluster, following=False)
    watch.list()
    revision = watch.mirror._mark()
    assert watch.mirror._revision < revision
    watch.list()
    assert watch.mirror._revision >= revision
    assert watch.mirror.sync_key.encode() in watch.seen, "the listing held the marker"
    assert sums(watch.mirror.load()) == sums(QueueLoad.of(cluster.store.all_queues()))


def test_a_mirror_that_never_listed_reads_everything_without_waiting(cluster):
    put(cluster, "w1", entry())
    mirror = QueueMirror(cluster.store, wait_s=5.0)
    started = time.monotonic()
    assert mirror.load().waiting == {"alice": 1}
    assert mirror.fallbacks == 1 and time.monotonic() - started < 4


def test_a_watch_that_etcd_cancels_or_compacted_ends_its_stream_to_list_again():
    """ListWatch (pink.etcd) hands events over; a cancel (a compacted start revision) ends the
    stream, and the loop lists again before it watches anew."""
    seen: list = []
    watch = SimpleNamespace(_key=b"/pink/queue/", _on_events=seen.append)
    assert ListWatch._handle(watch, etcdrpc.WatchResponse(canceled=True, compact_revision=7), False) is False
    assert not seen
    event = Event(type=Event.PUT, kv=KeyValue(key=b"/pink/queue/w1/j", value=entry().to_json(), mod_revision=9))
    assert ListWatch._handle(watch, etcdrpc.WatchResponse(events=[event]), False) is True
    assert seen == [[event]]


def test_the_janitor_and_the_metrics_get_every_entry_from_the_mirror_or_a_full_read(cluster):
    def by_worker(queues) -> dict:
        return {w: sorted(e.job_id for e in entries) for w, entries in queues.items()}

    put(cluster, "w1", entry())
    put(cluster, "w2", entry("bob"))
    watch = Watch(cluster)
    watch.list()
    assert by_worker(watch.mirror.queues()) == by_worker(cluster.store.all_queues())
    assert watch.mirror.fallbacks == 0
    watch.following = False
    put(cluster, "w2", entry("carol"))  # not delivered: read from etcd
    assert by_worker(watch.mirror.queues()) == by_worker(cluster.store.all_queues())
    assert watch.mirror.fallbacks == 1
