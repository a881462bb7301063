"""Placement and queues with datasets and per-job resources: job_resources, impossible,
choose_worker / explain_no_worker with datasets, CPUs and memory, and plan's CPU and memory pools."""

from __future__ import annotations

import random

import pytest

from pink.scheduling import (
    Pool,
    QueuedJob,
    Resources,
    choose_worker,
    explain_no_worker,
    impossible,
    job_resources,
    plan,
)
from tests.unit.test_scheduling import _random_case, by_id, job, worker

GiB = 1 << 30


# ====================================================================== choose_worker


def test_only_a_worker_with_every_dataset_asked_for_is_eligible():
    idle = worker("a-idle")
    busy = worker("b-busy", datasets={"imagenet", "coco"}, queued_gpu_seconds=1e6, active_jobs=40)
    assert choose_worker([idle, busy], 1, datasets=("imagenet",)) is busy
    assert choose_worker([idle, busy], 1, datasets=("imagenet", "coco")) is busy
    assert choose_worker([idle, busy], 1, datasets=("imagenet", "mnist")) is None
    assert choose_worker([idle, busy], 1) is idle


def test_only_a_worker_whose_maxima_fit_is_eligible():
    small = worker("a-small", cpus=8, memory_bytes=32 * GiB, max_memory_bytes=16 * GiB)
    big = worker("b-big", cpus=64, memory_bytes=512 * GiB, active_jobs=60)
    assert choose_worker([small, big], 0, cpus=4, memory_bytes=8 * GiB) is small
    assert choose_worker([small, big], 0, cpus=16) is big
    assert choose_worker([small, big], 0, memory_bytes=20 * GiB) is big
    assert choose_worker([small, big], 0, cpus=65) is None


def test_random_placement_with_datasets_and_resources_agrees_with_its_explanations():
    rng = random.Random(77)
    names = ["imagenet", "coco", "mnist"]
    for _ in range(500):
        ws = [worker(f"w{i}", alive=rng.random() < 0.8, drained=rng.random() < 0.2,
                     gpus=rng.choice([0, 2, 8]), cpus=rng.choice([4, 16, 64]),
                     memory_bytes=rng.choice([16, 64, 256]) * GiB,
                     max_cpus=rng.choice([0, 2, 8]), max_memory_bytes=rng.choice([0, 8 * GiB]),
                     datasets=set(rng.sample(names, rng.randint(0, 2))))
              for i in range(rng.randint(0, 5))]
        asks = dict(datasets=tuple(rng.sample(names, rng.randint(0, 2))),
                    cpus=rng.choice([0, 1, 4, 32]), memory_bytes=rng.choice([0, 4 * GiB, 100 * GiB]))
        gpus = rng.choice([0, 1, 4])
        chosen = choose_worker(ws, gpus, **asks)
        reason = explain_no_worker(ws, gpus, **asks)
        assert (chosen is None) == bool(reason)
        if chosen is not None:
            assert chosen.alive and not chosen.drained and chosen.gpus >= gpus
            assert chosen.datasets.issuperset(asks["datasets"])
            resources = job_resources(chosen, gpus, asks["cpus"], asks["memory_bytes"])
            assert isinstance(resources, Resources)
            assert not impossible(ws, **asks)
        if impossible(ws, **asks):
            # Refused for good only when no registered worker, whatever its state, could run it.
            assert chosen is None
            assert not any(w.datasets.issuperset(asks["datasets"]) and isinstance(
                job_resources(w, 0, asks["cpus"], asks["memory_bytes"]), Resources) for w in ws)


# ====================================================================== job_resources


def test_a_cpu_job_that_asks_for_nothing_gets_the_workers_defaults():
    w = worker("a", cpus=16, memory_bytes=64 * GiB, default_cpus=2, default_memory_bytes=4 * GiB,
               default_shm_bytes=GiB)
    assert job_resources(w) == Resources(2, 4 * GiB, GiB)
    # No defaults: no limits (0), and docker's /dev/shm (0).
    assert job_resources(worker("b", cpus=16, memory_bytes=64 * GiB)) == Resources(0, 0, 0)


