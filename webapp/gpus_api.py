"""``/api/v1/workers/<name>/gpus/<index>/quarantine``: admins quarantine and release one GPU of a
worker (pink.quarantine). The worker stops giving that GPU new jobs within a loop interval
(it watches the key); jobs already on it run on."""

from __future__ import annotations

from flask import Blueprint, abort, g, jsonify, request

from pink import quarantine

from .auth import admin_required, store

bp = Blueprint("gpus_api", __name__, url_prefix="/api/v1")


def _gpu_of(name: str, index: int) -> None:
    worker = store().get_worker(name)
    if worker is None:
        abort(404, f"no worker {name} is registered")
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
