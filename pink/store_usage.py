"""Usage accounting: per-user, per-day rollups that outlive the job records (a mixin of
:class:`pink.store.Store`; docs/api.md "Usage", README "Accounting and retention").

Keys::

    acct/<id>                  the job ended and is not accounted yet; written by the very
                               transaction that ends it (Store._move), so nothing that ends a
                               job has to remember it
    usage/<YYYY-MM-DD>/<user>  the user's rollup of the jobs that ended that day (UTC): JSON
    retire/<base>/<id>         the accounted job may leave etcd ``retention`` after <base>
                               (its output expiry, or its end when its outputs never expire)

A job is added to its rollup exactly once: ONE transaction compares the job record's
mod_revision and the rollup key's mod_revision with the ones read, writes the job with
``accounted_at``, the new rollup, deletes ``acct/<id>`` and puts ``retire/...``. Of racing
janitors one wins; the others see ``accounted_at`` (or a changed rollup: re-read, add again).
Deleting a job (``DELETE /jobs/<id>``) accounts it in its delete transaction when it is not
yet accounted (:meth:`UsageMixin.account_ops`).

What a job counts: one job, by its end state; ``gpu_seconds`` as the worker recorded it;
CPU-seconds = the job's CPUs (its limit; the worker's CPU count when the job had no limit)
x its run time (start to finish; 0 when it never started); bytes in = its uploaded image
(``image_bytes``) + the size of its input (as its worker holds it, counted for each job that
uses it); bytes out = its output archive (``output_bytes``).
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from typing import TYPE_CHECKING

from .etcd import transactions as tx
from .model import Job, day_of

if TYPE_CHECKING:
    from .store import Store

def ended_at(job: Job) -> float:
    return job.finished_at or job.updated_at


def retire_base(job: Job) -> float:
    """When the retention of a job's record starts: its outputs' expiry, else its end."""
    return job.output_expires_at or ended_at(job)


@dataclasses.dataclass(frozen=True)
class Usage:
    """One rollup (or a sum of rollups): ``day`` or ``user`` is "" in sums over them."""

    day: str = ""
    user: str = ""
    jobs: int = 0
    states: dict[str, int] = dataclasses.field(default_factory=dict)
    gpu_seconds: float = 0.0
    cpu_seconds: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        states = dict(self.states)
        for state, n in other.states.items():
            states[state] = states.get(state, 0) + n
        return Usage(self.day if self.day == other.day else "", self.user if self.user == other.user else "",
                     self.jobs + other.jobs, states, self.gpu_seconds + other.gpu_seconds,
                     self.cpu_seconds + other.cpu_seconds, self.bytes_in + other.bytes_in,
                     self.bytes_out + other.bytes_out)

    def to_json(self) -> bytes:
        data = dataclasses.asdict(self)
        del data["day"], data["user"]
        return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, day: str, user: str, raw: bytes) -> "Usage":
        data = json.loads(raw)
        return cls(day, user, int(data.get("jobs", 0)), {str(k): int(v) for k, v in data.get("states", {}).items()},
                   float(data.get("gpu_seconds", 0.0)), float(data.get("cpu_seconds", 0.0)),
                   int(data.get("bytes_in", 0)), int(data.get("bytes_out", 0)))

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def usage_of(job: Job, host_cpus: float, input_bytes: int) -> Usage:
    """What one ended job adds to its user's rollup of the day it ended."""
    runtime = max(0.0, ended_at(job) - job.started_at) if job.started_at else 0.0
    cpus = job.cpus or host_cpus
    return Usage(day_of(ended_at(job)), job.user, 1, {job.state.value: 1}, float(job.gpu_seconds),
                 round(cpus * runtime, 3), int(job.image_bytes) + int(input_bytes), int(job.output_bytes))


#: Jobs of one rollup accounted in one transaction: each adds a compare and 3 operations (etcd
#: allows 128 operations in one transaction by default).
ACCOUNT_GROUP = 32


