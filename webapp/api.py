"""The JSON API, ``/api/v1`` (contract: docs/api.md, served as OpenAPI 3)."""

from __future__ import annotations

import json
import re
import threading
import time

from flask import Blueprint, Response, abort, current_app, g, jsonify, request, stream_with_context

from pink.errors import PinkError, TransferError
from pink.layers import DIFF_ID
from pink.model import IMAGE_ID, INPUT_ID, JOB_ID, Job
from pink.states import JobState

from . import jobs as joblogic
from .auth import admin_required, current_user, login_required, store
from .cancel import CannotCancel, cancel, discard_requested
from .errors import error_response
from .events import JobChanges
from .arrays_api import array_json
from .openapi import SPEC
from .spec import MAX_LAYERS, SPEC_HEADER, JobSpec, SubmitError
from .upload import SocketBody, drain_body

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def _cfg():
    return current_app.extensions["pink.config"]


def _links():
    return current_app.extensions["pink.links"]


def own_job(job_id: str) -> Job:
    """The job if it exists and belongs to the caller (admins see all); 404 otherwise, so
    nobody learns which ids exist."""
    job = store().get_job(job_id) if JOB_ID.match(job_id) else None
    if job is None and JOB_ID.match(job_id):
        stone = store().tombstone(job_id)  # deleted: say so to whoever could see it (410)
        if stone is not None and (stone.user == g.user.name or g.user.admin):
            abort(410, f"{stone.message()}: its record, output and log are gone")
    if job is None or (job.user != g.user.name and not g.user.admin):
        abort(404, f"no job {job_id}")
    return job


def jobs_json(jobs: list[Job], viewer: str, planned: bool = True) -> list[dict]:
    """Jobs as ``viewer`` may see them: the values of a job's env are its owner's only (they
    may be secrets); anyone else (an admin) sees the names, each with the value "***".
    ``planned``: with the queue position, waiting reason and estimated start of queued jobs."""
    out = joblogic.public_jobs(store(), jobs, current_app.extensions["pink.fairshare"], planned)
    for data in out:
        if data["user"] != viewer:
            data["env"] = dict.fromkeys(data["env"], "***")
    return out


def job_json(job: Job) -> dict:
    return jobs_json([job], g.user.name)[0]


@bp.get("/openapi.json")
def openapi():
    return jsonify(SPEC)


def _upload_body():
    """``(body, length)`` of an upload, an image or an input: the big bodies (app-wide, the
    limit is max_body_bytes), straight from the socket when gunicorn serves us (far fewer
    copies of a multi-GB body)."""
    request.max_content_length = _cfg().web.max_upload_bytes
    length = request.content_length
    body = SocketBody.of(request.environ, length) if length else None
    return body or request.stream, length


def _refuse_upload(body, exc: SubmitError):
    # Answering before the body is read makes the client see a reset instead of this
    # message; read a modest body to the end, close the connection on a big one.
    if drain_body(body, 64 << 20):
        return error_response(exc.status, str(exc))
    return error_response(exc.status, str(exc), {"Connection": "close"})


@bp.post("/jobs")
@login_required
def submit_job():
    body, length = _upload_body()
    try:
        spec = JobSpec.parse(request.args, g.user, request.headers.get(SPEC_HEADER, ""))
        job, created = joblogic.submit(
            _cfg(), store(), _links(), current_app.extensions["pink.lease"], g.user, spec, body, length,
            request.headers.get("Idempotency-Key", ""),
        )
    except SubmitError as exc:
        return _refuse_upload(body, exc)
    if not created:
        drain_body(body)  # a retry: the client is sending the image again, whole
    return submitted(job, created)


def submitted(job: Job, created: bool):
    """The answer to a submission: 201 (200 for a retry) with the job, and with the array it
    made, if any (its first job is ``job``). The job's queue position is left to the next GET:
    planning its worker's queue costs time linear in that queue, which a submission must not
    (docs/scale.md)."""
    body = {"job": jobs_json([job], g.user.name, planned=False)[0]}
    if job.array_id:
        body["array"] = array_json(job.array_id)
    return jsonify(body), 201 if created else 200


