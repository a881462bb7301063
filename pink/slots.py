"""Admins' live job-slot settings in etcd: ``slots/<worker>`` -> {"slots", "by", "at"}.

While the key is there, the worker runs at most that many jobs at once instead of its
configured ``max_parallel_jobs``; it watches the key, so a change applies within a moment,
without a restart, and survives restarts until an admin resets it. Lowering it below the
number of running jobs stops none of them: the worker starts no new job until it is under.
"""

from __future__ import annotations

import json
import time

from .store import Store

#: The most job slots an admin may give a worker (as for ``worker.max_parallel_jobs``).
MAX_SLOTS = 256


def _key(store: Store, worker: str) -> str:
    return store._k("slots", worker)  # noqa: SLF001 - the store's key layout


def parse(value: object) -> int:
    """A number of job slots an admin asked for, or ValueError saying what is allowed."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SLOTS:
        raise ValueError(f"job slots must be a whole number from 1 to {MAX_SLOTS}, not {value!r}")
    return value


def set_slots(store: Store, worker: str, slots: object, by: str) -> int:
    n = parse(slots)
    value = json.dumps({"slots": n, "by": by, "at": time.time()}).encode()
    key = _key(store, worker)
    store.etcd.call(lambda c: c.put(key, value), "set job slots")
    return n


def reset(store: Store, worker: str) -> bool:
    """Back to the worker's configured max_parallel_jobs; False when no setting was there."""
    key = _key(store, worker)
    return bool(store.etcd.call(lambda c: c.delete(key), "reset job slots"))


def setting(store: Store, worker: str) -> dict | None:
    """{"slots", "by", "at"} of the admin's setting for ``worker``, or None (the config's).
    A value that is not a valid setting (written by hand) counts as none."""
    raw = store._get(_key(store, worker))[0]  # noqa: SLF001
    if raw is None:
        return None
    try:
        entry = json.loads(raw)
        parse(entry["slots"])
    except (ValueError, KeyError, TypeError):
        return None
    return entry


__all__ = ["MAX_SLOTS", "parse", "set_slots", "reset", "setting"]
