"""Run slots: keys a job takes in the transaction that claims it and gives back in the one that
ends it, so that a cap on claimed (STARTING, RUNNING, EXPORTING) jobs holds however many
workers claim at once (DESIGN §4). Two pools use them::

    arrayslots/<array_id>/<n>   one of a job array's %N run slots (n < N); one per job
    gpuslots/<user>/<n>         one of a user's GPU quota (n < quota); one per GPU of the job
    gpuslots/<user>/<id>.<i>    a GPU of a user without a quota (nobody else takes that name)

The value of a slot key: {"job": id, "at": claim time}. The claim compares each key it takes
as absent (:meth:`pink.store.Store.claim`); the job records the keys (``Job.run_slots``) and
the terminal transaction deletes them (:meth:`pink.store.Store._move`). Of workers racing for
the same free slot, one claim wins and the others lose (their job waits for the next cycle).

GPU slots are taken also without a quota: the pool then says, at the cost of one short prefix
read, which GPUs every user holds on all workers and since when (fair share, pink.fairshare).
A quota an admin lowers below what a user holds stops new claims until the user is under it;
running jobs keep their slots.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from .etcd import transactions as tx
from .scheduling import QueuedJob, UserQuota

if TYPE_CHECKING:
    from .store import Store

ARRAY = "arrayslots"
GPUS = "gpuslots"


def slot_key(store: "Store", slot: str) -> str:
    """The etcd key of a slot named relative to the prefix (as ``Job.run_slots`` holds it)."""
    return store._k(slot)


def taken(store: "Store", pool: str, owner: str) -> dict[str, str]:
    """Slot name (the last part of its key) -> the job holding it, of one array or user."""
    out = {}
    for key, value, _ in store._get_prefix(store._k(pool, owner, "")):
        try:
            out[key.rsplit("/", 1)[1]] = json.loads(value)["job"]
        except (ValueError, KeyError, TypeError):  # written before slot values were JSON
            out[key.rsplit("/", 1)[1]] = value.decode(errors="replace")
    return out


def all_gpu_slots(store: "Store") -> list[tuple[str, float]]:
    """(user, claimed at) of every GPU slot taken on all workers: one GPU each."""
    out = []
    for key, value, _ in store._get_prefix(store._k(GPUS, "")):
        user = key[len(store._k(GPUS, "")):].split("/", 1)[0]
        try:
            out.append((user, float(json.loads(value)["at"])))
        except (ValueError, KeyError, TypeError):
            continue
    return out


def free_numbers(held: Iterable[str], limit: int, n: int) -> list[int] | None:
    """The ``n`` lowest slot numbers below ``limit`` not in ``held``; None when fewer are free."""
    used = set(held)
    free = [i for i in range(limit) if str(i) not in used][:n]
    return free if len(free) == n else None


def claim_ops(store: "Store", job_id: str, slots: Sequence[str], now: float) -> tuple[list, list]:
    """Compares (each slot is free) and puts that take ``slots`` for the job in its claim."""
    value = json.dumps({"job": job_id, "at": now})
    keys = [slot_key(store, s) for s in slots]
    return [tx.version(k) == 0 for k in keys], [tx.put(k, value) for k in keys]


def release_ops(store: "Store", slots: Sequence[str]) -> list:
    return [tx.delete(slot_key(store, s)) for s in slots]


@dataclass
class Taken:
    """The slots a worker's queue cares about, read once per cycle (its arrays with a limit and
    its users with a GPU quota) and updated by the claims of that cycle."""

    arrays: dict[str, dict[str, str]] = field(default_factory=dict)
    gpus: dict[str, dict[str, str]] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)

    @classmethod
    def read(cls, store: "Store", queued: Sequence[QueuedJob], limits: Mapping[str, int]) -> "Taken":
        """``limits``: user -> GPU quota (0 or absent: none), e.g. FairShare.limits()."""
        arrays = {j.array_id for j in queued if j.array_limit}
        users = {j.user for j in queued if j.gpus and limits.get(j.user, 0) > 0}
        return cls({a: taken(store, ARRAY, a) for a in arrays}, {u: taken(store, GPUS, u) for u in users},
                   {u: limits[u] for u in users})

    def array_running(self) -> dict[str, int]:
        """As :func:`pink.scheduling.plan` takes ``array_running``."""
        return {a: len(s) for a, s in self.arrays.items()}

    def quotas(self) -> dict[str, UserQuota]:
        """As :func:`pink.scheduling.plan` takes ``quotas``."""
        return {u: UserQuota(self.limits[u], len(s), len(set(s.values()))) for u, s in self.gpus.items()}

    def pick(self, job: QueuedJob) -> tuple[str, ...] | None:
        """The slots ``job`` takes when claimed, marked taken here; None when none are free
        (another claim of this cycle took them: it waits for the next cycle)."""
        slots: list[str] = []
        if job.array_limit:
            got = free_numbers(self.arrays.setdefault(job.array_id, {}), job.array_limit, 1)
            if got is None:
                return None
            slots.append(f"{ARRAY}/{job.array_id}/{got[0]}")
        if job.gpus:
            if job.user in self.limits:
                numbers = free_numbers(self.gpus[job.user], self.limits[job.user], job.gpus)
                if numbers is None or len(self.gpus[job.user]) + job.gpus > self.limits[job.user]:
                    return None
                slots += [f"{GPUS}/{job.user}/{n}" for n in numbers]
            else:
                slots += [f"{GPUS}/{job.user}/{job.job_id}.{i}" for i in range(job.gpus)]
        for slot in slots:  # a lost race leaves them taken here until the next cycle reads again
            pool, owner, name = slot.split("/", 2)
            (self.arrays if pool == ARRAY else self.gpus).setdefault(owner, {})[name] = job.job_id
        return tuple(slots)
