"""The store's keys for job arrays (see :mod:`pink.arrays`), kept out of :mod:`pink.store`::

    arrayjobs/<array_id>/<job_id>     index of an array's jobs (empty value)

The ``%N`` limit is kept by run slots (``arrayslots/<array_id>/<n>``, :mod:`pink.runslots`):
however many workers claim at once, at most N jobs of the array are claimed (STARTING,
RUNNING, EXPORTING) at any time.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import TYPE_CHECKING, Sequence

from .errors import StoreUnavailable
from .etcd import transactions as tx
from .model import Job
from .queues import QueueEntry

if TYPE_CHECKING:
    from .store import Store

#: Keys one array job's creation writes: job, queue entry, user index, array index.
OPS_PER_JOB = 4


def index_key(store: "Store", array_id: str, job_id: str = "") -> str:
    return store._k("arrayjobs", array_id, job_id)


def create_jobs(store: "Store", jobs: Sequence[Job], max_txn_ops: int) -> list[Job]:
    """Create QUEUED jobs of an array (whose image a worker holds) in as few transactions as
    etcd allows (``max_txn_ops`` operations each), each job create-if-absent. Returns them as
    stored. Raises :class:`~pink.errors.StoreUnavailable` if etcd is away or an id is taken."""
    per_txn = max(max_txn_ops // OPS_PER_JOB, 1)
    created: list[Job] = []
    for start in range(0, len(jobs), per_txn):
        batch = [dataclasses.replace(j, write_id=uuid.uuid4().hex) for j in jobs[start:start + per_txn]]
        compare = [tx.version(store.job_key(j.id)) == 0 for j in batch]
        success = []
        for j in batch:
            success += [tx.put(store.job_key(j.id), j.to_json()),
                        tx.put(store.queue_key(j.worker, j.id), QueueEntry.of(j).to_json()),
                        tx.put(store._k("userjobs", j.user, j.id), b""),
                        tx.put(index_key(store, j.array_id, j.id), b"")]
        ok, revision, _ = store._txn(compare, success, f"create {len(batch)} jobs of array {batch[0].array_id}")
        if not ok:
            raise StoreUnavailable(f"a job id of array {batch[0].array_id} already exists; retry the submission")
        created += [dataclasses.replace(j, mod_revision=revision) for j in batch]
    return created


def array_jobs(store: "Store", array_id: str) -> list[Job]:
    """The array's jobs, by index."""
    keys = store._get_prefix(index_key(store, array_id, ""), keys_only=True)
    jobs = store.get_jobs(k.rsplit("/", 1)[1] for k, _, _ in keys)
    return sorted(jobs, key=lambda j: (j.array_index if j.array_index is not None else -1, j.id))
