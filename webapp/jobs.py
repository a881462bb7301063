"""Job logic of the web servers: placement, submission (streamed upload), inputs, queue positions."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import BinaryIO

from pink import queueplan, scheduling
from pink.config import Config
from pink.fairshare import FairShare
from pink.errors import ArchiveTooLarge, ImageArchiveError, InputUnavailable, PinkError, TransferError
from pink.layers import held_prefix, parse_held
from pink.model import INPUT_ID, InputRecord, Job, User, WorkerInfo, new_job_id
from pink.lease import Lease
from pink.notify import check_request
from pink.states import CLAIMED, JobState
from pink.queues import QueueLoad
from pink.store import Store

from . import arrays
from .spec import JobSpec, SubmitError
from .transfer import WorkerLinks
from .upload import InputArchiveChecker, Unpacking, ValidatingReader

log = logging.getLogger(__name__)


def worker_views(workers: list[WorkerInfo], load: QueueLoad) -> list[scheduling.WorkerView]:
    views = []
    for w in workers:
        queue = load.worker(w.name)
        views.append(scheduling.WorkerView(
            name=w.name, alive=w.alive, drained=w.drained, gpus=len(w.gpus), cpus=w.cpus,
            images=frozenset(w.images),
            queued_gpu_seconds=queue.gpu_seconds,
            active_jobs=queue.jobs,
            memory_bytes=w.memory_bytes, datasets=frozenset(w.datasets),
            default_cpus=w.default_cpus, default_memory_bytes=w.default_memory_bytes,
            default_shm_bytes=w.default_shm_bytes, max_cpus=w.max_cpus, max_memory_bytes=w.max_memory_bytes,
            quarantined_gpus=len(w.quarantined) if w.alive else 0,
        ))
    return views


def list_datasets(workers: list[WorkerInfo]) -> list[dict]:
    """Every dataset some registered worker offers: its workers, and whether a job asking for it
    can be placed now (one of them is alive and not drained). Sorted by name."""
    names = sorted({d for w in workers for d in w.datasets})
    return [{"name": name,
             "workers": sorted(w.name for w in workers if name in w.datasets),
             "available": any(name in w.datasets and w.alive and not w.drained for w in workers)}
            for name in names]


def check_quota(cfg: Config, user: User, load: QueueLoad, upload_bytes: int, jobs: int = 1) -> None:
    """Refuse ``jobs`` more waiting jobs over the user's quota, and an upload over its quota."""
    waiting = load.waiting.get(user.name, 0)
    if waiting + jobs > cfg.web.quota_queued_jobs:
        more = f"; this array adds {jobs}" if jobs > 1 else ""
        raise SubmitError(429, f"you already have {waiting} jobs waiting (quota "
                               f"{cfg.web.quota_queued_jobs}{more}); wait for some to start or cancel them")
    if upload_bytes > cfg.web.quota_upload_bytes:
        raise SubmitError(413, f"the image is {upload_bytes} bytes; the per-upload quota is "
                               f"{cfg.web.quota_upload_bytes} bytes")



_uploaded: dict[str, frozenset[str]] = {}
_uploaded_lock = threading.Lock()


def uploaded_images(store: Store, user: User, fresh: bool = False) -> frozenset[str]:
    """Ids of the images ``user`` has uploaded: those of their jobs that received image bytes,
    and of their jobs that ran an image a worker held (a resubmit, a submit by reference), which
    were placed only because the user had uploaded it before; so deleting the job that carried
    the upload (``pink rm``) does not take the right away while later jobs of it remain.

    Remembered per process: the set only grows (an upload stays an upload), so an image found
    in it is always right; callers ask again with ``fresh`` when an image is not there, which
    reads the user's jobs (up to 1000) once. Submitting a held image or a thin archive is then
    one set lookup instead of reading every job of the user.
    """
    with _uploaded_lock:
        known = _uploaded.get(user.name)
    if known is not None and not fresh:
        return known
    found = frozenset(j.image_id for j in store.list_jobs(user.name, limit=1000) if j.image_id and _was_queued(j))
    with _uploaded_lock:
        merged = _uploaded[user.name] = found | _uploaded.get(user.name, frozenset())
    return merged


