"""Fair share by decayed usage, per-user GPU quotas and the order of a user's own jobs in
:func:`pink.scheduling.plan`; the decay and the cache of :mod:`pink.fairshare`."""

from __future__ import annotations

import calendar
import time

import pytest

from pink.config import ConfigError, SchedulingConfig, load
from pink.fairshare import REFRESH_S, FairShare, decayed_usage
from pink.scheduling import QueuedJob, UserQuota, plan
from pink.store_usage import Usage

HOUR = 3600.0


def job(job_id: str, user: str, created_at: float = 0.0, gpus: int = 1, **more) -> QueuedJob:
    return QueuedJob(job_id, user, more.pop("priority", 0), created_at, gpus, **more)


def order(decisions) -> list[str]:
    return [d.job_id for d in sorted(decisions, key=lambda d: d.position)]


# ----- fair share ---------------------------------------------------------------------------------

def test_a_user_with_less_recent_usage_goes_first_even_when_newer():
    queue = [job("heavy-1", "heavy", 1.0), job("heavy-2", "heavy", 2.0), job("light-1", "light", 9.0)]
    decisions = plan(queue, {}, [0], 4, usage={"heavy": 100 * HOUR, "light": 1 * HOUR})
    assert order(decisions) == ["light-1", "heavy-1", "heavy-2"]
    by_id = {d.job_id: d for d in decisions}
    assert by_id["light-1"].starts
    # heavy-1 waits for the GPU light-1 took: the reason says fair share put light first.
    assert by_id["heavy-1"].reason == ("waiting for 1 GPU (0 free); fair share put light's jobs first "
                                       "(recent GPU-hours, decayed: light 1.0, yours 100.0)")


def test_equal_usage_falls_back_to_fewer_running_jobs_then_age():
    queue = [job("a1", "a", 1.0), job("b1", "b", 2.0)]
    assert order(plan(queue, {"a": 2}, [0, 1], 4, usage={})) == ["b1", "a1"]
    assert order(plan(queue, {}, [0, 1], 4, usage={"a": 5.0, "b": 5.0})) == ["a1", "b1"]
    # Without usage (fair share off) no reason talks about it.
    waiting = [d for d in plan(queue, {"a": 2}, [], 4) if not d.starts]
    assert all("fair share" not in d.reason for d in waiting)


def test_priority_still_comes_before_fair_share():
    queue = [job("heavy-urgent", "heavy", 5.0, priority=10), job("light", "light", 1.0)]
    assert order(plan(queue, {}, [0], 4, usage={"heavy": 1e9})) == ["heavy-urgent", "light"]


def test_the_reason_names_fair_share_only_when_a_newer_job_of_another_user_went_ahead():
    queue = [job("old-light", "light", 1.0), job("new-heavy", "heavy", 5.0)]
    decisions = {d.job_id: d for d in plan(queue, {}, [0], 4, usage={"heavy": 10 * HOUR})}
    assert decisions["new-heavy"].reason == "waiting for 1 GPU (0 free)"  # it is younger anyway


# ----- the order of a user's own jobs -----------------------------------------------------------------

def test_user_priority_orders_only_the_users_own_jobs():
    queue = [job("a-old", "a", 1.0), job("a-new", "a", 3.0, user_priority=50), job("b", "b", 2.0)]
    # a's own order flips; b (less usage) still goes first: a's user_priority passes nobody else.
    assert order(plan(queue, {}, [], 4, usage={"a": 10.0, "b": 1.0})) == ["b", "a-new", "a-old"]
    # And the global priority still comes before it within one user.
    queue.append(job("a-low", "a", 0.5, priority=-5, user_priority=100))
    assert order(plan(queue, {}, [], 4, usage={"a": 10.0, "b": 1.0}))[-1] == "a-low"


# ----- quotas ---------------------------------------------------------------------------------------------

def test_a_gpu_quota_counts_the_jobs_this_plan_starts_and_blocks_nobody_else():
    queue = [job("a1", "a", 1.0, gpus=2), job("a2", "a", 2.0, gpus=2), job("b1", "b", 3.0, gpus=2)]
    quotas = {"a": UserQuota(limit=5, gpus=2, jobs=1)}
    decisions = {d.job_id: d for d in plan(queue, {}, range(8), 4, quotas=quotas)}
    assert decisions["a1"].starts and decisions["b1"].starts
    assert decisions["a2"].reason == "your GPU quota (5) is in use: 4 GPUs held by 2 running jobs"
    # It took nothing: b1 got the GPUs right after a1's.
    assert decisions["b1"].gpu_indices == (2, 3)
    assert quotas["a"] == UserQuota(5, 2, 1), "plan must not change the caller's mapping"


