"""The JSON API, ``/api/v1`` (contract: docs/api.md, served as OpenAPI 3)."""

from __future__ import annotations

import re
import time

from flask import Blueprint, Response, abort, current_app, g, jsonify, request, stream_with_context

from pink import auth as pink_auth
from pink.errors import PinkError, TransferError
from pink.model import IMAGE_ID, JOB_ID, Job
from pink.states import JobState

from . import jobs as joblogic
from .auth import admin_required, current_user, login_required, store
from .errors import error_response
from .openapi import SPEC

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def _cfg():
    return current_app.extensions["pink.config"]


def _links():
    return current_app.extensions["pink.links"]


def own_job(job_id: str) -> Job:
    """The job if it exists and belongs to the caller (admins see all); 404 otherwise, so
    nobody learns which ids exist."""
    job = store().get_job(job_id) if JOB_ID.match(job_id) else None
    if job is None or (job.user != g.user.name and not g.user.admin):
        abort(404, f"no job {job_id}")
    return job


def job_json(job: Job) -> dict:
    return joblogic.public_jobs(store(), [job])[0]


@bp.get("/openapi.json")
def openapi():
    return jsonify(SPEC)


@bp.post("/tokens")
def create_token():
    data = request.get_json(silent=True) or {}
    user = pink_auth.authenticate(store(), str(data.get("username", "")), str(data.get("password", "")))
    if user is None:
        abort(401, "wrong user name or password")
    secret, token = pink_auth.issue_token(store(), user.name, str(data.get("name", "")))
    return jsonify(token=secret, id=token.id, user=user.name), 201


@bp.get("/tokens")
@login_required
def list_tokens():
    return jsonify(tokens=[{"id": t.id, "name": t.name, "created_at": t.created_at}
                           for _, t in store().tokens(g.user.name)])


@bp.delete("/tokens/<token_id>")
@login_required
def revoke_token(token_id: str):
    if not store().revoke_token(g.user.name, token_id):
        abort(404, f"no token {token_id}")
    return "", 204


@bp.get("/me")
@login_required
def me():
    return jsonify(user=g.user.name, admin=g.user.admin)


@bp.post("/jobs")
@login_required
def submit_job():
    spec = joblogic.JobSpec.parse(request.args, g.user)
    length = request.content_length
    try:
        job, created = joblogic.submit(
            _cfg(), store(), _links(), g.user, spec, request.stream, length,
            request.headers.get("Idempotency-Key", ""),
        )
    except joblogic.SubmitError as exc:
        return error_response(exc.status, str(exc))
    return jsonify(job=job_json(job)), 201 if created else 200


@bp.get("/jobs")
@login_required
def list_jobs():
    everyone = request.args.get("all") == "1" and g.user.admin
    try:
        limit = min(max(int(request.args.get("limit", 200)), 1), 1000)
    except ValueError:
        abort(400, "limit must be a number")
    jobs = store().list_jobs(None if everyone else g.user.name, limit=limit)
    state = request.args.get("state")
    if state:
        jobs = [j for j in jobs if j.state.value == state.upper()]
    return jsonify(jobs=joblogic.public_jobs(store(), jobs))


@bp.get("/jobs/<job_id>")
@login_required
def get_job(job_id: str):
    return jsonify(job=job_json(own_job(job_id)))


@bp.post("/jobs/<job_id>/cancel")
@login_required
def cancel_job(job_id: str):
    for _ in range(10):  # a busy job may change under us; each try re-reads it
        job = own_job(job_id)
        if job.state.terminal:
            return error_response(409, f"job {job_id} already ended ({job.state})")
        done = store().transition(job, JobState.CANCELLED, reason=f"cancelled by {g.user.name}")
        if done is not None:
            return jsonify(job=job_json(done))
    return error_response(503, "the job changed too often to cancel it; try again")


def _worker_link(job: Job):
    worker = store().get_worker(job.worker)
    if worker is None:
        abort(404, f"worker {job.worker} of job {job.id} is no longer registered")
    return _links().get(worker)


