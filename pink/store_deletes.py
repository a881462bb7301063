"""Deleting ended jobs: the store's half (a mixin of :class:`pink.store.Store`).

A deletion removes the job's record and every index of it in ONE transaction that compares
the record's ``mod_revision`` with the one the caller read (the store's CAS style), and leaves
a small tombstone, ``deleted/<id>``, on a lease: so that a download or log read afterwards can
say who deleted the job and when (410) instead of "no such job", and so that the job's worker
learns which files to remove. The tombstone ends by itself with its lease.
"""

from __future__ import annotations

import dataclasses
import json
import time

from . import arraystore
from .etcd import transactions as tx
from .model import Job

#: How long a tombstone lives when the worker keeps outputs forever (no retention).
DEFAULT_TOMBSTONE_S = 30 * 86400


@dataclasses.dataclass(frozen=True)
class Tombstone:
    """What is left of a deleted job: whose it was, who deleted it and when, and its worker
    (which removes the job's files)."""

    job_id: str
    user: str
    by: str
    at: float
    worker: str

    def to_json(self) -> bytes:
        return json.dumps({"user": self.user, "by": self.by, "at": self.at, "worker": self.worker}).encode()

    @classmethod
    def from_json(cls, job_id: str, raw: bytes) -> "Tombstone":
        data = json.loads(raw)
        return cls(job_id, str(data.get("user", "")), str(data.get("by", "")), float(data.get("at", 0.0)),
                   str(data.get("worker", "")))

    def message(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.at))
        return f"job {self.job_id} was deleted by {self.by} at {when}"


class DeletesMixin:
    """Needs the Store's ``_k``, ``_txn``, ``_get``, ``_get_prefix``, key helpers and leases."""

    def tombstone_key(self, job_id: str) -> str:
        return self._k("deleted", job_id)

    def delete_job(self, job: Job, by: str, ttl_s: float, now: float | None = None) -> Tombstone | None:
        """Delete an ended ``job`` (as read, at its mod_revision) and leave its tombstone for
        ``ttl_s`` seconds. ``None`` when the record changed since it was read (re-read it and
        decide again); only ended jobs may be deleted (ValueError otherwise: a caller's bug)."""
        if not job.state.terminal:
            raise ValueError(f"job {job.id} is {job.state}: only an ended job can be deleted")
        now = time.time() if now is None else now
        stone = Tombstone(job.id, job.user, by, now, job.worker)
        # Not accounted yet (pink.store_usage): its usage goes into the rollup in this very
        # transaction, so a deleted job is counted once too.
        compare, success = self.account_ops(job) if job.accounted_at is None else ([], [])
        lease = self.grant_lease(max(1, int(ttl_s)))
        key = self.job_key(job.id)
        success += [*self.removal_ops(job), tx.put(self.tombstone_key(job.id), stone.to_json(), lease=lease)]
        ok, _, _ = self._txn([tx.mod(key) == job.mod_revision, tx.version(key) > 0, *compare], success,
                             f"delete job {job.id}")
        if ok:
            return stone
        self.revoke_lease(lease)
        # A retried transaction that committed before its answer was lost: the tombstone is ours.
        found = self.tombstone(job.id)
        return found if found == stone else None

    def removal_ops(self, job: Job) -> list:
        """The deletes that remove ended ``job``'s record and every key that indexes it (its
        idempotency key too: it would point at nothing, so a later submission with it makes a
        new job); shared by deletion and retention (pink/store_retention.py)."""
        success = [
            tx.delete(self.job_key(job.id)),
            tx.delete(self.queue_key(job.worker, job.id)),  # gone already for an ended job; harmless
            tx.delete(self.claim_key(job.id)),
            tx.delete(self._k("userjobs", job.user, job.id)),
            tx.delete(self.retire_key(job)),  # its retention key (pink.store_usage)
        ]
        if job.array_id:  # out of its array's index too
            success.append(tx.delete(arraystore.index_key(self, job.array_id, job.id)))
        if job.idempotency_key:
            from .store import _hash  # the store's one way of naming idempotency keys

            success.append(tx.delete(self._k("idem", job.user, _hash(job.idempotency_key))))
        return success

    def tombstone(self, job_id: str) -> Tombstone | None:
        raw, _ = self._get(self.tombstone_key(job_id))
        return Tombstone.from_json(job_id, raw) if raw is not None else None

    def tombstones(self, worker: str = "") -> list[Tombstone]:
        """Tombstones still alive (of ``worker``'s jobs only, when given)."""
        stones = [Tombstone.from_json(k.rsplit("/", 1)[1], v) for k, v, _ in self._get_prefix(self._k("deleted", ""))]
        return [s for s in stones if not worker or s.worker == worker]