def _was_queued(job: Job) -> bool:
    """The job got its image: a checked upload, or an image the user was allowed to reuse (an
    upload that failed may carry an image id the client only claimed)."""
    return any(h.get("state") == JobState.QUEUED.value for h in job.history)


def may_reuse_image(store: Store, user: User, image_id: str) -> bool:
    """Only someone who has uploaded an image may run it again without sending it: an image
    id is not a secret, but the image's content may be."""
    return user.admin or image_id in uploaded_images(store, user) or \
        image_id in uploaded_images(store, user, fresh=True)


def held_layers(store: Store, user: User, worker: WorkerInfo, diff_ids: list[str] | tuple[str, ...]) -> int:
    """How many bottom layers of an image (its diff_ids) ``worker`` holds that ``user`` may
    leave out of an upload: those of images the user uploaded (as for reusing a whole image,
    knowing a layer's digest is not enough to get its content)."""
    held = parse_held(worker.layers)
    if user.admin:
        return held_prefix(diff_ids, held)
    shared = sorted(((held_prefix(diff_ids, {image: chains}), image) for image, chains in held.items()),
                    reverse=True)
    for fresh in (False, True):
        mine = uploaded_images(store, user, fresh=fresh)
        for n, image in shared:
            if n and image in mine:
                return n
    return 0


def _await_upload(store: Store, job: Job, wait_s: float) -> Job:
    """A retry found its first attempt still UPLOADING: the client gave up on it, so either that
    upload is about to fail on its web server, or the web server died and the janitor fails it
    once its lease ends. Wait for either, so the retry takes the key over instead of handing
    back a job that is about to fail."""
    deadline = time.monotonic() + wait_s
    while job.state is JobState.UPLOADING and time.monotonic() < deadline:
        time.sleep(0.5)
        job = store.get_job(job.id) or job
    return job


def upload_never_completed(job: Job) -> bool:
    return job.state is JobState.FAILED and not any(h["state"] == "QUEUED" for h in job.history)


