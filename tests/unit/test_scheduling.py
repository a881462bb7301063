"""Placement (choose_worker, explain_no_worker) and the per-worker queue (plan)."""

from __future__ import annotations

import random

import pytest

from pink.scheduling import (
    Decision,
    QueuedJob,
    WorkerView,
    choose_worker,
    explain_no_worker,
    plan,
)

IMG = "sha256:" + "ab" * 32
OTHER_IMG = "sha256:" + "cd" * 32


def worker(name: str, *, alive: bool = True, drained: bool = False, gpus: int = 8,
           cpus: int = 64, images: frozenset[str] = frozenset(), queued_gpu_seconds: float = 0.0,
           active_jobs: int = 0, **limits) -> WorkerView:
    if "datasets" in limits:
        limits["datasets"] = frozenset(limits["datasets"])
    return WorkerView(name, alive, drained, gpus, cpus, images, queued_gpu_seconds, active_jobs, **limits)


def job(job_id: str, user: str = "alice", *, priority: int = 0, created_at: float = 0.0,
        gpus: int = 0, cpus: float = 0.0, memory_bytes: int = 0) -> QueuedJob:
    return QueuedJob(job_id, user, priority, created_at, gpus, cpus, memory_bytes)


def by_id(decisions: list[Decision]) -> dict[str, Decision]:
    return {d.job_id: d for d in decisions}


# ====================================================================== choose_worker


def test_no_workers_means_none():
    assert choose_worker([], gpus=0) is None


def test_dead_and_drained_workers_are_skipped():
    # The dead and the drained ones hold the image and are idle, and still lose.
    dead = worker("a-dead", alive=False, images=frozenset({IMG}))
    drained = worker("b-drained", drained=True, images=frozenset({IMG}))
    busy = worker("c-busy", queued_gpu_seconds=1e6, active_jobs=50)
    assert choose_worker([dead, drained, busy], gpus=1, image_id=IMG) is busy
    assert choose_worker([dead, drained], gpus=0) is None


def test_worker_without_enough_gpus_is_skipped():
    small = worker("a-small", gpus=2)
    big = worker("b-big", gpus=8, queued_gpu_seconds=1e6)
    assert choose_worker([small, big], gpus=4) is big
    assert choose_worker([small, big], gpus=9) is None


def test_cpu_jobs_may_go_to_gpu_less_workers():
    cpu_box = worker("cpu", gpus=0)
    assert choose_worker([cpu_box], gpus=0) is cpu_box
    assert choose_worker([cpu_box], gpus=1) is None


def test_image_preference_beats_load():
    idle = worker("a-idle")
    loaded_with_image = worker("b-loaded", images=frozenset({IMG, OTHER_IMG}),
                               queued_gpu_seconds=500_000, active_jobs=30)
    assert choose_worker([idle, loaded_with_image], gpus=1, image_id=IMG) is loaded_with_image
    assert choose_worker([idle, loaded_with_image], gpus=0, image_id=IMG) is loaded_with_image
    # No image asked for, or nobody holds it: load decides.
    assert choose_worker([idle, loaded_with_image], gpus=1) is idle
    assert choose_worker([idle, loaded_with_image], gpus=1, image_id="sha256:" + "ee" * 32) is idle


def test_gpu_load_is_gpu_seconds_per_gpu():
    # 8 GPUs with 4000 s queued (500 s/GPU) is less loaded than 1 GPU with 600 s.
    eight = worker("a", gpus=8, queued_gpu_seconds=4000, active_jobs=10)
    one = worker("b", gpus=1, queued_gpu_seconds=600, active_jobs=1)
    assert choose_worker([one, eight], gpus=1) is eight


def test_cpu_load_is_active_jobs_per_cpu():
    # For CPU jobs GPU-seconds do not matter; jobs per core does.
    many_cores = worker("a", cpus=64, active_jobs=16, queued_gpu_seconds=1e6)  # 0.25/core
    few_cores = worker("b", cpus=8, active_jobs=4, queued_gpu_seconds=0)  # 0.5/core
    assert choose_worker([few_cores, many_cores], gpus=0) is many_cores
    zero_cpus = worker("c", cpus=0, active_jobs=0)  # counted as 1 core, no division by zero
    assert choose_worker([many_cores, zero_cpus], gpus=0) is zero_cpus


