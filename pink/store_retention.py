"""Retention of job records and paged listings (a mixin of :class:`pink.store.Store`).

* **Retention**: an ended, accounted job (pink.store_usage) has a key ``retire/<base>/<id>``;
  ``retention_s`` after <base> (its outputs' expiry, or its end when they never expire) the
  janitor removes the record with everything that indexes it (the same removal as
  ``DELETE /jobs/<id>``, pink.store_deletes) in ONE transaction that compares the record's
  mod_revision, that it is accounted, and that no reaction (retry, notification) still waits
  on it. No tombstone is left: the outputs have expired by then, reads answer 404, and the
  worker's own retention sweep removes files whose record is gone. Its idempotency key goes
  with it (a later submission with that key makes a new job). The usage rollups stay.
* **Pages**: job ids sort by age, so the newest ``limit`` jobs before a cursor are one etcd
  range (sorted descending, with a limit) over ``jobs/`` or a user's ``userjobs/`` index:
  a listing reads only what it shows.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

from .etcd import etcdrpc, prefix_end, transactions as tx
from .model import Job
from .reactions import outbox_key

if TYPE_CHECKING:
    from .store import Store


#: A janitor's pass takes a random slice of its batch size from this many batches' worth of
#: the oldest keys waiting, so the janitors of several web server processes work on different
#: jobs of a backlog instead of racing on the same ones.
SPREAD = 4


class RetentionMixin:
    """Needs the Store's ``_k``, ``_txn``, ``get_job(s)``, ``job_key`` and ``removal_ops``."""

    def _backlog(self: "Store", start: str, end: str, limit: int) -> list[tuple[str, bytes, int]]:
        """Up to ``limit`` keys (no values) of ``start`` <= key < ``end`` (see :meth:`_range`),
        a random run of them from the first ``limit * SPREAD``, in key order."""
        rows = self._range(start, end=end, limit=limit * SPREAD, keys_only=True)
        first = random.randrange(max(len(rows) - limit, 0) + 1)
        return rows[first:first + limit]

    def _range(self: "Store", start: str, end: str = "", limit: int = 0, descend: bool = False,
               keys_only: bool = False) -> list[tuple[str, bytes, int]]:
        """Keys ``start`` <= key < ``end`` (the prefix ``start`` when ``end`` is ""), sorted by key,
        at most ``limit`` (0: all). etcd3's ``get_range`` drops ``limit``: this builds the request."""
        key = start.encode()
        request = etcdrpc.RangeRequest(
            key=key, range_end=end.encode() if end else prefix_end(key), limit=limit, keys_only=keys_only,
            sort_order=etcdrpc.RangeRequest.DESCEND if descend else etcdrpc.RangeRequest.ASCEND,
            sort_target=etcdrpc.RangeRequest.KEY)

        def run(client):
            answer = client.kvstub.Range(request, client.timeout, credentials=client.call_credentials,
                                         metadata=client.metadata)
            return [(kv.key.decode(), kv.value, kv.mod_revision) for kv in answer.kvs]

        return self.etcd.call(run, f"range {start}")

    def jobs_page(self: "Store", user: str | None = None, limit: int = 200,
                  before: str = "") -> tuple[list[Job], str]:
        """The newest ``limit`` jobs with an id below ``before`` (all when ""), of ``user`` or of
        everyone; and the cursor of the next (older) page, "" when there is none."""
        index = self._k("jobs", "") if user is None else self._k("userjobs", user, "")
        end = index + before if before else ""
        if end == index:  # an empty cursor part: nothing is below it
            return [], ""
        rows = self._range(index, end=end or prefix_end(index.encode()).decode(), limit=limit + 1, descend=True,
                           keys_only=user is not None)
        more = len(rows) > limit
        rows = rows[:limit]
        if user is None:
            jobs = [Job.from_json(v, rev) for _, v, rev in rows]
        else:
            found = {j.id: j for j in self.get_jobs([k.rsplit("/", 1)[1] for k, _, _ in rows])}
            jobs = [found[i] for i in (k.rsplit("/", 1)[1] for k, _, _ in rows) if i in found]
        return jobs, (rows[-1][0].rsplit("/", 1)[1] if more and rows else "")

    def retire_job(self: "Store", job: Job) -> bool:
        """Remove an ended, accounted ``job`` (as read) for retention; False when it changed
        since it was read, is not accounted, or a reaction still waits on it."""
        if not job.state.terminal or job.accounted_at is None:
            return False
        key = self.job_key(job.id)
        ok, _, _ = self._txn([tx.mod(key) == job.mod_revision, tx.version(outbox_key(self, job.id)) == 0],
                             self.removal_ops(job), f"retire job {job.id}")
        return ok

    def retire_expired(self: "Store", retention_s: float, now: float | None = None, limit: int = 100) -> int:
        """Remove up to ``limit`` job records whose retention ran out; how many it removed.
        ``retention_s`` <= 0 keeps every record."""
        if retention_s <= 0:
            return 0
        now = time.time() if now is None else now
        prefix = self._k("retire", "")
        rows = self._backlog(prefix, prefix + f"{now - retention_s:017.3f}", limit)
        due = [(k, k.rsplit("/", 1)[1]) for k, _, _ in rows]
        jobs = {j.id: j for j in self.get_jobs([job_id for _, job_id in due])}
        removed = 0
        for key, job_id in due:
            job = jobs.get(job_id)
            if job is None:  # deleted meanwhile
                self._txn([], [tx.delete(key)], "drop a stale retention key")
                continue
            if self.retire_key(job) != key:  # its outputs' expiry changed since: move the key
                self._txn([], [tx.delete(key), tx.put(self.retire_key(job), b"")], "move a retention key")
                continue
            removed += self.retire_job(job)
        return removed