def submit(
    cfg: Config, store: Store, links: WorkerLinks, lease: Lease, user: User, spec: JobSpec,
    body: BinaryIO, length: int | None, idempotency_key: str = "", retrying: Job | None = None,
) -> tuple[Job, bool]:
    """Place, record and upload one job. Returns ``(job, created)``; ``created`` is False when
    the idempotency key had already created a job (nothing is read or sent then). ``retrying``:
    the LOST job this one re-runs (webapp.reactor)."""
    refusal = check_request(cfg.notify, user, spec.notify, spec.webhook)
    if refusal:
        raise SubmitError(400, refusal)
    superseded = None
    if idempotency_key:
        if len(idempotency_key) > 200:
            raise SubmitError(400, "Idempotency-Key is longer than 200 characters")
        existing = store.job_for_idempotency_key(user.name, idempotency_key)
        if existing is not None and existing.state is JobState.UPLOADING:
            existing = _await_upload(store, existing, cfg.web.lease_ttl_s + 2 * cfg.web.janitor_interval_s)
        if existing is not None and upload_never_completed(existing):
            # The first try's upload broke (the client saw no answer): this retry takes over.
            superseded = existing
        elif existing is not None:
            # A retry of a request that already made its job: answer it, read nothing (an
            # array's jobs that the first try did not get to record are recorded now).
            if existing.array_id and spec.array is not None and existing.image_id:
                arrays.create_rest(store, existing, spec, worker_views(store.workers(), store.queue_load()))
            return existing, False
    reuse = spec.image_id and not length
    if not reuse and length is None:
        raise SubmitError(411, "send the image with a Content-Length header (the CLI and the web "
                               "page do); chunked uploads are not accepted")
    if not reuse and not length:
        raise SubmitError(400, "the request has no image: send the `docker save` tarball as the body, "
                               "or image=sha256:... for an image a worker holds")
    if spec.array_size > cfg.web.max_array_size:
        raise SubmitError(400, f"the array has {spec.array_size} jobs; at most {cfg.web.max_array_size} "
                               "(web.max_array_size)")
    load = store.queue_load()
    check_quota(cfg, user, load, length or 0, max(spec.array_size, 1))
    workers = store.workers()
    views = worker_views(workers, load)
    asks = dict(datasets=spec.datasets, cpus=spec.cpus, memory_bytes=spec.memory_bytes)
    refusal = scheduling.impossible(views, **asks)
    if refusal:
        raise SubmitError(400, f"no registered worker can run this job: {refusal}")
    if spec.input:
        # The input's files are on the workers it was uploaded to, and only its uploaders use them.
        holders = {r.worker for r in store.input_holders(spec.input) if user.name in r.users}
        if not holders:
            raise SubmitError(400, f"no worker holds input {spec.input} of yours: upload the input first "
                                   "(POST /api/v1/inputs), then submit the job with it")
        views = [v for v in views if v.name in holders]
    omitted = spec.omitted_layers
    if omitted and not reuse:
        # A thin archive: only a worker holding the layers it leaves out can load it.
        by_name = {w.name: w for w in workers}
        views = [v for v in views if held_layers(store, user, by_name[v.name], omitted) >= len(omitted)]
        if not views:
            raise SubmitError(409, f"no worker holds the {len(omitted)} layers this archive leaves out; "
                                   "send the whole archive")
    if reuse:
        if not may_reuse_image(store, user, spec.image_id):
            raise SubmitError(409, f"you have not uploaded image {spec.image_id} before; upload the tarball")
        holders = [v for v in views if spec.image_id in v.images]
        if not holders:
            which = f"that holds input {spec.input} " if spec.input else ""
            raise SubmitError(409, f"no worker {which}holds image {spec.image_id}; upload the tarball")
        views = holders
    chosen = scheduling.choose_worker(views, spec.gpus, spec.image_id or None, **asks)
    if chosen is None:
        which = f"holding input {spec.input} " if spec.input else ""
        raise SubmitError(503, f"no worker {which}can take this job now: "
                               + scheduling.explain_no_worker(views, spec.gpus, **asks))
    resources = scheduling.job_resources(chosen, spec.gpus, spec.cpus, spec.memory_bytes, spec.shm_bytes)
    assert isinstance(resources, scheduling.Resources)  # choose_worker picks only workers where it fits
    worker = next(w for w in workers if w.name == chosen.name)
    now = time.time()
    job = Job(
        id=new_job_id(now), user=user.name, worker=worker.name,
        state=JobState.QUEUED if reuse else JobState.UPLOADING,
        gpus=spec.gpus, timeout_s=spec.timeout_s, output=spec.output, priority=spec.priority,
        user_priority=spec.user_priority, name=spec.name, image_id=spec.image_id, created_at=now, updated_at=now,
        history=({"state": "QUEUED" if reuse else "UPLOADING", "at": now},),
        resubmit_of=spec.resubmit_of, idempotency_key=idempotency_key,
        command=spec.array_args[0] if spec.array_args else spec.command, entrypoint=spec.entrypoint, env=dict(spec.env), workdir=spec.workdir,
        datasets=spec.datasets, input=spec.input, cpus=resources.cpus, memory_bytes=resources.memory_bytes,
        shm_bytes=resources.shm_bytes, retry_lost=spec.retry_lost, retry_of=spec.retry_of,
        notify=spec.notify or (user.notify_all and bool(user.email) and cfg.notify.email_enabled),
        webhook=spec.webhook, **arrays.first_job_fields(spec, now),
    )
    try:
        job, created = store.create_job(job, upload_lease=0 if reuse else lease.current(), supersede=superseded,
                                        retrying=retrying)
    except InputUnavailable as exc:
        raise SubmitError(409, str(exc)) from None
    if not created:
        return job, created
    if not reuse:
        max_plain = min(cfg.web.max_upload_bytes, cfg.web.quota_upload_bytes)
        job = _upload(store, links, worker, job, body, length or 0, omitted, max_plain)
    if spec.array is not None and job.state is JobState.QUEUED:
        # The image is on the job's worker now: place the rest there or where it is held too.
        allowed = {v.name for v in views}
        fresh = [v for v in worker_views(store.workers(), store.queue_load()) if v.name in allowed]
        arrays.create_rest(store, job, spec, fresh)
    return job, True


