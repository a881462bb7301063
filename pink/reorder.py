"""A user reorders their own queued jobs: ``user_priority`` (pink.scheduling orders a user's jobs
by priority, then user_priority, then age). One transaction writes the job record and its queue
entry, comparing the job's mod_revision with the one read (DESIGN §3), so a claim or cancel that
wins the race is never undone."""

from __future__ import annotations

import dataclasses
import time
import uuid

from .etcd import transactions as tx
from .model import Job
from .states import JobState
from .store import QueueEntry, Store

#: The range of ``user_priority`` (as of ``priority``).
LOWEST, HIGHEST = -100, 100


def set_user_priority(store: Store, job: Job, value: int) -> Job | None:
    """``job`` (as read, QUEUED) with ``user_priority`` = ``value``; None when the job changed
    since it was read (re-read and try again). ValueError for a value out of range or a job
    that is not QUEUED."""
    if not LOWEST <= value <= HIGHEST:
        raise ValueError(f"user_priority {value} is out of range: give {LOWEST}..{HIGHEST}")
    if job.state is not JobState.QUEUED:
        raise ValueError(f"job {job.id} is {job.state}; only a QUEUED job can be reordered")
    updated = dataclasses.replace(job, user_priority=value, updated_at=time.time(), write_id=uuid.uuid4().hex)
    key = store.job_key(job.id)
    ok, revision, _ = store._txn(  # noqa: SLF001 - the store's one-transaction helper
        [tx.mod(key) == job.mod_revision],
        [tx.put(key, updated.to_json()), tx.put(store.queue_key(job.worker, job.id), QueueEntry.of(updated).to_json())],
        f"reorder job {job.id}")
    return dataclasses.replace(updated, mod_revision=revision) if ok else None
