"""Every web server's reactor: what happens when a job ends (docs/reactions.md).

Each pass lists the outbox (pink.reactions), and for every ended job in it:

1. a LOST job with ``retry_lost`` left is submitted again from its image, through the same
   placement as any submission (webapp.jobs.submit, as a resubmit does), on a live worker that
   holds the image. None holds it: the job notes why (``retry_note``) and the next pass tries
   again, until ``notify.retry_give_up_s`` after it became LOST;
2. then its e-mail and webhook notification, one attempt at a time with backoff.

It runs in its own thread so a slow relay or receiver never delays the janitor (which keeps the
web server's lease alive).
"""

from __future__ import annotations

import io
import logging
import threading
import time

from flask import Flask

from pink import notify, reactions
from pink.config import Config
from pink.errors import StoreUnavailable
from pink.lease import Lease
from pink.model import Job
from pink.reactions import Outbox
from pink.store import Store

from . import jobs as joblogic
from .janitor import repeat
from .spec import JobSpec, SubmitError
from .transfer import WorkerLinks

log = logging.getLogger(__name__)


def retry_spec(old: Job, notify_ok: bool = True, webhook_ok: bool = True) -> JobSpec:
    """The retry of a LOST job: the same job, from the image a worker holds, with one retry less
    (and its notifications, where they can still be sent: a retry never waits for them)."""
    return JobSpec(
        gpus=old.gpus, timeout_s=old.timeout_s, output=old.output, name=old.name, priority=old.priority,
        user_priority=old.user_priority,
        image_id=old.image_id, command=old.command, entrypoint=old.entrypoint, env=old.env,
        workdir=old.workdir, datasets=old.datasets, input=old.input, cpus=old.cpus,
        memory_bytes=old.memory_bytes, shm_bytes=old.shm_bytes, retry_lost=old.retry_lost - 1,
        retry_of=old.id, notify=old.notify and notify_ok, webhook=old.webhook if webhook_ok else "",
        # A job of an array is retried as a job of the same array, with the same index.
        joins_array=(old.array_id, old.array_index, old.array_size, old.array_limit) if old.array_id else (),
    )


def _note(store: Store, job: Job, note: str, give_up: bool = False) -> None:
    if job.retry_note != note or give_up:
        if reactions.update_job(store, job, retry_note=note, retry_given_up=give_up) is not None and give_up:
            log.warning("job %s: %s", job.id, note)


def retry(cfg: Config, store: Store, links: WorkerLinks, lease: Lease, old: Job, now: float) -> Job | None:
    """Try to re-run LOST job ``old`` once; the new job, or None (it waits or was given up)."""
    user = store.get_user(old.user)
    if user is None or user.disabled:
        _note(store, old, f"not retried: user {old.user} is gone or disabled", give_up=True)
        return None
    if not old.image_id:
        _note(store, old, "not retried: the job never had a complete image", give_up=True)
        return None
    waited = now - reactions.lost_at(old)
    try:
        spec = retry_spec(old, notify_ok=not notify.check_request(cfg.notify, user, True, ""),
                          webhook_ok=not notify.check_request(cfg.notify, user, False, old.webhook))
        new, created = joblogic.submit(cfg, store, links, lease, user, spec, io.BytesIO(b""), 0,
                                       idempotency_key=reactions.RETRY_KEY_PREFIX + old.id, retrying=old)
    except SubmitError as exc:
        if exc.status in (409, 429, 503) and waited < cfg.notify.retry_give_up_s:
            _note(store, old, f"retry waiting ({waited:.0f} s so far): {exc}")
        else:
            _note(store, old, f"gave up retrying after {waited:.0f} s: {exc}", give_up=True)
        return None
    except StoreUnavailable:
        # Also what losing the race on the old job's revision looks like: re-read next pass.
        return None
    if created:
        log.warning("job %s: LOST, retried as job %s on %s (%d retries left)", old.id, new.id, new.worker,
                    new.retry_lost)
    return new


def _deliver(cfg: Config, store: Store, job: Job, entry: Outbox) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """One attempt at every channel not yet delivered: (channels done, errors of this attempt)."""
    done, errors = list(entry.done), []
    if job.notify and "email" not in done:
        user = store.get_user(job.user)
        if user is None or not user.email or not cfg.notify.email_enabled:
            done.append("email")
            errors.append("no e-mail sent: the user has no address or the site no relay")
        else:
            try:
                notify.send_email(cfg.notify, job, user.email)
                done.append("email")
            except notify.NotifyError as exc:
                errors.append(str(exc))
    if job.webhook and "webhook" not in done:
        try:
            if not notify.webhook_allowed(job.webhook, cfg.notify.webhook_allow):
                raise notify.NotifyError(f"webhook {job.webhook} is no longer on the allow-list")
            notify.post_webhook(cfg.notify, job.webhook, notify.payload(cfg.notify, job))
            done.append("webhook")
        except notify.NotifyError as exc:
            errors.append(str(exc))
    return tuple(done), tuple(errors)


def announce(cfg: Config, store: Store, job: Job, entry: Outbox, now: float) -> bool:
    """One notification attempt for ended ``job`` if one is due; True when it is finished."""
    if entry.next_at > now:
        return False
    taken = reactions.claim_attempt(store, entry, cfg.notify.backoff_s, now)
    if taken is None:
        return False  # another web server has this attempt
    done, errors = _deliver(cfg, store, job, taken)
    wanted = {c for c, on in (("email", job.notify), ("webhook", bool(job.webhook))) if on}
    if not wanted <= set(done) and taken.attempts < cfg.notify.attempts:
        reactions.record_attempt(store, taken, done, errors)
        log.info("job %s: notification attempt %d failed: %s", job.id, taken.attempts, "; ".join(errors))
        return False
    if not wanted <= set(done):
        note = f"gave up after {taken.attempts} attempts: {'; '.join(errors)}"
        log.warning("job %s: %s", job.id, note)
    else:
        more = (f"delivered after {taken.attempts} attempts",) if taken.attempts > 1 else ()
        note = "; ".join((*errors, *more))
    return reactions.update_job(store, job, drop_outbox=True, notified_at=now, notify_note=note) is not None


def react(cfg: Config, store: Store, links: WorkerLinks, lease: Lease, now: float | None = None) -> dict[str, int]:
    """One pass over the outbox; counts of what it did."""
    now = time.time() if now is None else now
    did = {"retried": 0, "notified": 0, "dropped": 0}
    entries = reactions.pending(store)
    found = {j.id: j for j in store.get_jobs([e.job_id for e in entries])}
    for entry in entries:
        job = found.get(entry.job_id)
        if job is None:  # deleted
            did["dropped"] += reactions.drop(store, entry)
            continue
        if not job.state.terminal:
            continue
        if reactions.wants_retry(job):
            # The notification waits for the decision, so it can say "retried as ...".
            did["retried"] += retry(cfg, store, links, lease, job, now) is not None
        elif reactions.wants_notice(job):
            did["notified"] += announce(cfg, store, job, entry, now)
        else:
            did["dropped"] += reactions.drop(store, entry)
    return did


def start(app: Flask) -> threading.Thread:
    store: Store = app.extensions["pink.store"]
    lease: Lease = app.extensions["pink.lease"]
    links: WorkerLinks = app.extensions["pink.links"]
    cfg: Config = app.extensions["pink.config"]

    return repeat("reactor", cfg.notify.interval_s, lambda: react(cfg, store, links, lease))

