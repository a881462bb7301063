"""``/api/v1/arrays``: a job array as one thing, its jobs and their counts per state, and
cancelling every job of it that has not ended (docs/api.md)."""

from __future__ import annotations

from flask import Blueprint, abort, g, jsonify, request

from pink import arraystore
from pink.errors import PinkError
from pink.model import JOB_ID, Job
from pink.states import CLAIMED

from . import arrays
from .auth import login_required, store
from .cancel import CannotCancel, cancel, discard_requested
from .errors import error_response

bp = Blueprint("arrays_api", __name__, url_prefix="/api/v1")


def own_array(array_id: str) -> list[Job]:
    """The array's jobs if it exists and belongs to the caller (admins see all); 404 otherwise."""
    jobs = arraystore.array_jobs(store(), array_id) if JOB_ID.match(array_id) else []
    if not jobs or (jobs[0].user != g.user.name and not g.user.admin):
        abort(404, f"no array {array_id}")
    return jobs


def array_json(array_id: str, jobs: list[Job] | None = None, with_jobs: bool = False) -> dict:
    """The array's summary (counts per state, ...), ``job_ids`` by index, and with
    ``with_jobs`` its jobs as GET /jobs shows them."""
    jobs = jobs if jobs is not None else arraystore.array_jobs(store(), array_id)
    data = arrays.summary(array_id, jobs)
    data["job_ids"] = [j.id for j in jobs]
    if with_jobs:
        from .api import jobs_json  # api imports this module

        data["jobs"] = jobs_json(jobs, g.user.name)
    return data


@bp.get("/arrays/<array_id>")
@login_required
def get_array(array_id: str):
    return jsonify(array=array_json(array_id, own_array(array_id), with_jobs=True))


@bp.post("/arrays/<array_id>/cancel")
@login_required
def cancel_array(array_id: str):
    """Cancel each job of the array that has not ended, as a cancel of that job would
    (webapp/cancel.py; ``discard=1`` for all), each its own CAS transition (a job that ends
    meanwhile stays as it ended); the waiting ones first, so none of them starts."""
    jobs = own_array(array_id)
    discard = discard_requested(request.args)
    cancelled: list[str] = []
    # Waiting jobs first: a claimed job's end frees a run slot another job would take.
    for job in sorted(jobs, key=lambda j: j.state in CLAIMED):
        for _ in range(10):  # a busy job may change under us; each try re-reads it
            if job.state.terminal:
                break
            try:
                done = cancel(store(), job, g.user.name, discard=discard)
            except CannotCancel:
                break  # it finished running meanwhile: its own output is being exported
            except PinkError as exc:
                return error_response(503, f"cancelled {len(cancelled)} jobs of array {array_id}, then: {exc}")
            if done is not None:
                cancelled.append(job.id)
                break
            job = store().get_job(job.id) or job
        else:
            return error_response(503, f"job {job.id} of array {array_id} changed too often to cancel it; "
                                       "try again")
    return jsonify(array=array_json(array_id), cancelled=cancelled)