def test_a_gpu_job_that_asks_for_nothing_gets_its_share_of_the_host():
    w = worker("a", gpus=8, cpus=64, memory_bytes=512 * GiB, default_cpus=2, default_memory_bytes=4 * GiB)
    # /dev/shm: half of the job's memory, room for a PyTorch DataLoader's workers.
    assert job_resources(w, gpus=1) == Resources(8, 64 * GiB, 32 * GiB)
    assert job_resources(w, gpus=3) == Resources(24, 192 * GiB, 96 * GiB)
    # Shares are rounded down (CPUs to a thousandth) so they never add up to more than the host.
    odd = worker("b", gpus=3, cpus=2, memory_bytes=10)
    assert job_resources(odd, gpus=1) == Resources(0.666, 3, 1)
    # ... and capped by the maximum per job.
    capped = worker("c", gpus=2, cpus=64, memory_bytes=512 * GiB, max_cpus=16, max_memory_bytes=100 * GiB)
    assert job_resources(capped, gpus=1) == Resources(16, 100 * GiB, 50 * GiB)


def test_what_a_job_asks_for_it_gets_up_to_the_maximum():
    w = worker("a", gpus=2, cpus=64, memory_bytes=512 * GiB, max_cpus=32, max_memory_bytes=128 * GiB,
               default_shm_bytes=GiB)
    assert job_resources(w, 1, cpus=1.5, memory_bytes=2 * GiB, shm_bytes=8 * GiB) == Resources(1.5, 2 * GiB, 8 * GiB)
    assert job_resources(w, 0, cpus=32, memory_bytes=128 * GiB) == Resources(32, 128 * GiB, GiB)
    assert job_resources(w, 0, cpus=33) == "33 CPUs is more than worker a gives a job (at most 32)"
    assert job_resources(w, 0, memory_bytes=129 * GiB) == \
        "129 GiB of memory is more than worker a gives a job (at most 128 GiB)"