@bp.post("/inputs")
@login_required
def upload_input():
    """A job's input, a plain tar, to the worker a job with the placement parameters would go
    to (the query parameters and Pink-Job-Spec header of POST /jobs; ``sha256``: the input's
    id as the client computed it)."""
    body, length = _upload_body()
    try:
        spec = JobSpec.parse(request.args, g.user, request.headers.get(SPEC_HEADER, ""))
        record = joblogic.upload_input(_cfg(), store(), _links(), g.user, spec, body, length,
                                       request.args.get("sha256", ""))
    except SubmitError as exc:
        return _refuse_upload(body, exc)
    return jsonify(input=record.input_id, worker=record.worker, bytes=record.bytes), 201


@bp.get("/inputs/<input_id>")
@login_required
def input_holders(input_id: str):
    if not INPUT_ID.fullmatch(input_id):
        abort(400, "input ids look like sha256:<64 hex digits>")
    return jsonify(input=input_id, workers=joblogic.input_workers(store(), g.user, input_id))


@bp.get("/jobs")
@login_required
def list_jobs():
    everyone = request.args.get("all") == "1" and g.user.admin
    try:
        limit = min(max(int(request.args.get("limit", 200)), 1), 1000)
    except ValueError:
        abort(400, "limit must be a number")
    before = request.args.get("before", "")
    if before and not JOB_ID.match(before):
        abort(400, "before must be a job id (the `next` of the previous page)")
    # One sorted etcd range: only the page shown is read (pink/store_retention.py).
    jobs, cursor = store().jobs_page(None if everyone else g.user.name, limit=limit, before=before)
    state = request.args.get("state")
    if state:  # filters this page; `next` still pages through all jobs
        jobs = [j for j in jobs if j.state.value == state.upper()]
    return jsonify(jobs=jobs_json(jobs, g.user.name), next=cursor or None)


@bp.get("/jobs/<job_id>")
@login_required
def get_job(job_id: str):
    return jsonify(job=job_json(own_job(job_id)))


@bp.post("/jobs/<job_id>/cancel")
@login_required
def cancel_job(job_id: str):
    discard = discard_requested(request.args)
    for _ in range(10):  # a busy job may change under us; each try re-reads it
        try:
            done = cancel(store(), own_job(job_id), g.user.name, discard=discard)
        except CannotCancel as exc:
            return error_response(409, str(exc))
        if done is not None:
            return jsonify(job=job_json(done))
    return error_response(503, "the job changed too often to cancel it; try again")


def _worker_link(job: Job):
    worker = store().get_worker(job.worker)
    if worker is None:
        abort(404, f"worker {job.worker} of job {job.id} is no longer registered")
    return _links().get(worker)


def _abort_if_expired(job: Job, error: TransferError) -> None:
    """410 when a read failed because the worker deleted the file at the end of its retention."""
    expires = job.output_expires_at
    if expires and time.time() > expires:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires))
        abort(410, f"the output and log of job {job.id} were deleted on {when}, when the worker's "
                   f"retention for them ran out")
    raise error


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
    if job.state.terminal and job.output_expires_at and time.time() > job.output_expires_at:
        try:  # a log still there (retention turned off since) is served as before
            next(link.read(job.id, "log", max(offset, job.log_bytes)), None)
        except TransferError as exc:
            _abort_if_expired(job, exc)

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
        why = f"is {job.state}; the archive comes when it ends" if not job.state.terminal else \
            "has no output archive: its cancel threw what it wrote away" if job.discard_output else \
            "has no output archive (--output none)" if job.output == "none" else "has no output archive"
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
    body = _worker_link(job).read(job.id, "archive", start, length=end - start + 1)
    try:
        first = next(body, b"")  # fail before the status line if the archive is gone
    except TransferError as exc:
        _abort_if_expired(job, exc)

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
    if not IMAGE_ID.fullmatch(image_id):
        abort(400, "image ids look like sha256:<64 hex digits>")
    workers = [w.name for w in store().workers() if w.alive and not w.drained and image_id in w.images]
    if workers and not joblogic.may_reuse_image(store(), g.user, image_id):
        workers = []
    return jsonify(image=image_id, workers=workers)