def _upload(store: Store, links: WorkerLinks, worker: WorkerInfo, job: Job, body: BinaryIO, length: int,
            omitted: tuple[str, ...] = (), max_plain: int | None = None) -> Job:
    link = links.get(worker)
    # Layer files may be absent only for the bottom layers the client said it leaves out, which
    # were checked above to be held by this worker, for this user, as one chain. A compressed
    # archive is checked as the plain tar inside it, which may be at most max_plain bytes.
    reader = ValidatingReader(body, length, checker=Unpacking(max_plain_bytes=max_plain),
                              present_diff_ids=omitted)
    log.info("job %s: receiving %d bytes for %s (user %s)", job.id, length, worker.name, job.user)
    started = time.monotonic()
    try:
        link.upload(job.array_id or job.id, reader, length)
    except ImageArchiveError as exc:
        _fail_upload(store, link, job, str(exc))
        raise SubmitError(413 if isinstance(exc, ArchiveTooLarge) else 400, str(exc)) from None
    except TransferError as exc:
        _fail_upload(store, link, job, f"could not copy the image to worker {worker.name}: {exc}")
        raise SubmitError(503, f"{exc}; try again") from None
    except BaseException as exc:  # client gone, worker killed: never leave a half upload behind
        _fail_upload(store, link, job, f"upload interrupted ({type(exc).__name__})")
        raise
    info = reader.info
    assert info is not None  # the reader finished, so the checker ran
    if omitted and info.diff_ids[:len(omitted)] != omitted:
        reason = ("the archive's bottom layers are not the omitted_layers it was sent with; "
                  "send the whole archive")
        _fail_upload(store, link, job, reason)
        raise SubmitError(400, reason)
    seconds = time.monotonic() - started
    log.info("job %s: %d bytes to %s in %.1fs (%.0f MB/s)", job.id, length, worker.name, seconds,
             length / max(seconds, 1e-6) / 1e6)
    queued = store.transition(job, JobState.QUEUED, image_id=info.config_digest, image_bytes=length)
    if queued is None:  # cancelled while uploading
        current = store.get_job(job.id) or job
        _remove_quietly(lambda: link.remove_upload(job.array_id or job.id), f"job {job.id}")
        return current
    return queued


def _fail_upload(store: Store, link, job: Job, reason: str) -> None:
    _remove_quietly(lambda: link.remove_upload(job.array_id or job.id), f"job {job.id}")
    try:
        store.transition(job, JobState.FAILED, reason=reason)
    except PinkError:
        # The janitor fails stale UPLOADING records later; the inbox file is already gone.
        log.warning("job %s: could not record the failed upload", job.id, exc_info=True)


def _remove_quietly(remove, what: str) -> None:
    """Remove a partial upload from a worker's inbox, logging a failure: the worker's sweep
    removes the files of jobs that are over and old partial inputs."""
    try:
        remove()
    except (PinkError, OSError):
        log.warning("%s: could not remove the partial upload", what, exc_info=True)


def input_workers(store: Store, user: User, input_id: str) -> list[str]:
    """The workers in service that hold the input for ``user`` (who uploaded it there)."""
    holders = {r.worker for r in store.input_holders(input_id) if user.name in r.users}
    return sorted(w.name for w in store.workers() if w.name in holders and w.alive and not w.drained)


