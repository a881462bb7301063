"""What happens when a job ends: the store side of retrying LOST jobs and of job-end
notifications (the loop that acts on it is webapp.reactor). DESIGN: docs/reactions.md.

A job submitted with ``retry_lost``, ``notify`` or ``webhook`` gets an outbox key
``react/<id>`` in the same transaction that creates it (:func:`create_ops`), so nothing that
ends the job (its worker, a cancel, the janitor's LOST) has to remember it. Every web server's
reactor lists that small prefix and handles the jobs that have ended:

* a LOST job with retries left is submitted again (:meth:`~pink.store.Store.create_job` with
  ``retrying``): the new job, its idempotency key ``pink-retry-lost:<old id>`` and the old job's
  ``retried_by`` are written in ONE transaction that compares the old job's mod_revision, so of
  many racing web servers exactly one retry is made;
* then the notifications: each attempt is claimed by a compare-and-swap of the outbox key that
  counts it and sets when the next may start (backoff), then sent; a sender that dies
  mid-attempt leaves the key for the next attempt. So delivery is at least once, with the job
  id as the delivery id; when every channel is done (or out of attempts) the job records
  ``notified_at`` and the key goes, again in one transaction.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from .etcd import transactions as tx
from .model import Job
from .states import JobState

if TYPE_CHECKING:
    from .store import Store

#: The idempotency key of the retry of LOST job <id> (create-if-absent: one per LOST job).
RETRY_KEY_PREFIX = "pink-retry-lost:"


@dataclasses.dataclass(frozen=True)
class Outbox:
    """A job's outbox entry: notification attempts made, when the next may start, and the
    channels ("email", "webhook") already delivered."""

    job_id: str
    attempts: int = 0
    next_at: float = 0.0
    done: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    mod_revision: int = 0

    def to_json(self) -> bytes:
        return json.dumps({"attempts": self.attempts, "next_at": self.next_at, "done": list(self.done),
                           "errors": list(self.errors)}).encode()


def outbox_key(store: "Store", job_id: str) -> str:
    return store._k("react", job_id)


def reacts(job: Job) -> bool:
    """Whether anything must happen when ``job`` ends."""
    return bool(job.retry_lost or job.notify or job.webhook)


def create_ops(store: "Store", job: Job, retrying: Job | None) -> tuple[list, list]:
    """Extra (compare, success) of the transaction creating ``job``: its outbox key, and for a
    retry the old job's ``retried_by``, only if the old job is unchanged since it was read."""
    compare: list = []
    success: list = []
    if reacts(job):
        success.append(tx.put(outbox_key(store, job.id), Outbox(job.id).to_json()))
    if retrying is not None:
        old = dataclasses.replace(retrying, retried_by=job.id, retry_note=f"retried as job {job.id}",
                                  write_id=uuid.uuid4().hex)
        compare.append(tx.mod(store.job_key(old.id)) == retrying.mod_revision)
        success.append(tx.put(store.job_key(old.id), old.to_json()))
    return compare, success


def pending(store: "Store") -> list[Outbox]:
    """Every outbox entry (jobs that react and have not been handled yet), oldest job first."""
    start = outbox_key(store, "")
    out = []
    for key, value, revision in store._get_prefix(start):
        data = json.loads(value)
        out.append(Outbox(key[len(start):], int(data.get("attempts", 0)), float(data.get("next_at", 0.0)),
                          tuple(data.get("done", ())), tuple(data.get("errors", ())), revision))
    return sorted(out, key=lambda o: o.job_id)


def wants_retry(job: Job) -> bool:
    """A LOST job with retries left that has been neither retried nor given up on. Any other
    end (FAILED by its own exit code, CANCELLED, SUCCEEDED) is never retried."""
    return (job.state is JobState.LOST and job.retry_lost > 0 and not job.retried_by
            and not job.retry_given_up)


def wants_notice(job: Job) -> bool:
    return job.state.terminal and (job.notify or bool(job.webhook)) and job.notified_at is None


def lost_at(job: Job) -> float:
    """When the job became LOST (its last history entry saying so; else its last update)."""
    return next((h["at"] for h in reversed(job.history) if h.get("state") == "LOST"), job.updated_at)


def update_job(store: "Store", job: Job, drop_outbox: bool = False, **changes: Any) -> Job | None:
    """Write fields of an ended job (no state change) if it is unchanged since read; with
    ``drop_outbox`` its outbox key goes in the same transaction. None if someone else won."""
    updated = dataclasses.replace(job, write_id=uuid.uuid4().hex, **changes)
    key = store.job_key(job.id)
    success = [tx.put(key, updated.to_json())]
    if drop_outbox:
        success.append(tx.delete(outbox_key(store, job.id)))
    ok, revision, _ = store._txn([tx.mod(key) == job.mod_revision], success, f"update ended job {job.id}")
    return dataclasses.replace(updated, mod_revision=revision) if ok else None


def drop(store: "Store", entry: Outbox) -> bool:
    """Remove an outbox entry nobody changed since it was read (a job with nothing left to do)."""
    key = outbox_key(store, entry.job_id)
    ok, _, _ = store._txn([tx.mod(key) == entry.mod_revision], [tx.delete(key)], f"drop outbox {entry.job_id}")
    return ok


def claim_attempt(store: "Store", entry: Outbox, backoff_s: float, now: float | None = None) -> Outbox | None:
    """Take the next notification attempt: count it and set when the one after may start
    (``backoff_s`` doubling), if the entry is unchanged. None: another web server took it."""
    now = time.time() if now is None else now
    taken = dataclasses.replace(entry, attempts=entry.attempts + 1,
                                next_at=now + backoff_s * (2 ** entry.attempts))
    key = outbox_key(store, entry.job_id)
    ok, revision, _ = store._txn([tx.mod(key) == entry.mod_revision], [tx.put(key, taken.to_json())],
                                 f"claim notification {entry.job_id}")
    return dataclasses.replace(taken, mod_revision=revision) if ok else None


def record_attempt(store: "Store", entry: Outbox, done: tuple[str, ...], errors: tuple[str, ...]) -> Outbox | None:
    """Remember which channels this attempt delivered, and why the others failed."""
    recorded = dataclasses.replace(entry, done=done, errors=errors)
    key = outbox_key(store, entry.job_id)
    ok, revision, _ = store._txn([tx.mod(key) == entry.mod_revision], [tx.put(key, recorded.to_json())],
                                 f"record notification {entry.job_id}")
    return dataclasses.replace(recorded, mod_revision=revision) if ok else None
