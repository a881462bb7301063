"""Placement and per-worker queue order (DESIGN §4). Pure functions, no I/O.

Two decisions live here:

- :func:`choose_worker`: a web server picks the worker a new job is queued on.
- :func:`plan`: a worker picks which of its queued jobs start now, and on which GPU indices,
  and tells every other job its position and why it waits.
"""

from __future__ import annotations

import heapq
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Collection, Iterator, Mapping, Sequence

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ placement


@dataclass(frozen=True)
class WorkerView:
    """What placement needs to know about one worker."""

    name: str
    alive: bool
    drained: bool
    gpus: int
    cpus: int
    #: Image ids (sha256:...) the worker's engine holds.
    images: frozenset[str]
    #: Sum over its QUEUED and claimed jobs of gpus * timeout_s.
    queued_gpu_seconds: float
    #: Queued plus running jobs.
    active_jobs: int


def _load(w: WorkerView, gpus: int) -> float:
    if gpus > 0:
        # Eligibility guarantees w.gpus >= gpus > 0.
        return w.queued_gpu_seconds / w.gpus
    # GPU-seconds say nothing about CPU jobs; count jobs per core instead.
    return w.active_jobs / max(w.cpus, 1)


def _check_gpus(gpus: int) -> None:
    if gpus < 0:
        raise ValueError(f"a job cannot ask for {gpus} GPUs")


def choose_worker(
    workers: Sequence[WorkerView], gpus: int, image_id: str | None = None
) -> WorkerView | None:
    """The worker a new job asking for ``gpus`` GPUs should be queued on, or None.

    Eligible: alive, not drained, at least ``gpus`` GPUs. Among those: one holding
    ``image_id`` first (a multi-GB transfer costs more than a short queue), then the least
    loaded, then by name so every web server makes the same choice.
    """
    _check_gpus(gpus)
    eligible = [w for w in workers if w.alive and not w.drained and w.gpus >= gpus]
    if not eligible:
        return None
    best = min(
        eligible,
        key=lambda w: (
            0 if image_id is not None and image_id in w.images else 1,
            _load(w, gpus),
            w.name,
        ),
    )
    log.debug("placing a %d-GPU job on %s (of %d eligible)", gpus, best.name, len(eligible))
    return best


def _gpus_word(n: int) -> str:
    return f"{n} GPU" if n == 1 else f"{n} GPUs"


def explain_no_worker(workers: Sequence[WorkerView], gpus: int) -> str:
    """Why :func:`choose_worker` found no worker, as a sentence for the user.

    Returns "" when some worker could take the job.
    """
    _check_gpus(gpus)
    if not workers:
        return "no worker is registered"
    alive = [w for w in workers if w.alive]
    if not alive:
        return f"no worker is alive ({len(workers)} registered)"
    usable = [w for w in alive if not w.drained]
    if not usable:
        if len(workers) == 1:
            return "the only worker is drained"
        if len(alive) == len(workers):
            return f"all {len(workers)} workers are drained"
        down = len(workers) - len(alive)
        return f"every alive worker is drained ({len(alive)} drained, {down} down)"
    if any(w.gpus >= gpus for w in usable):
        return ""
    largest = max(w.gpus for w in usable)
    reason = f"no worker has {_gpus_word(gpus)} (largest: {largest})"
    # Say so when a big enough worker exists but is out of service: the user's request is
    # fine, it just has to wait for that worker.
    parked = sorted(w.name for w in workers if w.gpus >= gpus and (w.drained or not w.alive))
    if parked:
        verb = "is" if len(parked) == 1 else "are"
        reason += f"; {', '.join(parked)} would fit but {verb} drained or down"
    return reason


# ------------------------------------------------------------------------------ queue


@dataclass(frozen=True)
class QueuedJob:
    job_id: str
    user: str
    priority: int
    created_at: float
    gpus: int


@dataclass(frozen=True)
class Decision:
    job_id: str
    #: 1-based position in the worker's start order.
    position: int
    #: The GPU indices to start on (``()`` for a CPU job); None while the job waits.
    gpu_indices: tuple[int, ...] | None
    #: Why the job waits, for the user; "" when it starts.
    reason: str

    @property
    def starts(self) -> bool:
        return self.gpu_indices is not None