def test_ties_break_by_name_whatever_the_input_order():
    ws = [worker(n, queued_gpu_seconds=100) for n in ("gpu-c", "gpu-a", "gpu-b")]
    rng = random.Random(7)
    for _ in range(20):
        rng.shuffle(ws)
        assert choose_worker(ws, gpus=2).name == "gpu-a"


def test_negative_gpus_is_refused():
    with pytest.raises(ValueError):
        choose_worker([worker("a")], gpus=-1)
    with pytest.raises(ValueError):
        explain_no_worker([worker("a")], gpus=-1)


def _random_worker(rng: random.Random, i: int) -> WorkerView:
    return worker(
        f"w{i:02d}",
        alive=rng.random() < 0.8,
        drained=rng.random() < 0.2,
        gpus=rng.choice([0, 1, 2, 4, 8]),
        cpus=rng.choice([0, 4, 16, 64]),
        images=frozenset(rng.sample([IMG, OTHER_IMG, "sha256:" + "01" * 32], rng.randint(0, 2))),
        queued_gpu_seconds=rng.choice([0.0, 100.0, 3600.0, 86400.0]),
        active_jobs=rng.randint(0, 10),
    )


def test_random_placement_is_eligible_optimal_and_deterministic():
    rng = random.Random(1234)
    for _ in range(500):
        ws = [_random_worker(rng, i) for i in range(rng.randint(0, 8))]
        gpus = rng.choice([0, 1, 2, 4, 8, 16])
        image = rng.choice([None, IMG, OTHER_IMG])
        chosen = choose_worker(ws, gpus, image)
        eligible = [w for w in ws if w.alive and not w.drained and w.gpus >= gpus]
        # choose_worker and explain_no_worker agree on whether a worker exists.
        assert (chosen is None) == (not eligible) == bool(explain_no_worker(ws, gpus))
        if chosen is None:
            continue
        assert chosen in eligible
        if image is not None and any(image in w.images for w in eligible):
            assert image in chosen.images

        def load(w: WorkerView) -> float:
            return w.queued_gpu_seconds / w.gpus if gpus else w.active_jobs / max(w.cpus, 1)

        peers = [w for w in eligible
                 if (image in w.images) == (image in chosen.images)] if image else eligible
        assert load(chosen) == min(load(w) for w in peers)
        shuffled = ws[:]
        rng.shuffle(shuffled)
        assert choose_worker(shuffled, gpus, image) == chosen


# ====================================================================== explain_no_worker


def test_explain_no_worker_registered():
    assert explain_no_worker([], 0) == "no worker is registered"


def test_explain_no_worker_alive():
    ws = [worker("a", alive=False), worker("b", alive=False), worker("c", alive=False)]
    assert explain_no_worker(ws, 0).startswith("no worker is alive")
    assert explain_no_worker(ws, 0) == "no worker is alive (3 registered)"


def test_explain_all_drained():
    ws = [worker(n, drained=True) for n in "abc"]
    assert explain_no_worker(ws, 1) == "all 3 workers are drained"
    assert explain_no_worker(ws[:1], 1) == "the only worker is drained"


def test_explain_alive_ones_drained_rest_down():
    ws = [worker("a", drained=True), worker("b", alive=False)]
    assert explain_no_worker(ws, 0) == "every alive worker is drained (1 drained, 1 down)"


def test_explain_not_enough_gpus():
    ws = [worker("a", gpus=2), worker("b", gpus=1), worker("c", gpus=0)]
    assert explain_no_worker(ws, 4) == "no worker has 4 GPUs (largest: 2)"
    assert explain_no_worker([worker("c", gpus=0)], 1) == "no worker has 1 GPU (largest: 0)"


def test_explain_names_a_big_worker_that_is_out_of_service():
    ws = [worker("small", gpus=2), worker("big", gpus=8, drained=True),
          worker("bigger", gpus=16, alive=False)]
    msg = explain_no_worker(ws, 4)
    assert msg.startswith("no worker has 4 GPUs (largest: 2)")
    assert "big, bigger would fit but are drained or down" in msg


def test_explain_is_empty_when_a_worker_fits():
    assert explain_no_worker([worker("a", gpus=4)], 4) == ""


