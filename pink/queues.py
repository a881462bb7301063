"""The workers' queue entries, and what placement reads of them: per-worker and per-user sums.

Placement (webapp.jobs) weighs workers by their live jobs and queued GPU-seconds, and the queue
quota counts a user's waiting jobs. Summing every entry under ``queue/`` on each submission
costs time linear in the cluster's queued jobs, so each process keeps :class:`QueueMirror`, a
copy of ``queue/`` fed by one etcd watch that keeps those sums up to date, and writes one
marker key its watch also sees to know the copy has every change before using it.

Only placement, the (soft) queue quota and what is shown (queue positions, the janitor's and
the metrics' queue depths) read the mirror. Nothing that decides a job's fate does: claims,
transitions and creation keep comparing revisions in their transactions.

A worker daemon keeps :class:`WorkerQueue`, the same kind of copy of its own queue only, which
it plans from on each cycle instead of reading the queue from etcd (see its docstring for how
fresh it must be).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import threading
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from .metrics import QUEUE_LOAD_READS
from .model import Job
from .scheduling import QueuedJob
from .states import JobState

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger(__name__)

#: Jobs that wait for a worker to start them: what the queue quota counts.
WAITING = frozenset({JobState.UPLOADING, JobState.QUEUED})


@dataclasses.dataclass(frozen=True)
class QueueEntry:
    """A non-terminal job as its worker's queue index shows it."""

    job_id: str
    user: str
    state: JobState
    gpus: int
    timeout_s: int
    priority: int
    created_at: float
    image_id: str = ""
    #: Resources resolved at placement (entries of older versions: 0, no limit).
    cpus: float = 0.0
    memory_bytes: int = 0
    #: The job's array and its limit of claimed jobs at once (pink.arrays; "" and 0: none).
    array_id: str = ""
    array_limit: int = 0
    started_at: float = 0.0  # when its container started (0: not yet, or an older entry)
    user_priority: int = 0

    def to_json(self) -> bytes:
        data = dataclasses.asdict(self)
        data["state"] = self.state.value
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "QueueEntry":
        names = {f.name for f in dataclasses.fields(cls)}  # a newer release's fields: ignored
        data = {k: v for k, v in json.loads(raw).items() if k in names}
        data["state"] = JobState(data["state"])
        return cls(**data)

    @classmethod
    def of(cls, job: Job) -> "QueueEntry":
        return cls(job.id, job.user, job.state, job.gpus, job.timeout_s, job.priority,
                   job.created_at, job.image_id, job.cpus, job.memory_bytes, job.array_id, job.array_limit,
                   job.started_at or 0.0, job.user_priority)

    @functools.cached_property
    def as_queued(self) -> QueuedJob:
        """The entry as :func:`pink.scheduling.plan` takes it (made once: a worker's and a web
        server's copies keep their entries, and plan them again and again)."""
        return QueuedJob(self.job_id, self.user, self.priority, self.created_at, self.gpus,
                         self.cpus, self.memory_bytes, self.array_id, self.array_limit, self.user_priority)


@dataclasses.dataclass
class WorkerLoad:
    """Sums over one worker's queue entries (its jobs that have not ended)."""

    jobs: int = 0
    queued: int = 0
    uploading: int = 0
    #: GPUs times time limit of those jobs: how long the worker is booked.
    gpu_seconds: int = 0

    @property
    def running(self) -> int:
        """Jobs claimed by the worker (starting, running, exporting...)."""
        return self.jobs - self.queued - self.uploading


class QueueLoad:
    """:class:`WorkerLoad` per worker and waiting jobs per user, over a set of queue entries."""

    def __init__(self) -> None:
        self.workers: dict[str, WorkerLoad] = {}
        self.waiting: dict[str, int] = {}

    @classmethod
    def of(cls, queues: dict[str, list[QueueEntry]]) -> "QueueLoad":
        load = cls()
        for worker, entries in queues.items():
            for entry in entries:
                load.add(worker, entry)
        return load

    def add(self, worker: str, entry: QueueEntry, sign: int = 1) -> None:
        """Count ``entry`` in (``sign`` 1) or out (-1)."""
        w = self.workers.setdefault(worker, WorkerLoad())
        w.jobs += sign
        w.queued += sign * (entry.state is JobState.QUEUED)
        w.uploading += sign * (entry.state is JobState.UPLOADING)
        w.gpu_seconds += sign * entry.gpus * entry.timeout_s
        if not w.jobs:
            del self.workers[worker]
        if entry.state in WAITING:
            self.waiting[entry.user] = self.waiting.get(entry.user, 0) + sign
            if not self.waiting[entry.user]:
                del self.waiting[entry.user]

    def worker(self, name: str) -> WorkerLoad:
        return self.workers.get(name) or WorkerLoad()

    def copy(self) -> "QueueLoad":
        out = QueueLoad()
        out.workers = {name: dataclasses.replace(w) for name, w in self.workers.items()}
        out.waiting = dict(self.waiting)
        return out


