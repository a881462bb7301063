"""Admins' controls of one worker, kept in etcd and watched by the worker, so they apply within
a moment without a restart:

- ``/api/v1/workers/<name>/gpus/<index>/quarantine``: quarantine and release one GPU
  (pink.quarantine): the worker gives it no new jobs; jobs already on it run on.
- ``/api/v1/workers/<name>/slots``: set how many jobs it runs at once, or reset that to its
  configured ``max_parallel_jobs`` (pink.slots); lowering it stops no running job.
"""

from __future__ import annotations

from flask import Blueprint, abort, g, jsonify, request

from pink import quarantine, slots
from pink.model import WorkerInfo

from .auth import admin_required, store

bp = Blueprint("gpus_api", __name__, url_prefix="/api/v1")


def _worker(name: str) -> WorkerInfo:
    worker = store().get_worker(name)
    if worker is None:
        abort(404, f"no worker {name} is registered")
    return worker


def _gpu_of(name: str, index: int) -> None:
    worker = _worker(name)
    if not any(gpu.get("index") == index for gpu in worker.gpus):
        present = ",".join(str(gpu.get("index")) for gpu in worker.gpus) or "none"
        abort(404, f"worker {name} has no GPU {index} (its GPUs: {present})")


@bp.post("/workers/<name>/gpus/<int:index>/quarantine")
@admin_required
def quarantine_gpu(name: str, index: int):
    _gpu_of(name, index)
    body = request.get_json(silent=True) or {}
    reason = body.get("reason") if isinstance(body, dict) else None
    if not isinstance(reason, str) or not reason.strip():
        abort(400, "send {\"reason\": \"...\"}: why the GPU is quarantined (shown to users)")
    quarantine.quarantine(store(), name, index, reason, by=g.user.name)
    return jsonify(worker=name, gpu=index, quarantined=True, reason=reason.strip()[:500])


@bp.delete("/workers/<name>/gpus/<int:index>/quarantine")
@admin_required
def release_gpu(name: str, index: int):
    _gpu_of(name, index)
    released = quarantine.release(store(), name, index)
    return jsonify(worker=name, gpu=index, quarantined=False, released=released)


@bp.put("/workers/<name>/slots")
@admin_required
def set_slots(name: str):
    worker = _worker(name)
    body = request.get_json(silent=True)
    try:
        n = slots.set_slots(store(), name, body.get("slots") if isinstance(body, dict) else None, by=g.user.name)
    except ValueError as exc:
        abort(400, f'send {{"slots": N}}: {exc}')
    return jsonify(worker=name, slots=n, configured=worker.slots_configured or None, by=g.user.name)


@bp.delete("/workers/<name>/slots")
@admin_required
def reset_slots(name: str):
    worker = _worker(name)
    was_set = slots.reset(store(), name)
    return jsonify(worker=name, slots=worker.slots_configured or None, configured=worker.slots_configured or None,
                   reset=was_set)