# ====================================================================== plan: order


def order(decisions: list[Decision]) -> list[str]:
    assert [d.position for d in decisions] == list(range(1, len(decisions) + 1))
    return [d.job_id for d in decisions]


def test_empty_queue():
    assert plan([], {}, [0, 1], 4) == []


def test_priority_first_then_age_then_id():
    queue = [
        job("j-low-old", priority=0, created_at=1),
        job("j-high-new", priority=5, created_at=9),
        job("j-mid", priority=1, created_at=5),
        job("j-low-b", priority=0, created_at=3),
        job("j-low-a", priority=0, created_at=3),
    ]
    assert order(plan(queue, {}, [], 0)) == ["j-high-new", "j-mid", "j-low-old", "j-low-a", "j-low-b"]


def test_negative_priority_goes_last():
    queue = [job("a", priority=-1, created_at=0), job("b", created_at=5)]
    assert order(plan(queue, {}, [], 0)) == ["b", "a"]


def test_fair_share_interleaves_two_users():
    # alice queued everything first; bob still gets every other start.
    queue = [job(f"a{i}", "alice", created_at=i) for i in range(4)]
    queue += [job(f"b{i}", "bob", created_at=10 + i) for i in range(4)]
    decisions = plan(queue, {}, [], free_slots=8)
    assert order(decisions) == ["a0", "b0", "a1", "b1", "a2", "b2", "a3", "b3"]
    assert all(d.gpu_indices == () and d.reason == "" for d in decisions)


def test_fair_share_counts_jobs_already_running():
    queue = [job("a0", "alice", created_at=0), job("a1", "alice", created_at=1),
             job("b0", "bob", created_at=5), job("b1", "bob", created_at=6)]
    # alice already runs 2: bob catches up first.
    decisions = plan(queue, {"alice": 2, "carol": 9}, [], free_slots=4)
    assert order(decisions) == ["b0", "b1", "a0", "a1"]


def test_fair_share_counts_only_jobs_that_start():
    # With no slot free nobody starts, so the counts never move and age decides among equals.
    queue = [job("a0", "alice", created_at=0), job("a1", "alice", created_at=1),
             job("b0", "bob", created_at=5)]
    assert order(plan(queue, {}, [], free_slots=0)) == ["a0", "a1", "b0"]
    # With one slot, a0 starts and bob moves ahead of a1.
    assert order(plan(queue, {}, [], free_slots=1)) == ["a0", "b0", "a1"]


def test_priority_beats_fair_share():
    queue = [job("a-urgent", "alice", priority=10, created_at=9), job("b", "bob", created_at=0)]
    assert order(plan(queue, {"alice": 50}, [], 2)) == ["a-urgent", "b"]


def test_plan_is_deterministic_under_input_order():
    rng = random.Random(99)
    queue = [job(f"j{i}", rng.choice("abc"), priority=rng.randint(0, 2),
                 created_at=rng.randint(0, 5), gpus=rng.randint(0, 3)) for i in range(40)]
    expected = plan(queue, {"a": 1}, [3, 1, 2, 0], 5)
    for _ in range(20):
        rng.shuffle(queue)
        assert plan(queue, {"a": 1}, [0, 2, 1, 3], 5) == expected


# ====================================================================== plan: starting


def test_gpus_are_the_lowest_free_indices_and_exclusive():
    queue = [job("a", gpus=2, created_at=0), job("b", gpus=1, created_at=1),
             job("c", gpus=0, created_at=2), job("d", gpus=1, created_at=3)]
    d = by_id(plan(queue, {}, free_gpus={7, 3, 5, 1}, free_slots=10))
    assert d["a"].gpu_indices == (1, 3)
    assert d["b"].gpu_indices == (5,)
    assert d["c"].gpu_indices == ()  # CPU jobs start with no GPU, not None
    assert d["d"].gpu_indices == (7,)
    assert all(x.starts and x.reason == "" for x in d.values())


def test_duplicate_free_indices_are_not_given_twice():
    queue = [job("a", gpus=1, created_at=0), job("b", gpus=1, created_at=1)]
    d = by_id(plan(queue, {}, free_gpus=[0, 0], free_slots=2))
    assert d["a"].gpu_indices == (0,)
    assert d["b"].gpu_indices is None
    assert d["b"].reason == "waiting for 1 GPU (0 free)"


