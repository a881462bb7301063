"""Fair share and per-user GPU quotas: what workers order their queues by and web servers show
(DESIGN §4, README "Scheduling").

A user's fair-share usage is their recent use of the cluster in GPU-seconds, decayed:

    usage = sum over days d of  (gpu_seconds_d + cpu_weight x cpu_seconds_d) x 0.5 ** (age_d / half_life)
            + sum over the GPUs their claimed jobs hold now of  (now - claimed at)

``*_seconds_d`` come from the daily rollups ``usage/<day>/<user>`` (pink.store_usage), a day
aged from its middle (UTC); running jobs count from their GPU run slots (pink.runslots), not
decayed. A running CPU-only job counts once it ended (its rollup). Among jobs of equal priority
users with less usage go first (:func:`pink.scheduling.plan`), like Slurm's multifactor
fair-share factor.

GPU quotas: ``scheduling.gpu_quota`` for everyone, or an admin's value for one user in
``quotas/<user>`` = {"gpus": N, "by", "at"} (0: no limit for that user).

Everything but the quota holders is read at most every :data:`REFRESH_S` seconds per process
(:class:`FairShare`), so the claim path reads nothing more per job.
"""

from __future__ import annotations

import calendar
import json
import time
from typing import TYPE_CHECKING, Callable, Iterable

from .config import SchedulingConfig
from .model import day_of
from .runslots import Taken, all_gpu_slots
from .store_usage import Usage

if TYPE_CHECKING:
    from .store import Store

DAY_S = 86400.0
#: Seconds between reads of the rollups, running GPU slots and quota overrides.
REFRESH_S = 60.0
#: Rollups older than this many half-lives (under 1%) are not read.
HALF_LIVES = 7


def decayed_usage(rows: Iterable[Usage], now: float, half_life_s: float, cpu_weight: float) -> dict[str, float]:
    """user -> their rollups' GPU-seconds (plus weighted CPU-seconds), decayed to ``now``."""
    out: dict[str, float] = {}
    for row in rows:
        middle = calendar.timegm(time.strptime(row.day, "%Y-%m-%d")) + DAY_S / 2
        weight = 0.5 ** (max(now - middle, 0.0) / half_life_s)
        out[row.user] = out.get(row.user, 0.0) + (row.gpu_seconds + cpu_weight * row.cpu_seconds) * weight
    return out


def _quota_key(store: "Store", user: str = "") -> str:
    return store._k("quotas", user)  # noqa: SLF001 - the store's key layout


def set_quota(store: "Store", user: str, gpus: int | None, by: str) -> None:
    """Set ``user``'s GPU quota (0: no limit), or with None go back to the default."""
    key = _quota_key(store, user)
    if gpus is None:
        store.etcd.call(lambda c: c.delete(key), "reset GPU quota")
        return
    if gpus < 0:
        raise ValueError(f"a GPU quota of {gpus}: give 0 (no limit) or more")
    value = json.dumps({"gpus": gpus, "by": by, "at": time.time()}).encode()
    store.etcd.call(lambda c: c.put(key, value), "set GPU quota")


def quota_overrides(store: "Store") -> dict[str, dict]:
    """user -> {"gpus", "by", "at"} of the quotas admins set."""
    prefix = _quota_key(store)
    return {k[len(prefix):]: json.loads(v) for k, v, _ in store._get_prefix(prefix)}  # noqa: SLF001


class FairShare:
    """One process's view of fair share and quotas, refreshed every :data:`REFRESH_S` s."""

    def __init__(self, store: "Store", cfg: SchedulingConfig, clock: Callable[[], float] = time.time) -> None:
        self.store, self.cfg, self.clock = store, cfg, clock
        self._read_at = float("-inf")
        self._history: dict[str, float] = {}
        self._slots: list[tuple[str, float]] = []
        self._overrides: dict[str, int] = {}

    def _refresh(self) -> None:
        now = self.clock()
        if now - self._read_at < REFRESH_S:
            return
        half_life = self.cfg.fair_share_half_life_days * DAY_S
        if half_life > 0:
            since = day_of(now - min(HALF_LIVES * half_life, 3650 * DAY_S))
            rows = self.store.usage(since, day_of(now))
            self._history = decayed_usage(rows, now, half_life, self.cfg.fair_share_cpu_weight)
            self._slots = all_gpu_slots(self.store)
        self._overrides = {u: int(q.get("gpus", 0)) for u, q in quota_overrides(self.store).items()}
        self._read_at = now

    def limit(self, user: str) -> int:
        """``user``'s GPU quota (0: no limit)."""
        self._refresh()
        return self._overrides.get(user, self.cfg.gpu_quota)

    def usage(self, now: float | None = None) -> dict[str, float]:
        """user -> fair-share usage in GPU-seconds ({} when fair share by usage is off)."""
        self._refresh()
        if self.cfg.fair_share_half_life_days <= 0:
            return {}
        now = self.clock() if now is None else now
        out = dict(self._history)
        for user, at in self._slots:
            out[user] = out.get(user, 0.0) + max(now - at, 0.0)
        return out

    def taken(self, queued) -> Taken:
        """The run slots ``queued`` (a worker's QueuedJobs) care about, read now."""
        users = {j.user for j in queued if j.gpus}
        return Taken.read(self.store, queued, {u: self.limit(u) for u in users})

    def order_args(self, taken: Taken, now: float | None = None) -> dict:
        """:func:`pink.scheduling.plan`'s ``usage`` and ``quotas``."""
        return {"usage": self.usage(now), "quotas": taken.quotas()}


def shares(store: "Store", cfg: SchedulingConfig, now: float | None = None) -> list[dict]:
    """Each user with recent usage, held GPUs or a quota of their own, read now: their
    fair-share usage (GPU-hours, decayed), GPUs held, quota and who set it ("" for the default)."""
    fs = FairShare(store, cfg)
    now = fs.clock() if now is None else now
    usage = fs.usage(now)
    held: dict[str, int] = {}
    for user, _ in fs._slots if cfg.fair_share_half_life_days > 0 else all_gpu_slots(store):
        held[user] = held.get(user, 0) + 1
    overrides = quota_overrides(store)
    return [{"user": user, "usage_gpu_hours": round(usage.get(user, 0.0) / 3600, 3), "gpus_held": held.get(user, 0),
             "gpu_quota": fs.limit(user), "quota_set_by": overrides.get(user, {}).get("by", "")}
            for user in sorted(set(usage) | set(held) | set(overrides))]
