"""Containers made ahead: while the job slots are busy, a thread creates (never starts) the
containers of the CPU-only jobs next in this worker's queue, so that a freed slot only claims
its next job and starts its container.

At most once holds because only a run starts a container, and only after its claim (the CAS
QUEUED -> STARTING) succeeded: a container made ahead is a file of the engine, nothing more.

- Each container made ahead carries the job id (name ``pink-<job>``, label ``pink.job``) and
  the revision of the QUEUED record it was made from (label ``pink.ahead``). The daemon claims
  with that very record when it still holds one; a claim that wins at that revision proves that
  the container matches the job, and the run starts it at once. Otherwise (the record changed,
  or after a restart, when nobody knows which record a container came from) the run removes a
  container made ahead that has not started and creates the job's container afresh.
- A job that leaves the queue (cancelled, deleted, failed, claimed elsewhere) or drops out of
  the next ones has its container removed by the reaper; the sweep of orphans removes the
  containers made ahead of jobs that are no longer queued here (after a restart too).
- Jobs that ask for GPUs get none: their GPUs are chosen by the claim.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Iterable

import docker.errors

from pink.config import WorkerConfig
from pink.errors import PinkError
from pink.model import Job
from pink.states import JobState
from pink.store import Store

from .container import SpecError, create_container
from .export import TRANSIENT_ENGINE_ERRORS
from .inputs import Inputs
from .reaper import Reaper

log = logging.getLogger(__name__)

#: A job whose container could not be made ahead (its image is still loading, say) is tried
#: again after this many seconds; meanwhile its claim creates the container, as without.
RETRY_S = 10.0


@dataclass(frozen=True)
class Made:
    """A container made ahead, and the job record (revision) it was made from."""

    job: Job
    container: object


class Ahead:
    def __init__(self, engine: docker.DockerClient, store: Store, cfg: WorkerConfig, runtime: str,
                 inputs: Inputs, reaper: Reaper, stop: threading.Event) -> None:
        self.engine, self.store, self.cfg, self.runtime, self.inputs = engine, store, cfg, runtime, inputs
        self.reaper = reaper
        self._stop = stop
        self._lock = threading.Condition()
        #: job id -> its container made ahead.
        self.made: dict[str, Made] = {}
        #: The jobs to make containers for, in the order they will start.
        self._wanted: list[str] = []
        #: The job whose container the thread is creating now.
        self._making = ""
        self._failed: dict[str, float] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "Ahead":
        self._thread = threading.Thread(target=self._main, name="ahead", daemon=True)
        self._thread.start()
        return self

    def want(self, next_jobs: Iterable[str], queued: set[str]) -> None:
        """The daemon's plan: ``next_jobs`` start next, in this order (at most the depth, CPU-only);
        ``queued`` are the jobs QUEUED here now. Containers of the others go."""
        wanted = list(next_jobs)
        keep = set(wanted)
        with self._lock:
            self._wanted = wanted
            gone = [self.made.pop(j) for j in list(self.made) if j not in keep]
            for job_id in list(self._failed):
                if job_id not in queued:
                    del self._failed[job_id]
        for made in gone:
            self.reaper.remove(made.container, f"job {made.job.id} (made ahead, no longer next)")
        if wanted:
            self._wake.set()

    def take(self, job_id: str) -> Made | None:
        """The container made ahead for ``job_id``, which the daemon is about to claim (waits
        while the thread is creating it); none will be made for it after this call."""
        with self._lock:
            if job_id in self._wanted:
                self._wanted.remove(job_id)
            while self._making == job_id:
                self._lock.wait()
            return self.made.pop(job_id, None)

    def retry(self) -> None:
        """Try again for the jobs whose container could not be made (an image came)."""
        with self._lock:
            self._failed.clear()
        self._wake.set()

    def holds(self, job_id: str) -> bool:
        """Whether ``job_id``'s container is made ahead here, or being made now."""
        with self._lock:
            return job_id in self.made or self._making == job_id

    def _next(self) -> str:
        with self._lock:
            now = time.monotonic()
            for job_id in self._wanted:
                if job_id not in self.made and now >= self._failed.get(job_id, 0.0):
                    self._making = job_id
                    return job_id
            return ""

    def _main(self) -> None:
        while not self._stop.is_set():
            job_id = self._next()
            if not job_id:
                self._wake.wait(RETRY_S)
                self._wake.clear()
                continue
            made = None
            try:
                made = self._make(job_id)
            finally:
                with self._lock:
                    self._making = ""
                    if made is not None:
                        # Taken meanwhile: take() hands it over; dropped: the next want() removes it.
                        self.made[job_id] = made
                    elif job_id in self._wanted:
                        self._failed[job_id] = time.monotonic() + RETRY_S
                    self._lock.notify_all()

    def _make(self, job_id: str) -> Made | None:
        try:
            job = self.store.get_job(job_id)
            if job is None or job.state is not JobState.QUEUED or job.worker != self.cfg.name or job.gpus:
                return None
            container = create_container(self.engine, self.cfg, job, self.runtime, self.inputs, ahead=True)
            log.info("job %s: container made ahead", job_id)
            return Made(job, container)
        except (PinkError, SpecError, docker.errors.DockerException, *TRANSIENT_ENGINE_ERRORS) as exc:
            # The image is not loaded yet, the engine or etcd is away, a dataset is missing: the
            # claim creates the container as without this, and reports what is wrong.
            log.info("job %s: no container made ahead: %s", job_id, exc)
            return None
        except Exception:  # noqa: BLE001 - a bug here must not stop the thread; the claim creates
            log.exception("job %s: no container made ahead", job_id)
            return None
