"""Fair share and GPU quotas for admins (pink.fairshare): ``GET /api/v1/fairshare`` (each user's
decayed usage, GPUs held, quota) and ``PUT``/``DELETE /api/v1/users/<name>/quota``."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, g, jsonify, request

from pink import fairshare

from .auth import admin_required, store

bp = Blueprint("fairshare_api", __name__, url_prefix="/api/v1")


def _cfg():
    return current_app.extensions["pink.config"].scheduling


@bp.get("/fairshare")
@admin_required
def shares():
    cfg = _cfg()
    return jsonify(half_life_days=cfg.fair_share_half_life_days, cpu_weight=cfg.fair_share_cpu_weight,
                   default_gpu_quota=cfg.gpu_quota, users=fairshare.shares(store(), cfg))


@bp.put("/users/<name>/quota")
@admin_required
def set_quota(name: str):
    if store().get_user(name) is None:
        abort(404, f"no user {name}")
    body = request.get_json(silent=True)
    gpus = body.get("gpus") if isinstance(body, dict) else None
    if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 0:
        abort(400, 'send {"gpus": N}: the most GPUs the user\'s running jobs may hold at once (0: no limit)')
    fairshare.set_quota(store(), name, gpus, by=g.user.name)
    return jsonify(user=name, gpu_quota=gpus, by=g.user.name)


@bp.delete("/users/<name>/quota")
@admin_required
def reset_quota(name: str):
    fairshare.set_quota(store(), name, None, by=g.user.name)
    return jsonify(user=name, gpu_quota=_cfg().gpu_quota, by="")
