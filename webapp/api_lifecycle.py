"""What an owner does with a job: reorder it while QUEUED, resubmit it (with changes) and delete
it once ended.

Both are part of the JSON API, ``/api/v1`` (contract: docs/api.md)."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from flask import Blueprint, abort, current_app, g, jsonify, request

from pink.model import Job
from pink.reorder import set_user_priority
from pink.states import JobState
from pink.store_deletes import DEFAULT_TOMBSTONE_S

from . import jobs as joblogic
from .api import _cfg, _links, jobs_json, own_job, submitted
from .auth import login_required, store
from .errors import error_response
from .spec import HEADER_FIELDS, MAX_HEADER_BYTES, SPEC_HEADER, JobSpec, SubmitError

bp = Blueprint("api_lifecycle", __name__, url_prefix="/api/v1")


def old_fields(old: Job, admin: bool) -> dict[str, Any]:
    """``old``'s spec in the fields of the ``Pink-Job-Spec`` header, so a resubmit's changes
    go through the one parser (:meth:`JobSpec.parse`) with the checks every submission gets.
    Only admins keep a raised priority (anyone may go last). Notifications carry over; a retry
    of LOST runs (retry_lost) is asked for again, never inherited."""
    fields: dict[str, Any] = {
        "gpus": old.gpus, "timeout": old.timeout_s, "output": old.output, "name": old.name,
        "priority": old.priority if admin else min(old.priority, 0), "user_priority": old.user_priority,
        "command": list(old.command) if old.command is not None else None,
        "entrypoint": list(old.entrypoint) if old.entrypoint is not None else None,
        "env": dict(old.env), "data": list(old.datasets),
    }
    # Zero or empty means "the default" in these: leave them out, as a submission would.
    for key, value in (("workdir", old.workdir), ("input", old.input), ("cpus", old.cpus),
                       ("memory", old.memory_bytes), ("shm_size", old.shm_bytes),
                       ("notify", old.notify), ("webhook", old.webhook)):
        if value:
            fields[key] = value
    return fields


def resubmit_spec(old: Job, user, body: bytes) -> JobSpec:
    """The spec of a resubmit of ``old``: its values, with those of the JSON object ``body``
    (the ``Pink-Job-Spec`` header's fields; empty: no change) instead. SubmitError (400) on a
    bad body or value."""
    changes: Any = {}
    if body.strip():
        if len(body) > MAX_HEADER_BYTES:
            raise SubmitError(400, f"the resubmit body is {len(body)} bytes; at most {MAX_HEADER_BYTES}")
        try:
            changes = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise SubmitError(400, f"the resubmit body is not valid JSON: {exc}") from None
    if not isinstance(changes, dict):
        raise SubmitError(400, f"the resubmit body must be a JSON object of the fields to change "
                               f"(those of the {SPEC_HEADER} header)")
    unknown = sorted(set(changes) - set(HEADER_FIELDS))
    if unknown:
        raise SubmitError(400, f"{unknown[0]} cannot be changed by a resubmit (it takes "
                               f"{', '.join(HEADER_FIELDS)})")
    merged = {**old_fields(old, user.admin), **changes}
    spec = JobSpec.parse({}, user, json.dumps(merged, ensure_ascii=True, separators=(",", ":")))
    return dataclasses.replace(spec, image_id=old.image_id, resubmit_of=old.id)


@bp.post("/jobs/<job_id>/resubmit")
@login_required
def resubmit_job(job_id: str):
    """A new job like an ended one, linked to it (``resubmit_of``), from the image a worker
    still holds: nothing is uploaded. The optional JSON body changes what the job runs with.
    PINK never re-runs a job by itself (DESIGN §3)."""
    old = own_job(job_id)
    if old.user != g.user.name:
        abort(403, "resubmit only your own jobs")
    if not old.state.terminal:
        return error_response(409, f"job {job_id} is {old.state}; only an ended job can be resubmitted")
    if not old.image_id:
        return error_response(409, f"job {job_id} never had a complete image; submit the tarball again")
    try:
        spec = resubmit_spec(old, g.user, request.get_data(cache=False))
        job, created = joblogic.submit(
            _cfg(), store(), _links(), current_app.extensions["pink.lease"], g.user, spec,
            body=request.stream, length=0, idempotency_key=request.headers.get("Idempotency-Key", ""),
        )
    except SubmitError as exc:
        ran_on = store().get_worker(old.worker) if any(h.get("state") == "RUNNING" for h in old.history) else None
        if exc.status == 409 and ran_on is not None and ran_on.alive and old.image_id not in ran_on.images:
            # Workers report their images every few seconds; a job that just ended may not
            # be counted yet on the worker that loaded it.
            return error_response(409, f"worker {old.worker} has not reported image {old.image_id} yet; "
                                       f"try again in a few seconds, or submit the tarball if it lasts",
                                  {"Retry-After": "5"})
        return error_response(exc.status, str(exc))
    return submitted(job, created)


@bp.delete("/jobs/<job_id>")
@login_required
def delete_job(job_id: str):
    """Delete an ended job: its record now, its archive and log on the worker soon after (the
    worker follows the tombstones). Reads of it afterwards answer 410 saying who deleted it."""
    for _ in range(10):  # a job still being written (an export's last record) changes under us
        job = own_job(job_id)
        if not job.state.terminal:
            return error_response(409, f"job {job_id} is {job.state}; cancel it first "
                                       f"(`pink cancel {job_id}`), then delete it")
        worker = store().get_worker(job.worker)
        ttl = worker.output_retention_s if worker is not None and worker.output_retention_s else DEFAULT_TOMBSTONE_S
        stone = store().delete_job(job, g.user.name, ttl, now=time.time())
        if stone is not None:
            return jsonify(deleted={"id": stone.job_id, "user": stone.user, "by": stone.by, "at": stone.at,
                                    "worker": stone.worker})
    return error_response(503, "the job changed too often to delete it; try again")


@bp.patch("/jobs/<job_id>")
@login_required
def patch_job(job_id: str):
    """Change what may change of a QUEUED job: ``user_priority`` (the order of the owner's own
    jobs; anyone may set it, -100..100)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or set(body) != {"user_priority"}:
        return error_response(400, 'send {"user_priority": N}: only the order among your own jobs can be changed')
    value = body["user_priority"]
    if not isinstance(value, int) or isinstance(value, bool):
        return error_response(400, f"user_priority must be a whole number, not {value!r}")
    for _ in range(10):  # the job's record changes under us (a renewal, a cancel)
        job = own_job(job_id)
        try:
            updated = set_user_priority(store(), job, value)
        except ValueError as exc:
            return error_response(409 if job.state is not JobState.QUEUED else 400, str(exc))
        if updated is not None:
            return jsonify(job=jobs_json([updated], g.user.name)[0])
    return error_response(503, "the job changed too often to reorder it; try again")
