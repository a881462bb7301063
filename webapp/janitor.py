"""Each web server sweeps for jobs whose worker is gone (DESIGN §3).

* A claimed job (STARTING/RUNNING/EXPORTING) whose claim key vanished with its worker's lease
  becomes LOST. The transaction also compares that the claim is still absent, and every claim
  renewal rewrites the job, so exactly one writer wins even with many web servers sweeping.
  A job being cancelled (EXPORTING with outcome CANCELLED) becomes CANCELLED instead.
* QUEUED jobs of a worker without a lease wait ``lost_worker_grace_s`` (a reboot keeps the
  inbox), then FAIL with a reason.
* UPLOADING jobs whose upload key vanished with their web server's lease (it died mid-upload)
  FAIL; the worker's sweep removes the partial file.
* Ended jobs are added to the usage rollups once, and their records leave etcd when their
  retention runs out (:func:`tidy`).

The same thread keeps this web server process's lease alive.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from flask import Flask

from pink.config import WebConfig
from pink.errors import PinkError
from pink.lease import Lease
from pink.model import output_expiry
from pink.states import CLAIMED, JobState
from pink.store import Store

from .cancel import cancelling

log = logging.getLogger(__name__)


def sweep(store: Store, cfg: WebConfig, now: float | None = None) -> dict[str, int]:
    """One pass; returns how many jobs it moved, by new state."""
    now = time.time() if now is None else now
    moved = {"LOST": 0, "FAILED": 0, "CANCELLED": 0}
    workers = store.workers()
    alive = {w.name for w in workers if w.alive}
    retention = {w.name: w.output_retention_s for w in workers}
    claims = store.claims()
    uploads = store.uploads()
    for worker, entries in store.queue_mirror.queues().items():
        down_for = 0.0
        if worker not in alive:
            down_for = now - store.down_since(worker, now)
        for entry in entries:
            if entry.state in CLAIMED and entry.job_id not in claims:
                job = store.get_job(entry.job_id)
                if job is None or job.state not in CLAIMED:
                    continue
                was = job.state
                expires = output_expiry(now, retention.get(worker, 0))
                if cancelling(job):  # the user cancelled it; its worker died before exporting
                    done = store.mark_lost_if_unclaimed(
                        job, now=now, output_expires_at=expires, new=JobState.CANCELLED,
                        reason=f"{job.reason.split(';')[0]}; worker {worker} went away before it exported "
                               f"what the job wrote, so nothing is kept")
                    moved["CANCELLED"] += done is not None
                    continue
                then = (f"it asked to be retried if LOST (retry_lost={job.retry_lost})" if job.retry_lost
                        else "PINK never re-runs it by itself: resubmit it if needed")
                done = store.mark_lost_if_unclaimed(
                    job, now=now, output_expires_at=expires,
                    reason=f"worker {worker} went away while the job was {was}; it may or may not "
                           f"have run to the end. {then}",
                )
                if done is not None:
                    moved["LOST"] += 1
                    log.warning("job %s: LOST (worker %s gone while %s)", job.id, worker, was)
            elif entry.state is JobState.QUEUED and worker not in alive and down_for > cfg.lost_worker_grace_s:
                job = store.get_job(entry.job_id)
                if job is not None and job.state is JobState.QUEUED:
                    reason = (f"worker {worker} has been unavailable for {down_for:.0f} s; "
                              f"the job never started: resubmit it")
                    moved["FAILED"] += store.transition(job, JobState.FAILED, reason=reason, now=now) is not None
            elif entry.state is JobState.UPLOADING and entry.job_id not in uploads:
                job = store.get_job(entry.job_id)
                if job is not None and job.state is JobState.UPLOADING:
                    reason = "the upload never finished (its web server stopped); submit again"
                    moved["FAILED"] += store.fail_stale_upload(job, reason=reason, now=now) is not None
    return moved


#: Jobs each janitor pass accounts, and job records it retires, at most (each one transaction).
TIDY_BATCH = 200


def tidy(store: Store, cfg: WebConfig, now: float | None = None) -> dict[str, int]:
    """Account ended jobs in the usage rollups, then remove the records whose retention ran out
    (``web.job_record_retention_days``; pink.store_usage, pink.store_retention). Every step is
    a CAS transaction, so janitors of many web servers may run it at once. Batches follow each
    other while there is work: with jobs ending faster than a batch per interval, a pause after
    each would let the backlog (and etcd) grow without bound."""
    done = {"accounted": 0, "retired": 0}
    while True:
        accounted = store.account_pending(limit=TIDY_BATCH, now=now)
        retired = store.retire_expired(cfg.job_record_retention_days * 86400, now=now, limit=TIDY_BATCH)
        if retired:
            log.info("janitor: removed %d job records past their retention", retired)
        done["accounted"] += accounted
        done["retired"] += retired
        if not accounted and not retired:
            return done


def repeat(name: str, interval_s: float, step: Callable[[], None]) -> threading.Thread:
    """A daemon thread that runs ``step`` every ``interval_s`` for good. etcd trouble is logged
    when it starts, not on every pass while it lasts; any other failure is logged each time."""

    def loop() -> None:
        failing = False
        while True:
            try:
                step()
                failing = False
            except PinkError as exc:
                if not failing:
                    log.warning("%s: %s", name, exc)
                failing = True
            except Exception:
                log.exception("%s pass failed", name)
            time.sleep(interval_s)

    thread = threading.Thread(target=loop, name=f"pink-{name}", daemon=True)
    thread.start()
    return thread


def start(app: Flask) -> threading.Thread:
    """The janitor's thread, the accounting and retention thread (:func:`tidy`), and the
    reactor's (retries of LOST jobs, notifications)."""
    from . import reactor

    reactor.start(app)
    store: Store = app.extensions["pink.store"]
    lease: Lease = app.extensions["pink.lease"]
    cfg: WebConfig = app.extensions["pink.config"].web

    def step() -> None:
        lease.keepalive()
        sweep(store, cfg)

    # Accounting and retention in a thread of their own: a backlog of them never delays the
    # lease renewal above.
    repeat("tidy", cfg.janitor_interval_s, lambda: tidy(store, cfg) and None)
    return repeat("janitor", cfg.janitor_interval_s, step)