def test_records_of_older_workers_have_the_host_as_their_maximum():
    w = worker("old", cpus=8, memory_bytes=32 * GiB)  # max_cpus, max_memory_bytes = 0
    assert job_resources(w, 0, cpus=8, memory_bytes=32 * GiB) == Resources(8, 32 * GiB, 16 * GiB)
    assert isinstance(job_resources(w, 0, cpus=9), str)
    assert isinstance(job_resources(w, 0, memory_bytes=33 * GiB), str)
    # Host memory unknown: nothing to check against.
    assert job_resources(worker("x", memory_bytes=0), 0, memory_bytes=GiB) == Resources(0, GiB, GiB // 2)


# ====================================================================== impossible


def test_an_unknown_dataset_is_impossible_and_named():
    ws = [worker("a", datasets={"coco"}), worker("b", alive=False, datasets={"imagenet"})]
    assert impossible(ws, datasets=("mnist",)) == "no worker has dataset mnist (datasets: coco, imagenet)"
    assert impossible(ws, datasets=("mnist", "places")) == \
        "no worker has datasets mnist, places (datasets: coco, imagenet)"
    assert impossible([worker("a")], datasets=("x",)) == "no worker has dataset x (datasets: none)"
    # Each exists, but no worker has both.
    assert impossible(ws, datasets=("coco", "imagenet")) == \
        "no worker has all of the datasets coco, imagenet (datasets: coco, imagenet)"


def test_a_dataset_only_on_drained_or_down_workers_is_not_impossible_but_unavailable():
    ws = [worker("a"), worker("b", drained=True, datasets={"imagenet"}),
          worker("c", alive=False, datasets={"imagenet"})]
    assert impossible(ws, datasets=("imagenet",)) == ""
    assert choose_worker(ws, 0, datasets=("imagenet",)) is None
    assert explain_no_worker(ws, 0, datasets=("imagenet",)) == \
        "no worker in service has dataset imagenet; b, c would fit but are drained or down"
    assert explain_no_worker(ws, 2, datasets=("imagenet",)).startswith(
        "no worker in service with 2 GPUs has dataset imagenet")


def test_a_request_over_every_maximum_is_impossible():
    ws = [worker("a", cpus=16, memory_bytes=64 * GiB, max_cpus=8),
          worker("b", cpus=64, memory_bytes=256 * GiB, max_memory_bytes=128 * GiB, alive=False)]
    assert impossible(ws, cpus=64) == ""  # b, down now, would take it
    assert impossible(ws, cpus=65) == "no worker gives a job 65 CPUs (at most 64)"
    assert impossible(ws, memory_bytes=200 * GiB) == "no worker gives a job 200 GiB of memory (at most 128 GiB)"
    # One gives CPUs, the other memory: neither both.
    split = [worker("a", cpus=64, memory_bytes=256 * GiB, max_cpus=8), worker("b", cpus=64, memory_bytes=16 * GiB)]
    assert impossible(split, cpus=16, memory_bytes=32 * GiB) == \
        "no worker gives a job both the CPUs and the memory it asks for"
    # The maxima of workers without the dataset do not count.
    assert impossible(ws + [worker("c", cpus=512)], cpus=100, datasets=()) == ""
    assert impossible([worker("a", cpus=16, datasets={"x"}), worker("c", cpus=512)], cpus=100,
                      datasets=("x",)) == "no worker gives a job 100 CPUs (at most 16)"
    assert impossible([], cpus=1000) == ""  # explain_no_worker: no worker is registered


def test_explain_resources_of_workers_in_service():
    ws = [worker("a", cpus=8), worker("b", cpus=64, drained=True)]
    assert explain_no_worker(ws, 0, cpus=32) == "no worker in service gives a job 32 CPUs; b would fit but is drained or down"
    assert explain_no_worker(ws, 0, cpus=8) == ""


# ====================================================================== plan: CPUs and memory


def test_a_job_waits_for_cpus_and_memory_with_a_reason():
    queue = [job("a", cpus=4, memory_bytes=8 * GiB, created_at=0),
             job("b", cpus=8, created_at=1),
             job("c", memory_bytes=16 * GiB, created_at=2)]
    d = by_id(plan(queue, {}, [], 8, cpus=Pool(7, 16), memory=Pool(20 * GiB, 64 * GiB)))
    assert d["a"].starts
    assert d["b"].reason == "waiting for 8 CPUs (3 free)"
    assert d["c"].reason == "waiting for 16 GiB of memory (12 GiB free)"


def test_jobs_without_limits_take_no_cpus_or_memory():
    queue = [job(f"j{i}", created_at=i) for i in range(5)]
    decisions = plan(queue, {}, [], 5, cpus=Pool(0, 4), memory=Pool(0, GiB))
    assert all(d.starts for d in decisions)


def test_fractions_of_cpus_add_up_exactly():
    queue = [job(f"j{i}", cpus=0.1, created_at=i) for i in range(11)]
    d = by_id(plan(queue, {}, [], 20, cpus=Pool(1.0, 1)))
    assert sum(x.starts for x in d.values()) == 10
    assert d["j10"].reason == "waiting for 0.1 CPUs (0 free)"


def test_a_big_cpu_job_reserves_cpus_against_later_cpu_jobs_only():
    queue = [job("big", "alice", cpus=16, created_at=0),
             job("small", "bob", cpus=1, created_at=1),
             job("hungry", "bob", memory_bytes=GiB, created_at=2),
             job("free", "carol", created_at=3)]
    d = by_id(plan(queue, {}, [], 8, cpus=Pool(4, 16), memory=Pool(4 * GiB, 8 * GiB)))
    assert d["big"].reason == "waiting for 16 CPUs (4 free)"
    assert d["small"].reason == "behind job big which waits for CPUs"
    assert d["hungry"].starts and d["free"].starts


def test_a_gpu_job_waiting_for_memory_holds_back_later_jobs_that_need_memory():
    queue = [job("gpu", gpus=1, cpus=2, memory_bytes=32 * GiB, created_at=0),
             job("mem", memory_bytes=GiB, created_at=1),
             job("gpu2", gpus=1, created_at=2)]
    d = by_id(plan(queue, {}, [0, 1], 8, cpus=Pool(8, 8), memory=Pool(16 * GiB, 64 * GiB)))
    assert d["gpu"].reason == "waiting for 32 GiB of memory (16 GiB free)"
    assert d["mem"].reason == "behind job gpu which waits for memory"
    assert d["gpu2"].gpu_indices == (0,)  # it waits for memory, not for GPUs


def test_a_job_larger_than_the_host_says_so_and_blocks_nobody():
    queue = [job("huge", cpus=32, memory_bytes=128 * GiB, created_at=0), job("small", cpus=1, created_at=1)]
    d = by_id(plan(queue, {}, [], 4, cpus=Pool(16, 16), memory=Pool(64 * GiB, 64 * GiB)))
    assert d["huge"].reason == "needs 32 CPUs but this worker has only 16 and 128 GiB of memory but this " \
                               "worker has only 64 GiB"
    assert d["small"].starts


def test_negative_resources_are_refused():
    with pytest.raises(ValueError, match="-1 CPUs"):
        plan([job("a", cpus=-1)], {}, [], 1)


# ====================================================================== plan: random checks


def _with_resources(rng: random.Random, queue: list[QueuedJob]) -> list[QueuedJob]:
    return [QueuedJob(j.job_id, j.user, j.priority, j.created_at, j.gpus,
                      rng.choice([0, 0, 0.5, 1, 2, 8, 20]), rng.choice([0, 0, 1, 4, 16, 40]) * GiB)
            for j in queue]


def test_random_plans_never_overcommit_cpus_or_memory_and_reserve_per_resource():
    rng = random.Random(4242)
    for _ in range(2000):
        queue, running, free, slots = _random_case(rng)
        queue = _with_resources(rng, queue)
        cpus = Pool(rng.choice([-1, 0, 2, 7.5, 16]), 16)
        memory = Pool(rng.choice([0, 3, 20, 32]) * GiB, 32 * GiB)
        decisions = plan(queue, running, free, slots, cpus=cpus, memory=memory)
        jobs = {j.job_id: j for j in queue}
        started = [jobs[d.job_id] for d in decisions if d.starts]
        assert sum(j.cpus for j in started) <= max(cpus.free, 0) + 1e-9
        assert sum(j.memory_bytes for j in started) <= max(memory.free, 0)
        # Replay the walk: a job waits only for what it truly lacks at its turn, or behind the
        # first job that waited for something it asks for too.
        free_cpus, free_memory, free_gpus, slots_left = cpus.free, memory.free, len(set(free)), max(slots, 0)
        blockers: dict[str, str] = {}
        for d in decisions:
            j = jobs[d.job_id]
            asks = {"GPUs": j.gpus > 0, "CPUs": j.cpus > 0, "memory": j.memory_bytes > 0}
            if d.starts:
                assert not any(asks[what] for what in blockers)
                free_cpus -= j.cpus
                free_memory -= j.memory_bytes
                free_gpus -= j.gpus
                slots_left -= 1
            elif d.reason.startswith("needs"):
                assert j.cpus > cpus.total or j.memory_bytes > memory.total
            elif d.reason.startswith("behind job"):
                what = next(w for w in blockers if asks[w])
                assert d.reason == f"behind job {blockers[what]} which waits for {what}"
            else:
                lacks = {"GPUs": j.gpus > free_gpus, "CPUs": 0 < j.cpus and j.cpus > free_cpus + 1e-9,
                         "memory": 0 < j.memory_bytes and j.memory_bytes > free_memory}
                assert any(lacks.values()) or slots_left == 0
                for what, short in lacks.items():
                    if short:
                        blockers.setdefault(what, j.job_id)
