"""Admins' GPU quarantines in etcd: ``quarantine/<worker>/<index>`` -> {"reason", "by", "at"}.

A quarantined GPU gets no new jobs; its worker keeps running the rest (DESIGN §4). Workers
also quarantine GPUs by themselves when a health check fails (gpu_worker.gpuhealth); those are
recomputed by each check and live only in the worker's heartbeat. An admin's quarantine is kept
here so that it survives restarts of the worker, until an admin releases it.
"""

from __future__ import annotations

import json
import time

from .store import Store

#: What a worker's heartbeat says for a GPU an admin quarantined, before the admin's reason.
ADMIN_PREFIX = "admin"


def _key(store: Store, worker: str, index: int | str = "") -> str:
    return store._k("quarantine", worker, str(index))  # noqa: SLF001 - the store's key layout


def quarantine(store: Store, worker: str, index: int, reason: str, by: str) -> None:
    if index < 0:
        raise ValueError(f"GPU index {index} is not valid")
    if not reason.strip():
        raise ValueError("say why the GPU is quarantined (a reason)")
    value = json.dumps({"reason": reason.strip()[:500], "by": by, "at": time.time()}).encode()
    key = _key(store, worker, index)
    store.etcd.call(lambda c: c.put(key, value), "quarantine GPU")


def release(store: Store, worker: str, index: int) -> bool:
    """Lift an admin's quarantine; False when there was none."""
    key = _key(store, worker, index)
    return bool(store.etcd.call(lambda c: c.delete(key), "release GPU"))


def admin_quarantines(store: Store, worker: str) -> dict[int, dict]:
    """index -> {"reason", "by", "at"} of the GPUs admins quarantined on ``worker``."""
    out: dict[int, dict] = {}
    for key, value, _rev in store._get_prefix(_key(store, worker)):  # noqa: SLF001
        index = key.rsplit("/", 1)[1]
        if index.isdigit():
            out[int(index)] = json.loads(value)
    return out


def reason_text(entry: dict) -> str:
    return f"{ADMIN_PREFIX} {entry.get('by', '?')}: {entry.get('reason', '')}"
