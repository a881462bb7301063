"""Placement and per-worker queue order (DESIGN §4). Pure functions, no I/O.

Two decisions live here:

- :func:`choose_worker`: a web server picks the worker a new job is queued on, after
  :func:`impossible` has ruled out requests no registered worker could ever run; the
  resources the job gets there come from :func:`job_resources`.
- :func:`plan`: a worker picks which of its queued jobs start now, and on which GPU indices,
  and tells every other job its position and why it waits.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Collection, Iterable, Iterator, Mapping, Sequence

from .model import format_size

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
    memory_bytes: int = 0
    datasets: frozenset[str] = frozenset()
    #: Per-job defaults and maxima, as in :class:`pink.model.WorkerInfo`.
    default_cpus: float = 0.0
    default_memory_bytes: int = 0
    default_shm_bytes: int = 0
    max_cpus: float = 0.0
    max_memory_bytes: int = 0
    #: GPUs quarantined (health check or admin): they take no new jobs, so a job asking for
    #: more than the rest waits elsewhere. Resources per job are still shares of all GPUs.
    quarantined_gpus: int = 0

    @property
    def usable_gpus(self) -> int:
        return self.gpus - self.quarantined_gpus


@dataclass(frozen=True)
class Resources:
    """What a job's container gets: CPUs and memory (0 = no limit), /dev/shm (0 = docker's 64 MiB)."""

    cpus: float
    memory_bytes: int
    shm_bytes: int


def _cpus_word(n: float) -> str:
    return f"{n:g} CPU" if n == 1 else f"{n:g} CPUs"


def job_resources(w: WorkerView, gpus: int = 0, cpus: float = 0.0, memory_bytes: int = 0,
                  shm_bytes: int = 0) -> Resources | str:
    """What a job asking for these resources (0 = "not asked") gets on worker ``w``, or why it
    cannot run there: a sentence when what it asks for is over the worker's maximum per job.

    Not asked for: a GPU job gets its share of the host (``gpus`` x host CPUs / host GPUs, the
    same for memory, CPUs rounded down to a thousandth), a CPU-only job the worker's default
    (worker.cpus_per_job, memory_per_job); neither more than the maximum. /dev/shm: the
    worker's shm_per_job, else half of the job's memory (room for a PyTorch DataLoader's
    workers or NCCL), else docker's 64 MiB when the job's memory has no limit.
    """
    max_cpus = w.max_cpus or w.cpus
    max_memory = w.max_memory_bytes or w.memory_bytes
    if cpus > max_cpus:
        return f"{_cpus_word(cpus)} is more than worker {w.name} gives a job (at most {max_cpus:g})"
    if max_memory and memory_bytes > max_memory:
        return (f"{format_size(memory_bytes)} of memory is more than worker {w.name} gives a job "
                f"(at most {format_size(max_memory)})")
    share = gpus > 0 and w.gpus > 0
    if not cpus:
        cpus = math.floor(gpus * w.cpus * 1000 / w.gpus) / 1000 if share else w.default_cpus
        cpus = min(cpus, max_cpus)
    if not memory_bytes:
        memory_bytes = gpus * w.memory_bytes // w.gpus if share else w.default_memory_bytes
        memory_bytes = min(memory_bytes, max_memory) if max_memory else memory_bytes
    return Resources(cpus, memory_bytes, shm_bytes or w.default_shm_bytes or memory_bytes // 2)


def _fits(w: WorkerView, gpus: int, datasets: Iterable[str], cpus: float, memory_bytes: int) -> bool:
    """Could ``w`` run the job, were it alive, undrained and idle?"""
    return w.usable_gpus >= gpus and w.datasets.issuperset(datasets) and \
        isinstance(job_resources(w, gpus, cpus, memory_bytes), Resources)


def _datasets_phrase(workers: Sequence[WorkerView], datasets: Sequence[str]) -> str:
    """"dataset a" / "datasets a, b": those none of ``workers`` has; "all of the datasets a, b"
    when each is somewhere but no worker has them all."""
    lacking = sorted(set(datasets).difference(*(w.datasets for w in workers)))
    if not lacking:
        return "all of the datasets " + ", ".join(sorted(datasets))
    return f"dataset{'s' if len(lacking) > 1 else ''} {', '.join(lacking)}"


def impossible(workers: Sequence[WorkerView], datasets: Sequence[str] = (), cpus: float = 0.0,
               memory_bytes: int = 0) -> str:
    """Why no registered worker, in service or not, could ever run a job asking for these
    datasets and resources (a 400 for the user: asking again will not help); "" when one could.

    GPUs are left to :func:`explain_no_worker`: a bigger worker may join the cluster.
    """
    holders = [w for w in workers if w.datasets.issuperset(datasets)]
    if not workers:
        return ""  # explain_no_worker says so
    if not holders:
        known = sorted(set().union(*(w.datasets for w in workers)))
        return f"no worker has {_datasets_phrase(workers, datasets)} (datasets: {', '.join(known) or 'none'})"
    if any(_fits(w, 0, datasets, cpus, memory_bytes) for w in holders):
        return ""
    # Each holder refuses with its own maximum; the largest tells the user what may be asked.
    if cpus > max(w.max_cpus or w.cpus for w in holders):
        return f"no worker gives a job {_cpus_word(cpus)} (at most {max(w.max_cpus or w.cpus for w in holders):g})"
    most = max(w.max_memory_bytes or w.memory_bytes for w in holders)
    if memory_bytes > most:
        return f"no worker gives a job {format_size(memory_bytes)} of memory (at most {format_size(most)})"
    return "no worker gives a job both the CPUs and the memory it asks for"


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
    workers: Sequence[WorkerView], gpus: int, image_id: str | None = None, *,
    datasets: Sequence[str] = (), cpus: float = 0.0, memory_bytes: int = 0,
) -> WorkerView | None:
    """The worker a new job asking for ``gpus`` GPUs should be queued on, or None.

    Eligible: alive, not drained, at least ``gpus`` GPUs, every dataset asked for, and room
    per job for the CPUs and memory asked for (:func:`job_resources`). Among those: one
    holding ``image_id`` first (a multi-GB transfer costs more than a short queue), then the
    least loaded, then by name so every web server makes the same choice.
    """
    _check_gpus(gpus)
    eligible = [w for w in workers if w.alive and not w.drained and _fits(w, gpus, datasets, cpus, memory_bytes)]
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


def explain_no_worker(workers: Sequence[WorkerView], gpus: int, *, datasets: Sequence[str] = (),
                      cpus: float = 0.0, memory_bytes: int = 0) -> str:
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
    if any(_fits(w, gpus, datasets, cpus, memory_bytes) for w in usable):
        return ""
    with_gpus = [w for w in usable if w.usable_gpus >= gpus]
    with_data = [w for w in with_gpus if w.datasets.issuperset(datasets)]
    if not with_gpus:
        reason = f"no worker has {_gpus_word(gpus)} (largest: {max(w.gpus for w in usable)})"
        if any(w.gpus >= gpus for w in usable):
            reason = f"no worker has {_gpus_word(gpus)} out of quarantine (most: {max(w.usable_gpus for w in usable)})"
    elif not with_data:
        with_gpus_word = f" with {_gpus_word(gpus)}" if gpus else ""
        reason = f"no worker in service{with_gpus_word} has {_datasets_phrase(with_gpus, datasets)}"
    else:
        asked = []
        if cpus:
            asked.append(_cpus_word(cpus))
        if memory_bytes:
            asked.append(f"{format_size(memory_bytes)} of memory")
        reason = f"no worker in service gives a job {' and '.join(asked)}"
    # Say so when a worker that fits exists but is out of service: the user's request is
    # fine, it just has to wait for that worker.
    parked = sorted(w.name for w in workers if (w.drained or not w.alive) and _fits(w, gpus, datasets, cpus, memory_bytes))
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
    #: As resolved at placement; 0 (no limit) reserves nothing.
    cpus: float = 0.0
    memory_bytes: int = 0
    #: The job's array and how many of its jobs may be claimed at once (pink.arrays; 0: no limit).
    array_id: str = ""
    array_limit: int = 0
    #: Orders only this user's own jobs (after ``priority``); anyone may set it (-100..100).
    user_priority: int = 0


@dataclass(frozen=True)
class UserQuota:
    """A user's cap on the GPUs their claimed jobs hold on all workers (pink.runslots), and
    what holds them now: GPUs and claimed jobs."""

    limit: int
    gpus: int = 0
    jobs: int = 0


@dataclass(frozen=True)
class Pool:
    """CPUs or bytes of memory of one worker: what its running jobs leave free, and its total."""

    free: float
    total: float


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
    queue: Sequence[QueuedJob], running: Mapping[str, int], started: set[str],
    usage: Mapping[str, float],
) -> Iterator[QueuedJob]:
    """Yield jobs in start order; ``started`` is filled by the caller as jobs start.

    A user's jobs are ordered by (priority desc, user_priority desc, age, job_id); users by
    their next job's key (priority desc, the user's fair-share ``usage`` asc, the user's
    running jobs asc, age, job_id). Only the user of a job that just started changes count,
    and each user has exactly one entry (their best job) in the heap, so popping and
    re-pushing that user's next job keeps the heap right without re-sorting everything:
    O(n log users).
    """
    per_user: dict[str, list[QueuedJob]] = defaultdict(list)
    for job in queue:
        per_user[job.user].append(job)
    for jobs in per_user.values():
        # Reversed so pop() yields the user's best job first.
        jobs.sort(key=lambda j: (-j.priority, -j.user_priority, j.created_at, j.job_id), reverse=True)
    counts = {user: running.get(user, 0) for user in per_user}

    def entry(user: str) -> tuple:
        head = per_user[user][-1]
        return (-head.priority, usage.get(user, 0.0), counts[user], head.created_at, head.job_id, user)

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


class _Overtaken:
    """Which other user's job, of the same priority but newer, went ahead of a job: per
    priority, the newest job seen so far of the two users with the newest ones."""

    def __init__(self) -> None:
        self._newest: dict[int, list[tuple[float, str]]] = defaultdict(list)

    def seen(self, job: QueuedJob) -> None:
        rows = self._newest[job.priority]
        for i, (at, user) in enumerate(rows):
            if user == job.user:
                if job.created_at > at:
                    rows[i] = (job.created_at, user)
                    rows.sort(reverse=True)
                return
        rows.append((job.created_at, job.user))
        rows.sort(reverse=True)
        del rows[2:]

    def by(self, job: QueuedJob) -> str:
        """A user whose newer job of the same priority went ahead of ``job``; "" when none."""
        return next((u for t, u in self._newest[job.priority] if u != job.user and t > job.created_at), "")


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f}"


class _Divisible:
    """CPUs (counted in thousandths, so sums are exact) or memory bytes, as :func:`plan` hands
    them out: ``free`` and ``total`` in those units."""

    def __init__(self, what: str, pool: Pool | None, scale: int, phrase: Callable[[float], str],
                 amount: Callable[[float], str]) -> None:
        self.what, self.scale, self._phrase, self._amount = what, scale, phrase, amount
        self.tracked = pool is not None
        self.free = round(pool.free * scale) if pool else 0
        self.total = round(pool.total * scale) if pool else 0

    def need(self, asked: float) -> int:
        """What a job asking for ``asked`` takes from the pool (nothing when not tracked)."""
        return round(asked * self.scale) if self.tracked else 0

    def phrase(self, units: int) -> str:
        """"8 CPUs", "16 GiB of memory"."""
        return self._phrase(units / self.scale)

    def amount(self, units: int) -> str:
        """"8", "16 GiB"."""
        return self._amount(units / self.scale)


def plan(
    queue: Sequence[QueuedJob],
    running_per_user: Mapping[str, int],
    free_gpus: Collection[int],
    free_slots: int,
    *,
    total_gpus: int | None = None,
    cpus: Pool | None = None,
    memory: Pool | None = None,
    array_running: Mapping[str, int] | None = None,
    usage: Mapping[str, float] | None = None,
    quotas: Mapping[str, UserQuota] | None = None,
    until_full: bool = False,
) -> list[Decision]:
    """Decide which queued jobs of one worker start now, in start order.

    ``running_per_user`` counts this worker's running jobs per user (fair share, and the
    "N running" in reasons). ``free_gpus`` are GPU indices no job holds; ``free_slots`` how
    many more jobs may run; ``cpus`` and ``memory`` (when given) what the running jobs' limits
    leave of the worker's. Jobs are walked by priority (high first), fair share (users with
    less ``usage`` first: their decayed recent GPU-seconds, :mod:`pink.fairshare`; then users
    with fewer running jobs, counting the ones this plan starts), age, job_id; a user's own
    jobs by priority, then user_priority, then age. A job starts
    when a slot is free and enough GPUs, CPUs and memory are free; it gets the lowest free
    GPU indices.

    Once a job cannot start for lack of GPUs (CPUs, memory), later jobs asking for GPUs (CPUs,
    memory) may not jump ahead of it (else a stream of 1-GPU jobs would starve a 4-GPU job
    forever); jobs that ask for none of what it waits for still may, as they take nothing from
    it. A job asking for more than the worker has in all (``total_gpus``, the pools' totals)
    never reserves anything: it could wait forever and block everyone.

    ``array_running`` counts the claimed jobs of each job array on every worker (the array's
    taken run slots, :mod:`pink.arraystore`): a job of an array with a limit (``%N``) waits
    while N of its array's jobs are claimed, counting those this plan starts, and takes
    nothing from the jobs behind it.

    ``quotas`` caps the GPUs each listed user's claimed jobs hold on all workers
    (:class:`UserQuota`, :mod:`pink.runslots`): a GPU job that would pass its user's cap
    waits, counting the jobs this plan starts, and takes nothing from the jobs behind it.

    ``until_full`` stops the walk once no job slot is left: the jobs after that point have no
    decision (none of them could start), for a caller that needs which jobs start and not why
    every other one waits (a worker daemon's cycle, in time independent of its queue's length
    past the jobs it starts, but for the ordering).
    """
    ids = [job.job_id for job in queue]
    if len(set(ids)) != len(ids):
        raise ValueError("plan: the queue lists a job twice")
    for job in queue:
        if job.gpus < 0 or job.cpus < 0 or job.memory_bytes < 0:
            raise ValueError(f"plan: job {job.job_id} asks for {job.gpus} GPUs, {job.cpus} CPUs, "
                             f"{job.memory_bytes} bytes")
    free = sorted(set(free_gpus))
    pools = (_Divisible("CPUs", cpus, 1000, _cpus_word, lambda n: f"{n:g}"),
             _Divisible("memory", memory, 1, lambda n: f"{format_size(n)} of memory", format_size))
    slots = max(free_slots, 0)
    running_total = sum(running_per_user.values())
    started: set[str] = set()
    in_array = dict(array_running or {})
    held = dict(quotas or {})
    usage = usage or {}
    overtaken = _Overtaken() if usage else None
    #: What the first job left waiting for each resource waits for: resource -> its job id.
    blockers: dict[str, str] = {}
    decisions: list[Decision] = []

    for position, job in enumerate(_fair_order(queue, running_per_user, started, usage), start=1):
        if until_full and slots == 0:
            break
        needs = [pool.need(amount) for pool, amount in zip(pools, (job.cpus, job.memory_bytes))]
        asks = {"GPUs": job.gpus > 0, **{pool.what: n > 0 for pool, n in zip(pools, needs)}}
        too_big = [f"{pool.phrase(n)} but this worker has only {pool.amount(pool.total)}"
                   for pool, n in zip(pools, needs) if pool.tracked and n > pool.total]
        if total_gpus is not None and job.gpus > total_gpus:
            too_big.insert(0, f"{_gpus_word(job.gpus)} but this worker has only {total_gpus}")
        behind = next((what for what in blockers if asks[what]), None)
        at_limit = job.array_limit and in_array.get(job.array_id, 0) >= job.array_limit
        quota = held.get(job.user) if job.gpus else None
        if too_big:
            reason = "needs " + " and ".join(too_big)
        elif quota is not None and job.gpus > quota.limit:
            reason = f"needs {_gpus_word(job.gpus)} but your GPU quota is {quota.limit}; ask an admin to raise it"
        elif quota is not None and quota.gpus + job.gpus > quota.limit:
            reason = (f"your GPU quota ({quota.limit}) is in use: {_gpus_word(quota.gpus)} held by "
                      f"{quota.jobs} running job{'s' if quota.jobs != 1 else ''}")
        elif at_limit:
            reason = (f"its array runs at most {job.array_limit} at once (%{job.array_limit}); "
                      "waiting for one of them to end")
        elif behind is not None:
            reason = f"behind job {blockers[behind]} which waits for {behind}"
        else:
            lacking = []
            if job.gpus > len(free):
                lacking.append(f"{_gpus_word(job.gpus)} ({len(free)} free)")
                blockers["GPUs"] = job.job_id
            for pool, n in zip(pools, needs):
                if n and n > pool.free:
                    lacking.append(f"{pool.phrase(n)} ({pool.amount(max(pool.free, 0))} free)")
                    blockers[pool.what] = job.job_id
            if slots == 0:
                lacking.append(f"a free job slot ({running_total} running)")
            reason = ("waiting for " + " and ".join(lacking)) if lacking else ""
        # Waiting for what a newer job of another user took: fair share's doing; say so.
        ahead = ""
        if overtaken is not None:
            ahead = overtaken.by(job) if reason.startswith(("waiting for", "behind")) else ""
            overtaken.seen(job)
        if ahead:
            reason += (f"; fair share put {ahead}'s jobs first (recent GPU-hours, decayed: {ahead} "
                       f"{_hours(usage.get(ahead, 0.0))}, yours {_hours(usage.get(job.user, 0.0))})")
        if reason:
            decisions.append(Decision(job.job_id, position, None, reason))
            continue
        indices = tuple(free[: job.gpus])
        del free[: job.gpus]
        for pool, n in zip(pools, needs):
            pool.free -= n
        slots -= 1
        running_total += 1
        started.add(job.job_id)
        if job.array_id:
            in_array[job.array_id] = in_array.get(job.array_id, 0) + 1
        if quota is not None:
            held[job.user] = UserQuota(quota.limit, quota.gpus + job.gpus, quota.jobs + 1)
        decisions.append(Decision(job.job_id, position, indices, ""))
    return decisions


__all__ = [
    "WorkerView",
    "Resources",
    "job_resources",
    "impossible",
    "choose_worker",
    "explain_no_worker",
    "QueuedJob",
    "UserQuota",
    "Pool",
    "Decision",
    "plan",
]