def _fair_order(
    queue: Sequence[QueuedJob], running: Mapping[str, int], started: set[str]
) -> Iterator[QueuedJob]:
    """Yield jobs in start order; ``started`` is filled by the caller as jobs start.

    The key is (priority desc, the user's running jobs asc, age, job_id). Only the user of
    a job that just started changes count, and each user has exactly one entry (their best
    job) in the heap, so popping and re-pushing that user's next job keeps the heap right
    without re-sorting everything: O(n log users).
    """
    per_user: dict[str, list[QueuedJob]] = defaultdict(list)
    for job in queue:
        per_user[job.user].append(job)
    for jobs in per_user.values():
        # Reversed so pop() yields the user's best job first.
        jobs.sort(key=lambda j: (-j.priority, j.created_at, j.job_id), reverse=True)
    counts = {user: running.get(user, 0) for user in per_user}

    def entry(user: str) -> tuple:
        head = per_user[user][-1]
        return (-head.priority, counts[user], head.created_at, head.job_id, user)

    heap = [entry(user) for user in per_user]
    heapq.heapify(heap)
    while heap:
        user = heapq.heappop(heap)[-1]
        job = per_user[user].pop()
        yield job
        if job.job_id in started:
            counts[user] += 1
        if per_user[user]:
            heapq.heappush(heap, entry(user))


def plan(
    queue: Sequence[QueuedJob],
    running_per_user: Mapping[str, int],
    free_gpus: Collection[int],
    free_slots: int,
    *,
    total_gpus: int | None = None,
) -> list[Decision]:
    """Decide which queued jobs of one worker start now, in start order.

    ``running_per_user`` counts this worker's running jobs per user (fair share, and the
    "N running" in reasons). ``free_gpus`` are GPU indices no job holds; ``free_slots`` how
    many more jobs may run. Jobs are walked by priority (high first), fair share (users with
    fewer running jobs first, counting the ones this plan starts), age, job_id. A job starts
    when a slot is free and enough GPUs are free; it gets the lowest free indices.

    Once a GPU job cannot start for lack of GPUs, later GPU jobs may not jump ahead of it
    (else a stream of 1-GPU jobs would starve a 4-GPU job forever); CPU-only jobs still may,
    as they take no GPU from it. With ``total_gpus`` given, a job asking for more GPUs than
    the worker has never reserves any: it could wait forever and block everyone.
    """
    ids = [job.job_id for job in queue]
    if len(set(ids)) != len(ids):
        raise ValueError("plan: the queue lists a job twice")
    for job in queue:
        if job.gpus < 0:
            raise ValueError(f"plan: job {job.job_id} asks for {job.gpus} GPUs")
    free = sorted(set(free_gpus))
    slots = max(free_slots, 0)
    running_total = sum(running_per_user.values())
    started: set[str] = set()
    blocker: str | None = None  # first GPU job that waits for GPUs; the rest queue behind it
    decisions: list[Decision] = []

    for position, job in enumerate(_fair_order(queue, running_per_user, started), start=1):
        if total_gpus is not None and job.gpus > total_gpus:
            reason = f"needs {_gpus_word(job.gpus)} but this worker has only {total_gpus}"
        elif job.gpus > 0 and blocker is not None:
            reason = f"behind job {blocker} which waits for GPUs"
        else:
            needs = []
            if job.gpus > len(free):
                needs.append(f"{_gpus_word(job.gpus)} ({len(free)} free)")
                blocker = job.job_id
            if slots == 0:
                needs.append(f"a free job slot ({running_total} running)")
            reason = ("waiting for " + " and ".join(needs)) if needs else ""
        if reason:
            decisions.append(Decision(job.job_id, position, None, reason))
            continue
        indices = tuple(free[: job.gpus])
        del free[: job.gpus]
        slots -= 1
        running_total += 1
        started.add(job.job_id)
        decisions.append(Decision(job.job_id, position, indices, ""))
    return decisions


__all__ = [
    "WorkerView",
    "choose_worker",
    "explain_no_worker",
    "QueuedJob",
    "Decision",
    "plan",
]
