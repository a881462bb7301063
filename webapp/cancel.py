"""Cancelling a job (DESIGN §3): at once before it runs, through its worker once it runs.

* UPLOADING, QUEUED, STARTING: CANCELLED at once (nothing ran, nothing to keep); a worker that
  claimed a STARTING job sees it leave its queue and stops.
* RUNNING on a live worker: EXPORTING with outcome CANCELLED. The worker sees the move, stops
  the container (SIGTERM, SIGKILL after the grace), exports what the job wrote (its output
  mode's worth, as after a timeout) and records CANCELLED with the archive. Its claim stays
  until then, so the at-most-once promise is unchanged; if the worker dies meanwhile, the
  janitor ends the job CANCELLED (not LOST) once its claim is gone.
* RUNNING with ``discard`` or on a worker that is not alive: CANCELLED at once; the worker (if
  any) stops the container and keeps nothing.
* EXPORTING: the job has stopped running. Already being cancelled: answered as it is (with
  ``discard``: CANCELLED at once, the export thrown away). Ended by itself: its output is being
  written, so a cancel is refused (409) unless it asks to discard it.
"""

from __future__ import annotations

import time

from flask import abort

from pink.model import Job, output_expiry
from pink.states import CLAIMED, JobState
from pink.store import Store


class CannotCancel(Exception):
    """The cancel is refused; the message says why (HTTP 409)."""


def discard_requested(args) -> bool:
    """The ``discard`` query parameter of a cancel (400 unless it is 1/0/true/false)."""
    raw = args.get("discard", "0")
    if raw not in ("0", "1", "true", "false"):
        abort(400, "discard must be 1 (throw away what the job wrote) or 0")
    return raw in ("1", "true")


def cancelling(job: Job) -> bool:
    """True while a cancel waits for the job's worker to stop it and export its output."""
    return job.state is JobState.EXPORTING and job.outcome == JobState.CANCELLED.value


def cancel(store: Store, job: Job, by: str, discard: bool = False, now: float | None = None) -> Job | None:
    """One try at cancelling ``job`` as read: the job as it is now, or None when it changed under
    us (read it again and retry). Raises :class:`CannotCancel`."""
    now = time.time() if now is None else now
    if job.state.terminal:
        raise CannotCancel(f"job {job.id} already ended ({job.state})")
    reason = f"cancelled by {by}"
    worker = store.get_worker(job.worker) if job.state in CLAIMED else None
    if job.state is JobState.EXPORTING and not discard:
        if cancelling(job):
            return job
        raise CannotCancel(f"job {job.id} already finished running ({job.outcome or 'ended'}) and its output is "
                           f"being exported; cancel with discard=1 to throw that output away")
    if job.state is JobState.RUNNING and not discard and worker is not None and worker.alive:
        return store.transition(job, JobState.EXPORTING, reason=f"{reason}; keeping what it wrote",
                                outcome=JobState.CANCELLED.value, now=now)
    if job.state is JobState.RUNNING and not discard:
        reason += f"; its worker {job.worker} is not available, so nothing it wrote is kept"
    elif discard and job.state in (JobState.RUNNING, JobState.EXPORTING):
        reason += "; its output thrown away as asked"
    expires = None
    if job.state in CLAIMED:  # it has a log on the worker, kept as long as its retention says
        expires = output_expiry(now, worker.output_retention_s if worker else 0)
    return store.transition(job, JobState.CANCELLED, reason=reason, now=now, output_expires_at=expires,
                            discard_output=discard and job.state in CLAIMED)
