"""One worker's queue, planned the same way by the worker (which jobs it starts) and by the web
servers (each queued job's position, why it waits and when it starts at the latest).

Both describe the jobs the worker runs as :class:`~pink.eta.Running` and the worker as a
:class:`~pink.eta.Capacity`, and call :func:`plan_queue`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .eta import Capacity, Running, estimate_starts, plan_once
from .model import WorkerInfo
from .scheduling import Decision
from .queues import QueueEntry


@dataclass(frozen=True)
class QueuePlan:
    #: As :func:`pink.scheduling.plan` returns them: start order, GPU indices, reasons.
    decisions: list[Decision]
    #: Job id -> when it starts at the latest (None: unknown); empty unless asked for.
    starts_by: dict[str, float | None] = field(default_factory=dict)


def running_entry(entry: QueueEntry, now: float) -> Running:
    """A claimed job of the queue index: it ends by its start (now while it is starting) plus
    its time limit."""
    ends_by = (entry.started_at or now) + entry.timeout_s if entry.timeout_s > 0 else None
    return Running(entry.user, entry.gpus, entry.cpus, entry.memory_bytes, ends_by, entry.array_id)


def capacity_of(worker: WorkerInfo) -> Capacity:
    """A worker as its registration and last heartbeat describe it."""
    return Capacity(tuple(worker.gpus_free), len(worker.gpus), len(worker.gpus) - len(worker.quarantined),
                    worker.cpus, worker.memory_bytes, worker.max_parallel_jobs)


def plan_queue(queued: Sequence[QueueEntry], running: Sequence[Running], capacity: Capacity, *,
               array_running: Mapping[str, int] | None = None, estimate_from: float | None = None,
               until_full: bool = False, **order: Any) -> QueuePlan:
    """Plan the worker's QUEUED entries ``queued``; with ``estimate_from`` (now), also when each
    starts at the latest (:func:`pink.eta.estimate_starts`). ``until_full`` and ``order`` go to
    :func:`pink.scheduling.plan` unchanged."""
    queue = [e.as_queued for e in queued]
    arrays = dict(array_running or {})
    decisions = plan_once(queue, running, capacity, arrays, until_full=until_full, **order)
    if estimate_from is None:
        return QueuePlan(decisions)
    limits = {e.job_id: e.timeout_s for e in queued}
    return QueuePlan(decisions, estimate_starts(queue, limits, running, capacity, estimate_from,
                                                array_running=arrays, **order))


__all__ = ["QueuePlan", "Running", "Capacity", "running_entry", "capacity_of", "plan_queue"]