class QueueCopy:
    """The queue entries under ``prefix``, kept by one etcd list-and-watch
    (:class:`pink.etcd.ListWatch`): a listing, then every change after it, in revision order.
    ``revision`` is the newest change the copy has. ``on_change()`` is called after each listing
    and each batch of changes. The watch starts on the first read in each process (gunicorn forks
    its workers after the app is made; a thread does not survive a fork)."""

    def __init__(self, store: "Store", prefix: str, start: str = "",
                 on_change: Callable[[], None] = lambda: None) -> None:
        self._store = store
        self._prefix, self._start_key = prefix, start or prefix
        self._on_change = on_change
        self._cond = threading.Condition()
        self._pid = 0
        self._watch = None
        self._reset_state()

    def _reset_state(self) -> None:
        self._entries: dict[bytes, tuple[str, QueueEntry]] = {}  # key -> (worker, entry)
        self._revision = 0  # the copy has every change up to this revision
        self._listed = False

    def start(self) -> None:
        """Start the watch (once per process)."""
        with self._cond:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._reset_state()  # what a parent process had is not this one's
        self._watch = self._store.etcd.list_and_watch(self._start_key, self._prefix, self._on_list,
                                                      self._on_events)

    def stop(self) -> None:
        """End the watch: the copy stays as it was (and falls behind)."""
        if self._watch is not None:
            self._watch.cancel()

    # ----- fed by the watch -------------------------------------------------------------------
    def _on_list(self, kvs: list, revision: int) -> None:
        prefix = self._prefix.encode()
        with self._cond:
            self._reset_state()
            for kv in kvs:
                if kv.key.startswith(prefix):
                    self._put(kv.key, kv.value)
            self._revision = revision
            self._listed = True
            self._cond.notify_all()
        self._on_change()

    def _on_events(self, events: list) -> None:
        prefix = self._prefix.encode()
        with self._cond:
            for event in events:
                kv = event.kv
                self._revision = max(self._revision, kv.mod_revision)
                if not kv.key.startswith(prefix):
                    continue
                old = self._entries.pop(kv.key, None)
                if old is not None:
                    self._drop(kv.key, *old)
                if event.type == event.PUT:
                    self._put(kv.key, kv.value)
            self._cond.notify_all()
        self._on_change()

    def _put(self, key: bytes, value: bytes) -> tuple[str, QueueEntry]:
        worker, entry = key.decode().rsplit("/", 2)[1], QueueEntry.from_json(value)
        self._entries[key] = (worker, entry)
        return worker, entry

    def _drop(self, key: bytes, worker: str, entry: QueueEntry) -> None:
        """``key``'s entry left the copy (the subclasses' sums follow)."""


class WorkerQueue(QueueCopy):
    """One worker's queue (``queue/<worker>/``), as its daemon reads it on every cycle: in time
    linear in its entries, without a read of etcd. The daemon's own claims tell it how fresh the
    copy must be (:meth:`entries`)."""

    def __init__(self, store: "Store", worker: str, on_change: Callable[[], None]) -> None:
        super().__init__(store, store.queue_key(worker, ""), on_change=on_change)

    def entries(self, revision: int = 0, wait_s: float = 1.0) -> list[QueueEntry] | None:
        """The entries in key order (as :meth:`Store.queue` reads them) once the copy has every
        change up to ``revision`` (waiting up to ``wait_s``); None while it is not listed yet or
        stays behind: read the store then."""
        self.start()
        with self._cond:
            if not self._listed or not self._cond.wait_for(lambda: self._revision >= revision, wait_s):
                return None
            return [entry for _, (_, entry) in sorted(self._entries.items())]