class UsageMixin:
    """Needs the Store's ``_k``, ``_txn``, ``_get``, ``get_job(s)``, ``workers`` and ``_backlog``."""

    def account_marker_key(self: "Store", job_id: str) -> str:
        return self._k("acct", job_id)

    def usage_key(self: "Store", day: str, user: str) -> str:
        return self._k("usage", day, user)

    def retire_key(self: "Store", job: Job) -> str:
        # Zero-padded so that keys sort by time: a range up to "now - retention" finds the due.
        return self._k("retire", f"{retire_base(job):017.3f}", job.id)

    def _input_bytes(self: "Store", job: Job) -> int:
        if not job.input:
            return 0
        raw, _ = self._get(self._input_keys(job.input, job.worker)[0])
        return int(json.loads(raw)["bytes"]) if raw is not None else 0

    def account_ops(self: "Store", job: Job, host_cpus: float | None = None) -> tuple[list, list]:
        """Compares and writes that add ended ``job`` to its rollup (read now); the caller's
        transaction also compares the job's mod_revision, so a job is added at most once."""
        if host_cpus is None:
            worker = self.get_worker(job.worker) if not job.cpus else None
            host_cpus = float(worker.cpus) if worker is not None else 0.0
        add = usage_of(job, host_cpus, self._input_bytes(job))
        key = self.usage_key(add.day, add.user)
        raw, revision = self._get(key)
        total = (Usage.from_json(add.day, add.user, raw) + add) if raw is not None else add
        return [tx.mod(key) == revision], [tx.put(key, total.to_json()), tx.delete(self.account_marker_key(job.id))]

    def account_job(self: "Store", job: Job, host_cpus: float | None = None, now: float | None = None) -> Job | None:
        """Add ended ``job`` (as read) to its rollup and mark it ``accounted_at``, in one
        transaction. The job as written (or as found, already accounted); ``None`` when the
        record changed since it was read or is gone (re-read it and try again)."""
        if not job.state.terminal:
            raise ValueError(f"job {job.id} is {job.state}: only an ended job is accounted")
        for _ in range(8):  # other jobs of the same user and day race on the rollup key
            if job.accounted_at is not None:
                return job
            now = time.time() if now is None else now
            compare, ops = self.account_ops(job, host_cpus)
            updated = dataclasses.replace(job, accounted_at=now)
            key = self.job_key(job.id)
            ok, revision, _ = self._txn(
                [tx.mod(key) == job.mod_revision, *compare],
                [tx.put(key, updated.to_json()), *ops, tx.put(self.retire_key(updated), b"")],
                f"account job {job.id}")
            if ok:
                return dataclasses.replace(updated, mod_revision=revision)
            current = self.get_job(job.id)
            if current is None or current.mod_revision != job.mod_revision:
                # Changed under us (another janitor accounted it, or a retried commit of ours).
                return current if current is not None and current.accounted_at is not None else None
        return None

    def account_pending(self: "Store", limit: int = 100, now: float | None = None) -> int:
        """Account up to ``limit`` ended jobs not yet accounted; how many this call accounted.

        The jobs of one rollup (user and day) go in one transaction, up to ACCOUNT_GROUP at a
        time: one compare-and-swap of the rollup key per group instead of per job, which is what
        keeps accounting ahead of tens of jobs ending per second. Janitors of several web servers
        take different slices of a backlog and the groups in different orders, so they race less
        on the same ones."""
        ids = [k.rsplit("/", 1)[1] for k, _, _ in self._backlog(self._k("acct", ""), "", limit)]
        jobs = {j.id: j for j in self.get_jobs(ids)}
        cpus = {w.name: float(w.cpus) for w in self.workers()} if ids else {}
        groups: dict[str, list[tuple[Job, Usage]]] = {}
        for job_id in ids:
            job = jobs.get(job_id)
            if job is None or job.accounted_at is not None:  # deleted (and accounted) meanwhile
                self._txn([], [tx.delete(self.account_marker_key(job_id))], "drop accounting mark")
                continue
            if not job.state.terminal:
                continue
            add = usage_of(job, cpus.get(job.worker, 0.0), self._input_bytes(job))
            groups.setdefault(self.usage_key(add.day, add.user), []).append((job, add))
        batches = [group[i:i + ACCOUNT_GROUP] for group in groups.values()
                   for i in range(0, len(group), ACCOUNT_GROUP)]
        random.shuffle(batches)
        return sum(self._account_batch(batch, cpus, now) for batch in batches)

    def _account_batch(self: "Store", batch: list[tuple[Job, Usage]], cpus: dict[str, float],
                       now: float | None) -> int:
        """Jobs of one rollup in one transaction; after a lost race, one at a time."""
        now = time.time() if now is None else now
        day, user = batch[0][1].day, batch[0][1].user
        key = self.usage_key(day, user)
        raw, revision = self._get(key)
        total = Usage.from_json(day, user, raw) if raw is not None else Usage(day, user)
        compare, ops = [tx.mod(key) == revision], []
        for job, add in batch:
            total += add
            updated = dataclasses.replace(job, accounted_at=now)
            compare.append(tx.mod(self.job_key(job.id)) == job.mod_revision)
            ops += [tx.put(self.job_key(job.id), updated.to_json()), tx.delete(self.account_marker_key(job.id)),
                    tx.put(self.retire_key(updated), b"")]
        ok, _, _ = self._txn(compare, [tx.put(key, total.to_json()), *ops], f"account {len(batch)} jobs of {user}")
        if ok:
            return len(batch)
        done = 0
        for job, _ in batch:  # another janitor took some, or a record changed: re-read each
            current = self.get_job(job.id)
            if current is not None and current.state.terminal:
                done += self.account_job(current, cpus.get(current.worker, 0.0), now) is not None
        return done

    def usage(self: "Store", since: str, until: str, user: str = "") -> list[Usage]:
        """The rollups of days ``since`` .. ``until`` (inclusive, UTC), of ``user`` or everyone."""
        start = self._k("usage", since)
        end = self._k("usage", until + "0")  # "YYYY-MM-DD/..." < "YYYY-MM-DD0"
        rows = self._range(start, end=end)
        out = []
        for key, value, _ in rows:
            day, name = key[len(self._k("usage", "")):].split("/", 1)
            if not user or name == user:
                out.append(Usage.from_json(day, name, value))
        return out