def upload_input(cfg: Config, store: Store, links: WorkerLinks, user: User, spec: JobSpec, body: BinaryIO,
                 length: int | None, expected: str = "") -> InputRecord:
    """Stream an input (a plain tar) to the worker a job with ``spec`` would be placed on, checked
    as a safe tar and hashed on the way, and record that the worker holds it for ``user``.

    ``expected``: the id the client computed ("" if it did not say); another one is refused."""
    if length is None:
        raise SubmitError(411, "send the input with a Content-Length header; chunked uploads are not accepted")
    if not length:
        raise SubmitError(400, "the request has no input: send the input's tar archive as the body")
    if length > cfg.web.quota_input_bytes:
        raise SubmitError(413, f"the input is {length} bytes; the per-input quota is "
                               f"{cfg.web.quota_input_bytes} bytes")
    if expected and not INPUT_ID.fullmatch(expected):
        raise SubmitError(400, "sha256 must look like sha256:<64 hex digits> (the input's id)")
    workers = store.workers()
    views = worker_views(workers, store.queue_load())
    asks = dict(datasets=spec.datasets, cpus=spec.cpus, memory_bytes=spec.memory_bytes)
    refusal = scheduling.impossible(views, **asks)
    if refusal:
        raise SubmitError(400, f"no registered worker can run a job with this input: {refusal}")
    chosen = scheduling.choose_worker(views, spec.gpus, spec.image_id or None, **asks)
    if chosen is None:
        raise SubmitError(503, "no worker can take this input now: "
                               + scheduling.explain_no_worker(views, spec.gpus, **asks))
    worker = next(w for w in workers if w.name == chosen.name)
    link = links.get(worker)
    upload_id = os.urandom(10).hex()
    reader = ValidatingReader(body, length, checker=InputArchiveChecker(expected))
    log.info("input upload %s: receiving %d bytes for %s (user %s)", upload_id, length, worker.name, user.name)
    try:
        link.upload_input(upload_id, reader, length)
        assert reader.info is not None  # the reader finished, so the checker ran
        link.commit_input(upload_id, reader.info.input_id)
    except ImageArchiveError as exc:
        _remove_quietly(lambda: link.remove_input_part(upload_id), f"input upload {upload_id}")
        raise SubmitError(400, str(exc)) from None
    except TransferError as exc:
        _remove_quietly(lambda: link.remove_input_part(upload_id), f"input upload {upload_id}")
        raise SubmitError(503, f"could not copy the input to worker {worker.name}: {exc}; try again") from None
    except BaseException:  # client gone, worker killed: never leave a half upload behind
        _remove_quietly(lambda: link.remove_input_part(upload_id), f"input upload {upload_id}")
        raise
    log.info("input upload %s: %s is on %s", upload_id, reader.info.input_id, worker.name)
    return store.record_input(worker.name, reader.info.input_id, length, user.name)


def queue_info(store: Store, jobs: list[Job], fairshare: FairShare) -> dict[str, tuple[int, str, float | None]]:
    """Queue position, why it waits and when it starts at the latest (None: unknown), for every
    QUEUED job in ``jobs``, ordered as the worker orders them (fair share and quotas from
    ``fairshare``)."""
    waiting = {j.worker for j in jobs if j.state is JobState.QUEUED}
    if not waiting:
        return {}
    workers = {w.name: w for w in store.workers() if w.name in waiting}
    queues = store.queue_mirror.queues(waiting)
    out: dict[str, tuple[int, str, float | None]] = {}
    now = time.time()
    for name in waiting:
        entries = queues.get(name, [])
        worker = workers.get(name)
        if worker is None or not worker.alive:
            for e in entries:
                out[e.job_id] = (0, f"worker {name} is down; the job waits for it to come back", None)
            continue
        running = [queueplan.running_entry(e, now) for e in entries if e.state in CLAIMED]
        queued = [e for e in entries if e.state is JobState.QUEUED]
        taken = fairshare.taken(queued)
        planned = queueplan.plan_queue(queued, running, queueplan.capacity_of(worker),
                                       array_running=taken.array_running(),
                                       estimate_from=None if worker.drained else now,
                                       **fairshare.order_args(taken))
        for d in planned.decisions:
            if worker.drained:
                out[d.job_id] = (d.position, f"worker {name} is drained; the job waits until it is undrained", None)
            else:
                out[d.job_id] = (d.position, d.reason or "starting", planned.starts_by.get(d.job_id))
    return out


def public_jobs(store: Store, jobs: list[Job], fairshare: FairShare, planned: bool = True) -> list[dict]:
    """The jobs' JSON; ``planned``: with :func:`queue_info` (else null and "")."""
    positions = queue_info(store, jobs, fairshare) if planned else {}
    result = []
    for job in jobs:
        data = job.public()
        position, reason, starts_by = positions.get(job.id, (None, "", None))
        data["queue_position"] = position
        data["waiting_reason"] = reason
        data["estimated_start_at"] = starts_by
        result.append(data)
    return result