class QueueMirror(QueueCopy):
    """This process's copy of ``queue/``, kept by one etcd watch, summed as a :class:`QueueLoad`.

    :meth:`load` answers from the copy only when it has every change etcd had when it was
    called. It learns that in O(1), whatever the number of queue entries: it puts the marker key
    ``queue.sync`` (just before ``queue/``: the watch covers both, and nothing else sorts in
    between) and waits up to ``wait_s`` for its own watch to bring a revision at or after that
    put's. etcd sends one watch's events in revision order, so by then the copy has every change
    made before the put. Otherwise (the watch is behind, down, or not listed yet) it sums a full
    read of ``queue/``, as before the mirror. A submission thus always sees the ones before it,
    on any web server.

    Why a write, and not a progress request on the watch stream (``WatchProgressRequest``, etcd
    >= 3.4, which would be a read): etcd 3.4.23 (Debian 12's) answers one with its current
    revision even while the watch is still catching up with older events (etcd issue 15220,
    fixed in later 3.4 releases by dropping such a request), so the answer could claim events
    the copy does not have yet. The marker is one blind put of an empty value to one key that
    all processes share: no compare, nothing left behind.
    """

    def __init__(self, store: "Store", wait_s: float = 0.25) -> None:
        #: The marker key: it sorts just before every queue key (``.`` before ``/``).
        self.sync_key = store.queues_prefix().rstrip("/") + ".sync"
        super().__init__(store, store.queues_prefix(), start=self.sync_key)
        self.wait_s = wait_s
        #: Loads this process summed from a full read because the mirror was behind or down.
        self.fallbacks = 0

    def _reset_state(self) -> None:
        super()._reset_state()
        self._by_worker: dict[str, dict[bytes, QueueEntry]] = {}  # worker -> key -> entry
        self._load = QueueLoad()

    def _put(self, key: bytes, value: bytes) -> tuple[str, QueueEntry]:
        worker, entry = super()._put(key, value)
        self._by_worker.setdefault(worker, {})[key] = entry
        self._load.add(worker, entry)
        return worker, entry

    def _drop(self, key: bytes, worker: str, entry: QueueEntry) -> None:
        self._load.add(worker, entry, -1)
        entries = self._by_worker[worker]
        del entries[key]
        if not entries:
            del self._by_worker[worker]

    # ----- read by placement ------------------------------------------------------------------
    def _mark(self) -> int:
        """Put the marker key; the revision of that put (every change before it is older)."""
        return self._store.etcd.call(lambda c: c.put(self.sync_key, b"").header.revision, "queue mirror marker")

    def _fresh(self) -> bool:
        """Whether the mirror has every change etcd had when this was called (waiting up to
        ``wait_s`` for the watch to bring them); counts the answer."""
        self.start()
        with self._cond:
            listed = self._listed
        if listed:
            revision = self._mark()
            with self._cond:
                if self._cond.wait_for(lambda: self._revision >= revision, self.wait_s):
                    QUEUE_LOAD_READS.labels(source="mirror").inc()
                    return True
        with self._cond:
            self.fallbacks += 1
        QUEUE_LOAD_READS.labels(source="etcd").inc()
        return False

    def load(self) -> QueueLoad:
        """The sums over every queue entry, with every change etcd had when this was called."""
        if self._fresh():
            with self._cond:
                return self._load.copy()
        return QueueLoad.of(self._store.all_queues())

    def queues(self, workers: Collection[str] | None = None) -> dict[str, list[QueueEntry]]:
        """The queue entries of ``workers`` (every worker's when None), in key order, as
        :meth:`Store.queue` and :meth:`Store.all_queues` read them, from the mirror when it is up
        to date: the janitor's sweep and the metrics' queue depths read all of them, a job's queue
        position its worker's (in time linear in that worker's entries, not the cluster's)."""
        if not self._fresh():
            if workers is None:
                return self._store.all_queues()
            return {name: entries for name in workers if (entries := self._store.queue(name))}
        with self._cond:
            names = list(self._by_worker) if workers is None else [w for w in workers if w in self._by_worker]
            return {name: [entry for _, entry in sorted(self._by_worker[name].items())] for name in names}
