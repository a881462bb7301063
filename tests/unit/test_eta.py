"""Estimated start times of queued jobs (pink.eta): an event simulation over the plan, in
which every job ahead runs to its time limit."""

from __future__ import annotations

from pink.eta import Capacity, Running, estimate_starts
from pink.scheduling import QueuedJob

NOW = 1000.0
GiB = 1 << 30


def job(job_id: str, user: str = "alice", *, gpus: int = 0, cpus: float = 0.0, memory_bytes: int = 0,
        priority: int = 0, created_at: float = 0.0, array_id: str = "", array_limit: int = 0) -> QueuedJob:
    return QueuedJob(job_id, user, priority, created_at, gpus, cpus, memory_bytes, array_id, array_limit)


def worker(*, free_gpus: int = 0, gpus: int | None = None, usable: int | None = None, cpus: float = 0,
           memory_bytes: int = 0, slots: int = 4) -> Capacity:
    total = free_gpus if gpus is None else gpus
    return Capacity(tuple(range(free_gpus)), total, total if usable is None else usable, cpus, memory_bytes, slots)


def eta(queue, limits, running, capacity, **kw):
    return estimate_starts(queue, limits, running, capacity, NOW, **kw)


def test_a_job_that_fits_now_starts_now():
    assert eta([job("a", gpus=1)], {"a": 60}, [], worker(free_gpus=2)) == {"a": NOW}


def test_a_job_behind_a_running_one_starts_when_its_limit_is_reached():
    running = [Running("bob", 2, ends_by=NOW + 300)]
    assert eta([job("a", gpus=2)], {"a": 60}, running, worker(free_gpus=0, gpus=2)) == {"a": NOW + 300}


def test_gpus_free_in_order_of_the_limits_and_queued_jobs_chain():
    # 4 GPUs: two 2-GPU jobs run, ending at +100 and +500. Queue: a (2 GPUs, 1000 s), b (4 GPUs).
    running = [Running("x", 2, ends_by=NOW + 500), Running("y", 2, ends_by=NOW + 100)]
    queue = [job("a", gpus=2, created_at=1), job("b", gpus=4, created_at=2)]
    starts = eta(queue, {"a": 1000, "b": 60}, running, worker(free_gpus=0, gpus=4))
    assert starts == {"a": NOW + 100, "b": NOW + 1100}  # b waits for a's end (+100 + 1000)


def test_a_free_job_slot_is_waited_for_like_a_gpu():
    running = [Running("x", 0, ends_by=NOW + 50), Running("y", 0, ends_by=NOW + 20)]
    queue = [job("a", created_at=1), job("b", created_at=2), job("c", created_at=3)]
    starts = eta(queue, {"a": 100, "b": 100, "c": 100}, running, worker(slots=2))
    assert starts == {"a": NOW + 20, "b": NOW + 50, "c": NOW + 120}


def test_cpus_and_memory_are_waited_for():
    running = [Running("x", 0, cpus=3, ends_by=NOW + 40), Running("y", 0, memory_bytes=60 * GiB, ends_by=NOW + 90)]
    queue = [job("a", cpus=2, created_at=1), job("b", memory_bytes=8 * GiB, created_at=2)]
    starts = eta(queue, {"a": 10, "b": 10}, running, worker(cpus=4, memory_bytes=64 * GiB))
    assert starts == {"a": NOW + 40, "b": NOW + 90}


def test_an_unknown_limit_ahead_makes_the_estimate_unknown():
    running = [Running("x", 1, ends_by=None)]
    queue = [job("a", gpus=1, created_at=1), job("b", created_at=2)]
    # b needs no GPU: it starts now anyway; a waits for a job whose end nobody knows.
    assert eta(queue, {"a": 60, "b": 60}, running, worker(free_gpus=0, gpus=1)) == {"a": None, "b": NOW}
    # A queued job without a limit: what waits for it is unknown too.
    queue = [job("c", gpus=1, created_at=1), job("d", gpus=1, created_at=2)]
    assert eta(queue, {"c": 0}, [], worker(free_gpus=1)) == {"c": NOW, "d": None}


def test_a_job_that_never_fits_gets_none_and_blocks_nothing():
    queue = [job("big", gpus=8, created_at=1), job("a", gpus=1, created_at=2)]
    running = [Running("x", 1, ends_by=NOW + 30)]
    assert eta(queue, {"big": 60, "a": 60}, running, worker(free_gpus=0, gpus=1)) == {"big": None, "a": NOW + 30}


def test_quarantined_gpus_do_not_come_back_when_their_job_ends():
    # 2 GPUs, one quarantined while a job runs on it: its end frees only the healthy one... which
    # is the one the other job holds.
    running = [Running("x", 1, ends_by=NOW + 10), Running("y", 1, ends_by=NOW + 70)]
    starts = eta([job("a", gpus=1)], {"a": 5}, running, worker(free_gpus=0, gpus=2, usable=1))
    assert starts == {"a": NOW + 70}


def test_a_deadline_already_past_counts_as_now():
    running = [Running("x", 1, ends_by=NOW - 5)]
    assert eta([job("a", gpus=1)], {"a": 5}, running, worker(free_gpus=0, gpus=1)) == {"a": NOW}


def test_an_array_limit_frees_with_its_own_jobs_here():
    running = [Running("x", 0, ends_by=NOW + 25, array_id="arr")]
    queue = [job("a", array_id="arr", array_limit=1)]
    assert eta(queue, {"a": 5}, running, worker(), array_running={"arr": 1}) == {"a": NOW + 25}
    # Its array's other job runs elsewhere: nothing here frees it.
    assert eta(queue, {"a": 5}, [], worker(), array_running={"arr": 1}) == {"a": None}


def test_the_order_follows_the_plan_priority_first():
    running = [Running("x", 1, ends_by=NOW + 10)]
    queue = [job("old", gpus=1, created_at=1), job("urgent", gpus=1, created_at=2, priority=5)]
    starts = eta(queue, {"old": 100, "urgent": 100}, running, worker(free_gpus=0, gpus=1))
    assert starts == {"urgent": NOW + 10, "old": NOW + 110}


def test_further_back_than_the_step_limit_is_unknown():
    queue = [job(f"j{i}", created_at=i) for i in range(5)]
    starts = eta(queue, {f"j{i}": 10 for i in range(5)}, [], worker(slots=1), max_steps=3)
    assert starts == {"j0": NOW, "j1": NOW + 10, "j2": NOW + 20, "j3": None, "j4": None}


def test_an_estimate_is_never_before_now_and_never_decreases_along_one_users_fifo():
    running = [Running("x", 2, ends_by=NOW + 7), Running("y", 1, ends_by=NOW + 3)]
    queue = [job(f"j{i}", gpus=1 + i % 3, created_at=i) for i in range(20)]
    starts = eta(queue, {f"j{i}": 5 + 13 * i % 17 for i in range(20)}, running, worker(free_gpus=1, gpus=4))
    assert all(t is not None and t >= NOW for t in starts.values())
    # One user, one priority: the plan keeps age order among jobs asking for the same GPUs.
    for gpus in (1, 2, 3):
        times = [starts[f"j{i}"] for i in range(20) if 1 + i % 3 == gpus]
        assert times == sorted(times)


def test_only_the_first_jobs_in_start_order_are_simulated():
    queue = [job(f"j{i}", created_at=-i) for i in range(5)]  # j4 is the oldest: it starts first
    starts = eta(queue, {f"j{i}": 10 for i in range(5)}, [], worker(slots=1), max_ahead=2)
    assert starts == {"j4": NOW, "j3": NOW + 10, "j2": None, "j1": None, "j0": None}
