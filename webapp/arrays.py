"""Job arrays on the web servers: the jobs after the first, their placement, and the array as
the API and the pages show it (pink.arrays has the syntax, pink.arraystore the keys).

An array is submitted like one job: its first job is placed, recorded and uploaded as any job
(the upload is named after the array, so its worker's jobs of the array share it). Once the
image is there, the other jobs are recorded QUEUED in a few transactions and spread by load
over the workers that may run them and hold the image: the first job's worker, and any other
that reports the image id. Each job is then a job like any other: claimed at most once, and
the array's ``%N`` limit is kept by run slots taken in the claim transaction.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import Any

from pink import arraystore, scheduling
from pink.arrays import counts
from pink.errors import InputUnavailable
from pink.model import Job, new_job_id
from pink.states import JobState
from pink.store import MAX_TXN_OPS, Store

from .spec import JobSpec, SubmitError


def first_job_fields(spec: JobSpec, now: float) -> dict[str, Any]:
    """The array fields of an array's first job (none for a single job; those of the array it
    joins for a retry of a LOST job of an array)."""
    if spec.joins_array:
        return dict(zip(("array_id", "array_index", "array_size", "array_limit"), spec.joins_array))
    if spec.array is None:
        return {}
    return dict(array_id=new_job_id(now), array_index=spec.array.indexes[0], array_size=spec.array_size,
                array_limit=spec.array.limit)


def place(views: list[scheduling.WorkerView], first: Job, count: int) -> dict[str, int]:
    """Workers for ``count`` more jobs like ``first``: those of ``views`` that hold its image, and
    its own worker (which has the upload), each job on the least loaded of them counting the
    ones placed before it. Returns worker name -> how many; a job no worker takes now (all
    drained or down since) stays with the first job's worker, where it waits like any job."""
    holders = [v for v in views if first.image_id in v.images or v.name == first.worker]
    asks = dict(datasets=first.datasets, cpus=first.cpus, memory_bytes=first.memory_bytes)
    placed: dict[str, int] = {}
    for _ in range(count):
        chosen = scheduling.choose_worker(holders, first.gpus, first.image_id, **asks)
        name = chosen.name if chosen is not None else first.worker
        placed[name] = placed.get(name, 0) + 1
        if chosen is not None:
            holders = [dataclasses.replace(v, active_jobs=v.active_jobs + 1,
                                           queued_gpu_seconds=v.queued_gpu_seconds + first.gpus * first.timeout_s)
                       if v.name == name else v for v in holders]
    return placed


def job_id_of(array_id: str, index: int) -> str:
    """The id of the array's job ``index`` (after the first): the array's time, then a hash of
    the two, so that creating it twice (a retried submission) finds it there instead."""
    return array_id[:12] + hashlib.sha256(f"{array_id}/{index}".encode()).hexdigest()[:8]


def create_rest(store: Store, first: Job, spec: JobSpec, views: list[scheduling.WorkerView]) -> list[Job]:
    """Record the array's other jobs, QUEUED (``first`` is, with its image), spread over
    ``views`` that hold the image (:func:`place`). Those recorded before (by an earlier try of
    a retried submission) are left as they are."""
    assert spec.array is not None
    present = {j.array_index for j in arraystore.array_jobs(store, first.array_id)}
    indexes = [i for i in spec.array.indexes[1:] if i not in present]
    now = time.time()
    jobs: list[Job] = []
    by_name = {v.name: v for v in views}
    for name, n in place(views, first, len(indexes)).items():
        resources = scheduling.Resources(first.cpus, first.memory_bytes, first.shm_bytes)
        if name != first.worker:  # resolved for that worker, as for a job placed there
            found = scheduling.job_resources(by_name[name], spec.gpus, spec.cpus, spec.memory_bytes, spec.shm_bytes)
            resources = found if isinstance(found, scheduling.Resources) else resources
        for _ in range(n):
            index = indexes[len(jobs)]
            jobs.append(dataclasses.replace(
                first, id=job_id_of(first.array_id, index), worker=name, state=JobState.QUEUED, array_index=index,
                command=spec.array_args[index] if spec.array_args else first.command,
                # A microsecond apart: queues start an array's jobs in the order of their indexes.
                created_at=now + len(jobs) * 1e-6, updated_at=now, history=({"state": "QUEUED", "at": now},),
                idempotency_key="", image_bytes=0, cpus=resources.cpus, memory_bytes=resources.memory_bytes,
                shm_bytes=resources.shm_bytes, write_id="", mod_revision=0))
    if first.input:
        # Each must find its worker holding the input, as a single job does (Store.create_job).
        try:
            return [store.create_job(j)[0] for j in jobs]
        except InputUnavailable as exc:
            raise SubmitError(409, f"{exc}; the jobs of array {first.array_id} recorded so far stay") from None
    return arraystore.create_jobs(store, jobs, MAX_TXN_OPS)


def summary(array_id: str, jobs: list[Job]) -> dict[str, Any]:
    """An array as the API shows it, without its jobs."""
    first = jobs[0]
    return {
        "id": array_id, "user": first.user, "name": first.name, "size": first.array_size,
        "limit": first.array_limit, "image_id": first.image_id,
        "created_at": min(j.created_at for j in jobs),
        "counts": counts(j.state.value for j in jobs),
        "ended": all(j.state.terminal for j in jobs),
        "workers": sorted({j.worker for j in jobs}),
    }


def fold(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A list of jobs (as the API shows them, newest first) with each array's jobs in one row,
    where its newest job was: ``{"array": {"id", "name", "size", "limit", "counts", ...}}``;
    single jobs as ``{"job": ...}``."""
    rows: list[dict[str, Any]] = []
    seen: dict[str, dict[str, Any]] = {}
    for job in jobs:
        array_id = job.get("array_id") or ""
        if not array_id:
            rows.append({"job": job})
            continue
        row = seen.get(array_id)
        if row is None:
            row = seen[array_id] = {"array": {"id": array_id, "name": job["name"], "user": job["user"],
                                              "size": job["array_size"], "limit": job["array_limit"],
                                              "created_at": job["created_at"], "counts": {}, "shown": 0}}
            rows.append(row)
        info = row["array"]
        info["counts"][job["state"]] = info["counts"].get(job["state"], 0) + 1
        info["shown"] += 1
        info["created_at"] = min(info["created_at"], job["created_at"])
    return rows


__all__ = ["first_job_fields", "place", "create_rest", "summary", "fold"]