@bp.post("/layers")
@login_required
def layer_holders():
    """How many bottom layers of an image each worker holds that the caller may leave out of
    its upload (a thin archive, ``omitted_layers=`` on POST /jobs)."""
    data = request.get_json(silent=True)
    diff_ids = data.get("diff_ids") if isinstance(data, dict) else None  # a list or a number: 400
    if (not isinstance(diff_ids, list) or len(diff_ids) > MAX_LAYERS
            or not all(isinstance(d, str) and DIFF_ID.match(d) for d in diff_ids)):
        abort(400, f'send {{"diff_ids": [...]}}: the image\'s layer diff_ids, bottom first '
                   f"(at most {MAX_LAYERS})")
    workers = [{"name": w.name, "layers": joblogic.held_layers(store(), g.user, w, diff_ids)}
               for w in store().workers() if w.alive and not w.drained]
    return jsonify(workers=[w for w in workers if w["layers"]])


@bp.get("/workers")
@login_required
def list_workers():
    """Workers with their GPUs, load and datasets. How web servers reach them (SSH address,
    account, folders) is for admins only, and each user sees only the cached images that are
    theirs (others' image ids would tell what they run)."""
    workers = store().workers()
    load = store().queue_load()
    mine = None if g.user.admin else joblogic.uploaded_images(store(), g.user)
    out = []
    for w in workers:
        data = w.public()
        if mine is not None:
            for private in ("ssh_host", "ssh_port", "ssh_user", "inbox", "outbox"):
                del data[private]
            data["images"] = [i for i in w.images if i in mine]
        data["queued"] = load.worker(w.name).queued
        data["running"] = load.worker(w.name).running
        data["gpus_free"] = list(w.gpus_free) if w.alive else []
        out.append(data)
    return jsonify(workers=out)


@bp.get("/datasets")
@login_required
def list_datasets():
    return jsonify(datasets=joblogic.list_datasets(store().workers()))


@bp.post("/workers/<name>/drain")
@admin_required
def drain(name: str):
    store().set_drained(name, request.args.get("undo") != "1")
    return jsonify(worker=name, drained=request.args.get("undo") != "1")


_changes_lock = threading.Lock()

#: A stream ends after this long; EventSource reconnects by itself (and a restarted web
#: server does not keep old streams).
EVENTS_MAX_S = 300.0


def _job_changes() -> JobChanges:
    with _changes_lock:
        feed = current_app.extensions.get("pink.job_changes")
        if feed is None:
            feed = current_app.extensions["pink.job_changes"] = JobChanges(store())
        return feed


@bp.get("/events")
@login_required
def job_events():
    """Server-sent events: ``jobs`` ({"jobs": [...]} like GET /jobs) whenever the caller's
    jobs change, or with ``?job=ID`` ``job`` ({"job": JOB}) whenever that job changes."""
    job_id = request.args.get("job", "")
    if job_id:
        own_job(job_id)
    everyone = request.args.get("all") == "1" and g.user.admin
    try:
        limit = min(max(int(request.args.get("limit", 200)), 1), 1000)
    except ValueError:
        abort(400, "limit must be a number")
    user = g.user.name
    feed = _job_changes()

    def snapshot() -> tuple[str, dict]:
        if job_id:
            job = store().get_job(job_id)
            return "job", {"job": jobs_json([job], user)[0] if job else None}
        jobs = store().list_jobs(None if everyone else user, limit=limit)
        return "jobs", {"jobs": jobs_json(jobs, user)}

    def stream():
        yield "retry: 2000\n\n"
        deadline = time.monotonic() + EVENTS_MAX_S
        last, quiet_since, seen = "", time.monotonic(), feed.version
        while time.monotonic() < deadline:
            try:
                event, payload = snapshot()
                data = json.dumps(payload, separators=(",", ":"))
            except PinkError as exc:  # etcd briefly unavailable: say so, keep the stream
                event, data = "problem", json.dumps({"error": str(exc)})
            if data != last:
                last, quiet_since = data, time.monotonic()
                yield f"event: {event}\ndata: {data}\n\n"
            elif time.monotonic() - quiet_since > 15:
                quiet_since = time.monotonic()
                yield ": still here\n\n"  # keeps proxies from closing an idle stream
            seen = feed.wait(seen, timeout=10)
            time.sleep(0.2)  # one read for a burst of changes (STARTING, RUNNING, ...)

    return Response(stream_with_context(stream()), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@bp.app_errorhandler(PinkError)
def pink_error(exc: PinkError):
    return error_response(400, str(exc))


@bp.before_app_request
def _identify():
    # Resolve the caller once so views and error handlers agree on who it is.
    if request.path.startswith("/api/"):
        current_user()