def test_waiting_for_gpus_reason():
    queue = [job("big", gpus=2)]
    [d] = plan(queue, {}, free_gpus=[4], free_slots=3)
    assert d == Decision("big", 1, None, "waiting for 2 GPUs (1 free)")
    assert not d.starts


def test_waiting_for_a_slot_reason_counts_running_and_just_started():
    queue = [job("a", created_at=0), job("b", created_at=1), job("c", created_at=2)]
    d = by_id(plan(queue, {"alice": 2, "bob": 1}, [], free_slots=1))
    assert d["a"].starts
    assert d["b"].reason == "waiting for a free job slot (4 running)"
    assert d["c"].reason == "waiting for a free job slot (4 running)"


def test_waiting_for_gpus_and_slot_says_both():
    [d] = plan([job("g", gpus=2)], {"alice": 4}, free_gpus=[], free_slots=0)
    assert d.reason == "waiting for 2 GPUs (0 free) and a free job slot (4 running)"


def test_negative_free_slots_means_none():
    [d] = plan([job("a")], {}, [], free_slots=-3)
    assert d.reason == "waiting for a free job slot (0 running)"


def test_big_gpu_job_reserves_gpus_against_later_gpu_jobs():
    # Without the reservation the 1-GPU jobs would keep taking the free GPU and the 4-GPU job
    # would never see 4 free at once.
    queue = [
        job("big", "alice", gpus=4, created_at=0),
        job("small1", "bob", gpus=1, created_at=1),
        job("small2", "carol", gpus=1, created_at=2),
        job("cpu", "dave", gpus=0, created_at=3),
    ]
    d = by_id(plan(queue, {}, free_gpus=[0, 1], free_slots=8))
    assert d["big"].reason == "waiting for 4 GPUs (2 free)"
    assert d["small1"] == Decision("small1", 2, None, "behind job big which waits for GPUs")
    assert d["small2"].reason == "behind job big which waits for GPUs"
    # CPU-only jobs take no GPU from it, so they may pass.
    assert d["cpu"].gpu_indices == () and d["cpu"].reason == ""


def test_gpu_jobs_ahead_of_the_blocked_one_still_start():
    queue = [job("first", gpus=1, created_at=0), job("big", gpus=4, created_at=1),
             job("late", gpus=1, created_at=2)]
    d = by_id(plan(queue, {}, free_gpus=[0, 1, 2], free_slots=8))
    assert d["first"].gpu_indices == (0,)
    assert d["big"].reason == "waiting for 4 GPUs (2 free)"
    assert d["late"].reason == "behind job big which waits for GPUs"


def test_job_larger_than_the_worker_does_not_block_others():
    queue = [job("huge", gpus=16, created_at=0), job("small", gpus=1, created_at=1)]
    d = by_id(plan(queue, {}, free_gpus=range(8), free_slots=4, total_gpus=8))
    assert d["huge"].reason == "needs 16 GPUs but this worker has only 8"
    assert d["small"].gpu_indices == (0,)
    # Without total_gpus plan cannot tell, and the reservation rule applies.
    d = by_id(plan(queue, {}, free_gpus=range(8), free_slots=4))
    assert d["small"].reason == "behind job huge which waits for GPUs"


def test_bad_queue_is_refused():
    with pytest.raises(ValueError, match="twice"):
        plan([job("a"), job("a", "bob")], {}, [], 1)
    with pytest.raises(ValueError, match="-1 GPUs"):
        plan([job("a", gpus=-1)], {}, [], 1)


# ====================================================================== plan: random checks


def reference_order(queue, running, started_ids):
    """Naive O(n^2) statement of the order rule, to check the heap-based one against."""
    counts = dict(running)
    left = list(queue)
    out = []
    while left:
        nxt = min(left, key=lambda j: (-j.priority, counts.get(j.user, 0), j.created_at, j.job_id))
        left.remove(nxt)
        out.append(nxt.job_id)
        if nxt.job_id in started_ids:
            counts[nxt.user] = counts.get(nxt.user, 0) + 1
    return out