def test_a_job_bigger_than_its_users_quota_says_so_and_cpu_jobs_are_not_capped():
    queue = [job("big", "a", 1.0, gpus=4), job("cpu", "a", 2.0, gpus=0)]
    decisions = {d.job_id: d for d in plan(queue, {}, range(8), 4, quotas={"a": UserQuota(2)})}
    assert decisions["big"].reason == "needs 4 GPUs but your GPU quota is 2; ask an admin to raise it"
    assert decisions["cpu"].starts


def test_one_running_job_is_said_in_the_singular():
    decisions = plan([job("a2", "a", gpus=1)], {}, [0], 4, quotas={"a": UserQuota(1, 1, 1)})
    assert decisions[0].reason == "your GPU quota (1) is in use: 1 GPU held by 1 running job"


# ----- decay and the cache ------------------------------------------------------------------------------

def _noon(day: str) -> float:
    return calendar.timegm(time.strptime(day, "%Y-%m-%d")) + 43200


def test_usage_halves_every_half_life_and_cpu_seconds_count_by_their_weight():
    rows = [Usage("2026-11-25", "a", gpu_seconds=8 * HOUR), Usage("2026-12-02", "a", gpu_seconds=HOUR),
            Usage("2026-12-02", "b", cpu_seconds=10 * HOUR)]
    got = decayed_usage(rows, _noon("2026-12-02"), 7 * 86400, 0.1)
    assert got["a"] == pytest.approx(4 * HOUR + HOUR)  # a week old: half
    assert got["b"] == pytest.approx(HOUR)
    # Today's rollup, read before the day's middle, counts fully (no growth from the future).
    assert decayed_usage(rows[1:2], _noon("2026-12-02") - 6 * HOUR, 86400, 0.1)["a"] == pytest.approx(HOUR)


class CountingStore:
    """What FairShare reads, counted: rollups, every GPU slot, quota overrides."""

    def __init__(self) -> None:
        self.reads = 0
        self.rows = [Usage("2026-12-02", "a", gpu_seconds=HOUR)]

    def usage(self, since, until, user=""):
        self.reads += 1
        return [r for r in self.rows if since <= r.day <= until]

    def _k(self, *parts):
        return "/".join(("/pink", *parts))

    def _get_prefix(self, prefix, keys_only=False):
        if prefix.startswith("/pink/gpuslots/"):
            return [(b"/pink/gpuslots/a/x.0".decode(), b'{"job": "x", "at": %f}' % (_noon("2026-12-02") - 600), 1)]
        return [("/pink/quotas/a", b'{"gpus": 3, "by": "root"}', 1)]


def test_the_cache_reads_at_most_once_a_minute_and_adds_running_gpus():
    store, now = CountingStore(), [_noon("2026-12-02")]
    fs = FairShare(store, SchedulingConfig(gpu_quota=8), clock=lambda: now[0])
    assert fs.usage()["a"] == pytest.approx(HOUR + 600)  # a rollup plus 10 minutes of 1 GPU
    assert fs.limit("a") == 3 and fs.limit("b") == 8
    now[0] += REFRESH_S - 1
    fs.usage(), fs.limit("a")
    assert store.reads == 1
    now[0] += 2
    fs.usage()
    assert store.reads == 2


def test_fair_share_off_gives_no_usage_and_the_config_is_checked(tmp_path):
    fs = FairShare(CountingStore(), SchedulingConfig(fair_share_half_life_days=0))
    assert fs.usage() == {}
    path = tmp_path / "pink.toml"
    path.write_text("[scheduling]\nfair_share_half_life_days = 3.5\ngpu_quota = 16\n")
    cfg = load(str(path), env={})
    assert (cfg.scheduling.fair_share_half_life_days, cfg.scheduling.gpu_quota) == (3.5, 16)
    with pytest.raises(ConfigError, match="0 or more"):
        load(str(path), env={"PINK_SCHEDULING_GPU_QUOTA": "-1"})
    path.write_text("[web]\nquota_running_jobs = 8\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load(str(path), env={})