@bp.get("/jobs/<job_id>/logs")
@login_required
def job_logs(job_id: str):
    job = own_job(job_id)
    try:
        offset = max(int(request.args.get("offset", 0)), 0)
    except ValueError:
        abort(400, "offset must be a number")
    follow = request.args.get("follow") in ("1", "true")
    if job.state in (JobState.UPLOADING, JobState.QUEUED) and not follow:
        return Response(b"", mimetype="text/plain")
    link = _worker_link(job)

    def chunks():
        nonlocal offset, job
        while True:
            sent = 0
            try:
                for chunk in link.read(job.id, "log", offset):
                    offset += len(chunk)
                    sent += len(chunk)
                    yield chunk
            except TransferError:
                pass  # no log yet (job not started) or the worker is briefly unreachable
            if not follow:
                return
            if job.state.terminal and sent == 0:
                return
            time.sleep(0.5)
            job = store().get_job(job.id) or job

    return Response(stream_with_context(chunks()), mimetype="text/plain",
                    headers={"X-Accel-Buffering": "no", "Cache-Control": "no-store"})


_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@bp.route("/jobs/<job_id>/output", methods=["GET", "HEAD"])
@login_required
def job_output(job_id: str):
    job = own_job(job_id)
    if not job.state.terminal or not job.output_bytes:
        why = "has no output archive" if job.state.terminal else f"is {job.state}; the archive comes when it ends"
        return error_response(409, f"job {job_id} {why}")
    size = job.output_bytes
    start, end = 0, size - 1
    status = 200
    header = request.headers.get("Range")
    if header:
        m = _RANGE.match(header.strip())
        if not m or int(m.group(1)) >= size:
            return Response(status=416, headers={"Content-Range": f"bytes */{size}"})
        start = int(m.group(1))
        end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
        if end < start:
            return Response(status=416, headers={"Content-Range": f"bytes */{size}"})
        status = 206
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(end - start + 1),
        "Content-Disposition": f"attachment; filename=pink-{job.id}.tar.zst",
        "X-Pink-Sha256": job.output_sha256,
        "X-Accel-Buffering": "no",
    }
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    if request.method == "HEAD":
        return Response(status=status, headers=headers, mimetype="application/zstd")
    link = _worker_link(job)
    body = link.read(job.id, "archive", start)
    first = next(body, b"")  # fail before the status line if the archive is gone

    def chunks():
        left = end - start + 1
        piece = first
        try:
            while piece and left > 0:
                piece = piece[:left]
                left -= len(piece)
                yield piece
                piece = next(body, b"")
        finally:
            body.close()

    return Response(stream_with_context(chunks()), status=status, headers=headers, mimetype="application/zstd")


@bp.get("/images/<image_id>")
@login_required
def image_holders(image_id: str):
    if not IMAGE_ID.match(image_id):
        abort(400, "image ids look like sha256:<64 hex digits>")
    workers = [w.name for w in store().workers() if w.alive and not w.drained and image_id in w.images]
    return jsonify(image=image_id, workers=workers)


@bp.get("/workers")
@login_required
def list_workers():
    workers = store().workers()
    queues = store().all_queues()
    out = []
    for w in workers:
        data = w.public()
        entries = queues.get(w.name, [])
        data["queued"] = sum(1 for e in entries if e.state is JobState.QUEUED)
        data["running"] = sum(1 for e in entries if e.state not in (JobState.QUEUED, JobState.UPLOADING))
        data["gpus_free"] = list(w.gpus_free) if w.alive else []
        out.append(data)
    return jsonify(workers=out)


@bp.post("/workers/<name>/drain")
@admin_required
def drain(name: str):
    store().set_drained(name, request.args.get("undo") != "1")
    return jsonify(worker=name, drained=request.args.get("undo") != "1")


@bp.app_errorhandler(PinkError)
def pink_error(exc: PinkError):
    return error_response(400, str(exc))


@bp.before_app_request
def _identify():
    # Resolve the caller once so views and error handlers agree on who it is.
    if request.path.startswith("/api/"):
        current_user()