def _random_case(rng: random.Random):
    users = [f"u{i}" for i in range(rng.randint(1, 4))]
    queue = [
        QueuedJob(
            job_id=f"job-{i:03d}",
            user=rng.choice(users),
            priority=rng.choice([0, 0, 0, 1, 5]),
            created_at=float(rng.randint(0, 20)),
            gpus=rng.choice([0, 0, 1, 1, 2, 4, 8]),
        )
        for i in range(rng.randint(0, 30))
    ]
    running = {u: rng.randint(0, 3) for u in users if rng.random() < 0.5}
    total = rng.choice([0, 1, 2, 4, 8])
    free = rng.sample(range(total), rng.randint(0, total))
    slots = rng.randint(-1, 10)
    return queue, running, free, slots


def test_random_plans_never_double_book_and_keep_every_rule():
    rng = random.Random(20240607)
    for _ in range(2000):
        queue, running, free, slots = _random_case(rng)
        decisions = plan(queue, running, free, slots)
        jobs = {j.job_id: j for j in queue}

        # Every job exactly once, positions 1..n.
        assert sorted(d.job_id for d in decisions) == sorted(jobs)
        assert [d.position for d in decisions] == list(range(1, len(queue) + 1))

        started = [d for d in decisions if d.gpu_indices is not None]
        # Starts only with a reason of "", waits only with a reason.
        assert all((d.reason == "") == (d.gpu_indices is not None) for d in decisions)
        # No more starts than slots.
        assert len(started) <= max(slots, 0)
        # No double booking; only free indices; exactly as many as asked.
        given = [i for d in started for i in d.gpu_indices]
        assert len(given) == len(set(given))
        assert set(given) <= set(free)
        assert all(len(d.gpu_indices) == jobs[d.job_id].gpus for d in started)

        # Priority never increases along the order.
        prios = [jobs[d.job_id].priority for d in decisions]
        assert prios == sorted(prios, reverse=True)
        # The order is the fair-share rule, stated naively.
        assert [d.job_id for d in decisions] == reference_order(
            queue, running, {d.job_id for d in started})

        # Reservation: after the first GPU job left waiting for GPUs, no GPU job starts.
        blocked = next((d.position for d in decisions
                        if d.gpu_indices is None and jobs[d.job_id].gpus > 0), None)
        if blocked is not None:
            assert all(jobs[d.job_id].gpus == 0 for d in started if d.position > blocked)

        # Work conserving: replaying the walk, a job waits only when it truly lacks GPUs or
        # a slot at its turn, or sits behind a GPU job that was waiting before it.
        free_left, slots_left, blocker = len(set(free)), max(slots, 0), None
        for d in decisions:
            j = jobs[d.job_id]
            if d.gpu_indices is not None:
                free_left -= j.gpus
                slots_left -= 1
            elif d.reason.startswith("behind job"):
                assert j.gpus > 0 and blocker is not None
                assert d.reason == f"behind job {blocker} which waits for GPUs"
            else:
                assert d.reason.startswith("waiting for")
                assert j.gpus > free_left or slots_left == 0
                if j.gpus > free_left and j.gpus > 0 and blocker is None:
                    blocker = j.job_id

        # Deterministic whatever the input order.
        shuffled = queue[:]
        rng.shuffle(shuffled)
        assert plan(shuffled, running, list(reversed(free)), slots) == decisions


def test_a_plan_until_full_starts_the_same_jobs_and_stops_at_the_last_free_slot():
    """What a worker daemon's cycle plans (until_full): the same starts, with the same GPUs, as
    the whole plan, and decisions for no job past the point where the slots ran out."""
    rng = random.Random(20261203)
    for _ in range(2000):
        queue, running, free, slots = _random_case(rng)
        usage = {u: rng.choice([0.0, 10.0, 100.0]) for u in {j.user for j in queue}}
        whole = plan(queue, running, free, slots, usage=usage)
        short = plan(queue, running, free, slots, usage=usage, until_full=True)
        assert short == whole[:len(short)], "the same decisions, as far as it goes"
        assert [d for d in whole if d.starts] == [d for d in short if d.starts]
        if len(short) < len(whole):
            assert sum(d.starts for d in short) == max(slots, 0), "it stopped only once the slots ran out"
