"""When each queued job of a worker starts at the latest, if every job ahead runs to its time
limit: an event simulation over :func:`pink.scheduling.plan`. Pure, no I/O.

The simulation starts what the plan starts now, then jumps to the next moment a running job
reaches its limit (``started_at + timeout_s``), frees what it held, plans again, and so on. A
job gets the time of the step that starts it, or None when the estimate is unknown: it waits
behind a job whose limit is unknown, for something that never frees (more than the worker has,
an array's jobs on other workers), further back than :data:`MAX_AHEAD` in today's start order
or than :data:`MAX_STEPS` events. Both bound the cost: each event plans the simulated queue again.

It is an upper bound under today's queue only: jobs that end early make it sooner, and jobs
submitted later with a higher priority (or from users with less usage) may go first.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

from .scheduling import Decision, Pool, QueuedJob, UserQuota, plan

#: Events simulated at most; jobs that would start later get None (unknown).
MAX_STEPS = 100
#: Only the first jobs in today's start order are simulated (those behind: None): a plan per
#: event over the whole of a queue of thousands would cost seconds per listing.
MAX_AHEAD = 50


@dataclass(frozen=True)
class Running:
    """A claimed (starting or running) job of the worker, as planning sees it."""

    user: str
    gpus: int
    cpus: float = 0.0
    memory_bytes: int = 0
    #: When it ends at the latest: its start (or its claim, while it starts) + its time limit;
    #: None: unknown.
    ends_by: float | None = None
    array_id: str = ""


@dataclass(frozen=True)
class Capacity:
    """The worker: GPUs no job holds and none quarantined, GPUs in all and out of quarantine,
    host CPUs and memory (0: not tracked), and its job slots (the effective max_parallel_jobs)."""

    free_gpus: tuple[int, ...]
    total_gpus: int
    usable_gpus: int
    cpus: float
    memory_bytes: int
    slots: int


def plan_once(queue: Sequence[QueuedJob], running: Sequence[Running], capacity: Capacity,
              array_running: Mapping[str, int], until_full: bool = False, **order: Any) -> list[Decision]:
    """:func:`pink.scheduling.plan` for a worker running ``running``."""
    per_user: dict[str, int] = {}
    for r in running:
        per_user[r.user] = per_user.get(r.user, 0) + 1
    cpus = memory = None
    if capacity.cpus:
        cpus = Pool(capacity.cpus - sum(r.cpus for r in running), capacity.cpus)
    if capacity.memory_bytes:
        memory = Pool(capacity.memory_bytes - sum(r.memory_bytes for r in running), capacity.memory_bytes)
    return plan(queue, per_user, capacity.free_gpus, max(capacity.slots - len(running), 0),
                total_gpus=capacity.total_gpus, cpus=cpus, memory=memory,
                array_running=dict(array_running), until_full=until_full, **order)


def estimate_starts(queue: Sequence[QueuedJob], limits: Mapping[str, float], running: Sequence[Running],
                    capacity: Capacity, now: float, *, array_running: Mapping[str, int] | None = None,
                    max_steps: int = MAX_STEPS, max_ahead: int = MAX_AHEAD, **order: Any) -> dict[str, float | None]:
    """Job id -> when it starts at the latest (``now`` for a job that starts now), or None.

    ``limits`` maps each queued job to its time limit in seconds (missing or 0: unknown);
    ``order`` is passed to every plan unchanged.
    """
    starts: dict[str, float | None] = {job.job_id: None for job in queue}
    pending = list(queue)
    running = list(running)
    arrays = dict(array_running or {})
    # Users' GPU quotas (pink.fairshare): what simulated jobs start and end moves them too.
    quotas: dict[str, UserQuota] = dict(order.pop("quotas", None) or {})
    order["quotas"] = quotas
    free = len(capacity.free_gpus)
    if len(pending) > max_ahead:
        first = plan_once(pending, running, capacity, arrays, **order)  # in start order
        ahead = {d.job_id for d in first[:max_ahead]}
        pending = [job for job in pending if job.job_id in ahead]
    t = now
    for _step in range(max_steps):
        indices = tuple(range(free))  # which GPUs does not matter here, only how many
        decisions = plan_once(pending, running, replace(capacity, free_gpus=indices), arrays, **order)
        begun = {d.job_id for d in decisions if d.starts}
        for job in pending:
            if job.job_id in begun:
                starts[job.job_id] = t
                limit = limits.get(job.job_id) or 0
                running.append(Running(job.user, job.gpus, job.cpus, job.memory_bytes,
                                       t + limit if limit > 0 else None, job.array_id))
                free -= job.gpus
                if job.array_id:
                    arrays[job.array_id] = arrays.get(job.array_id, 0) + 1
                _charge(quotas, job.user, job.gpus, 1)
        pending = [job for job in pending if job.job_id not in begun]
        known = [r.ends_by for r in running if r.ends_by is not None]
        if not pending or not known:
            break
        t = max(t, min(known))
        ended = [r for r in running if r.ends_by is not None and r.ends_by <= t]
        running = [r for r in running if r.ends_by is None or r.ends_by > t]
        for r in ended:
            if r.array_id and arrays.get(r.array_id):
                arrays[r.array_id] -= 1
            _charge(quotas, r.user, -r.gpus, -1)
        # What ends frees its GPUs, but never more than are out of quarantine and not held.
        held = sum(r.gpus for r in running)
        free = min(free + sum(r.gpus for r in ended), max(capacity.usable_gpus - held, 0))
    return starts


def _charge(quotas: dict[str, UserQuota], user: str, gpus: int, jobs: int) -> None:
    """A GPU job of a user with a quota started (positive) or ended (negative)."""
    quota = quotas.get(user)
    if quota is not None and gpus:
        quotas[user] = replace(quota, gpus=max(quota.gpus + gpus, 0), jobs=max(quota.jobs + jobs, 0))


__all__ = ["Running", "Capacity", "plan_once", "estimate_starts", "MAX_STEPS", "MAX_AHEAD"]
