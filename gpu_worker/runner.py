"""Running one claimed job on Docker (DESIGN §2.3-2.4), one thread per job.

Order, as in docker-py and buildbot: load the image (an open file, never bytes) -> create
``pink-<job>`` (datasets and the input bound read-only; an input is extracted for its first
job on this worker) -> start -> follow logs -> wait with the timeout and the disk cap ->
export through the compressor -> record -> hand the container to the reaper. Every state
change is a CAS; when one loses, the job was cancelled or marked LOST by someone else, and the
run stops.

The same code adopts a job after a worker restart: it looks at the container first, so a
container that has started is never started again. A run may get its container made ahead
(gpu_worker.ahead). The archive is made by gpu_worker.outputs.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import docker
import docker.errors
import docker.types
import requests

from pink import metrics
from pink.config import WorkerConfig
from pink.errors import PinkError
from pink.model import Job, format_size, output_expiry
from pink.states import JobState
from pink.store import Store

from . import gpustats
from .container import SpecError, ahead_revision, container_name, create_container
from .export import CHUNK, TRANSIENT_ENGINE_ERRORS, OutputTooLarge, open_for_transfer
from .inputs import Inputs
from .outputs import export_output
from .preload import Preload
from .reaper import Reaper, remove_container
from .untag import without_tags

log = logging.getLogger(__name__)

NEVER_STARTED = "0001-01-01T00:00:00Z"


class Abort(Exception):
    """The job left our hands (cancelled, LOST) or failed permanently; stop this run."""


@dataclass
class JobRun:
    """One job being executed by this worker; the daemon reads ``done`` and ``gpu_indices``."""

    job: Job
    cfg: WorkerConfig
    store: Store
    engine: docker.DockerClient
    runtime: str
    #: This worker's inputs, extracted for the jobs that name one.
    inputs: Inputs
    #: Set by the daemon when the engine has failed this job for too long: fail, do not wait.
    give_up_on_engine: bool = False
    #: Set when the run stopped because the engine was unreachable (the daemon resumes it).
    engine_trouble: bool = False
    #: The daemon claimed this job from QUEUED just now: no container of it can exist yet.
    fresh: bool = False
    #: The image being loaded while it was uploaded, if any (wait for it instead of loading).
    preload: Preload | None = None
    #: A container made ahead from the very record this run's claim won with (gpu_worker.ahead):
    #: it matches the job and never started; the run starts it without looking.
    ahead: object | None = None
    #: Removes the container once the job is over (off this run's path).
    reaper: Reaper | None = None
    #: The image's size, when the daemon knows it (else the run asks the engine).
    image_size: int | None = None
    #: Set when this run loaded the image into the engine (the image GC may remove it later).
    loaded_image: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)
    #: Set by the daemon when a cancel moved the running job to EXPORTING (webapp/cancel.py);
    #: then ``ended``, how the container ended, is recorded with the job's end.
    stop: threading.Event = field(default_factory=threading.Event)
    ended: dict = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    @property
    def gpu_indices(self) -> tuple[int, ...]:
        return self.job.gpu_indices

    def start(self) -> None:
        self.thread = threading.Thread(target=self._main, name=f"job-{self.job.id}", daemon=True)
        self.thread.start()

    def update(self, new: JobState, **changes) -> Job:
        """CAS ``self.job`` to ``new``; on a lost race, stop the run."""
        moved = self.store.transition(self.job, new, **changes)
        if moved is None:
            current = self.store.get_job(self.job.id)
            raise Abort(f"job changed under us (now {current.state if current else 'deleted'})")
        self.job = moved
        return moved

    # ----- paths -------------------------------------------------------------------------------
    @property
    def inbox_file(self) -> Path:
        # The jobs of an array share one upload, named after the array (the daemon's sweep removes it).
        return Path(self.cfg.inbox) / f"{self.job.array_id or self.job.id}.tar"

    @property
    def archive_file(self) -> Path:
        return Path(self.cfg.outbox) / f"{self.job.id}{self.cfg.archive_suffix}"

    @property
    def log_file(self) -> Path:
        return Path(self.cfg.outbox) / f"{self.job.id}.log"

    # ----- the run -------------------------------------------------------------------------------
    def _main(self) -> None:
        container = None
        try:
            container = self.ahead if self.ahead is not None else None if self.fresh else self._container()
            self.fresh = False  # a resumed run looks again
            if self.job.state is JobState.STARTING:
                container = self._start(container)
            exited = self.job.state is JobState.RUNNING and self._run(container)
            if self.job.state is JobState.EXPORTING:
                self._export_and_finish(container, exited)
        except Abort as exc:
            log.info("job %s: run stopped: %s", self.job.id, exc)
            self._stop(container)
        except PinkError as exc:
            # etcd unreachable for longer than the retry deadline: leave the container alone;
            # the daemon adopts the job again when etcd answers.
            log.warning("job %s: store unavailable, will resume: %s", self.job.id, exc)
            return
        except TRANSIENT_ENGINE_ERRORS as exc:
            # The engine is restarting or overloaded. Resuming is safe: the next attempt looks
            # at the container first and never starts one twice.
            if not self.give_up_on_engine:
                self.engine_trouble = True
                log.warning("job %s: docker engine unavailable, will resume: %s", self.job.id, exc)
                return
            self._fail(f"the worker's docker engine stayed unavailable: {exc}")
            self._stop(container)
        except docker.errors.NotFound:
            self._fail("the job's container disappeared (removed by hand, or its docker engine was reset)")
        except Exception as exc:  # a bug or a permanent engine failure: record it, never retry
            log.exception("job %s: run failed", self.job.id)
            self._fail(f"worker error: {type(exc).__name__}: {exc}")
            self._stop(container)
        finally:
            self.done.set()
        self._cleanup(container)

    def _container(self):
        try:
            return self.engine.containers.get(container_name(self.job.id))
        except docker.errors.NotFound:
            return None

    def _load_image(self) -> None:
        if self.preload is not None:
            self.preload.done.wait()
        try:
            self.engine.images.get(self.job.image_id)
            return  # already here (a resubmit, loaded during the upload, or before a crash)
        except docker.errors.ImageNotFound:
            pass
        if not self.inbox_file.exists():
            # A resubmit placed just as the image GC removed the image (gpu_worker.imagegc).
            raise Abort(self._fail(f"image {self.job.image_id} is no longer held by worker {self.cfg.name} "
                                   f"(removed to free disk space, or by hand): submit the tarball again"))
        with self.inbox_file.open("rb") as f:
            try:
                images = self.engine.images.load(without_tags(iter(lambda: f.read(CHUNK), b"")))
            except docker.errors.APIError as exc:
                raise Abort(self._fail(f"docker could not load the image: {exc.explanation or exc}")) from None
        if self.job.image_id not in {i.id for i in images}:
            raise Abort(self._fail(f"the archive did not load image {self.job.image_id}"))
        self.loaded_image = True

    def _start(self, container):
        if container is not None and container is not self.ahead:
            container.reload()
            if ahead_revision(container) is not None and self._never_started(container):
                # Made ahead, but from which record is not known here (a restart, or a record
                # that changed since): it never started, so remove it and create afresh.
                self._remove_made_ahead(container)
                container = None
        if container is None:
            container = self._create_or_load()
        started = None
        if container is self.ahead or self._never_started(container):
            if self.cancel.is_set():
                raise Abort("cancelled before start")
            try:
                container.start()
            except docker.errors.APIError as exc:  # e.g. the image's command does not exist
                raise Abort(self._fail(f"docker could not start the container: {exc.explanation or exc}")) from None
            started = time.time()  # the engine's StartedAt is a moment before: no inspect for it
            log.info("job %s: started container %s", self.job.id, container.short_id)
        else:
            log.info("job %s: adopting container %s that already started", self.job.id, container.short_id)
            started = _docker_time(container.attrs["State"]["StartedAt"])
        size = self.image_size or self.engine.api.inspect_image(self.job.image_id).get("Size") or 0  # not the upload's
        metrics.job_dispatched(self.update(JobState.RUNNING, started_at=started, image_size=int(size)))
        return container

    @staticmethod
    def _never_started(container) -> bool:
        return container.attrs.get("State", {}).get("StartedAt", NEVER_STARTED) == NEVER_STARTED

    def _remove_made_ahead(self, container) -> None:
        log.info("job %s: removing container %s made ahead; creating it afresh", self.job.id, container.short_id)
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass  # the reaper or the sweep was first

    def _create_or_load(self):
        # Create first: the image is usually here already (loaded while it was uploaded, or a
        # resubmit), and a start is what a short job waits for.
        try:
            return self._create()
        except docker.errors.ImageNotFound:
            self._load_image()
            return self._create()
        except docker.errors.APIError as exc:
            found = self._container() if exc.status_code == 409 else None
            if found is None or ahead_revision(found) is None or not self._never_started(found):
                raise
            # The name is taken by a container made ahead that is being removed (no longer next).
            self._remove_made_ahead(found)
            return self._create()

    def _create(self):
        try:
            return create_container(self.engine, self.cfg, self.job, self.runtime, self.inputs)
        except SpecError as exc:
            raise Abort(self._fail(str(exc))) from None

    def _run(self, container) -> bool:
        """Follow the running job to its end (or stop it); whether its container exited."""
        logger = threading.Thread(target=self._copy_logs, args=(container,), daemon=True)
        logger.start()
        exited = threading.Event()
        result: dict = {}

        def wait() -> None:
            try:
                result.update(container.wait(), at=time.time())
            except (docker.errors.APIError, requests.RequestException) as exc:
                result["error"] = exc
            exited.set()

        threading.Thread(target=wait, daemon=True).start()
        # The disk cap: a helper thread asks docker for the writable layer's size, which may
        # take a while on a large layer, so the loop below keeps watching cancel and timeout.
        over_disk, stop_watching = threading.Event(), threading.Event()
        sampler = gpustats.JobSampler(self.job.gpu_indices, self.cfg.gpu_sample_interval_s, stop_watching).start()
        if self.cfg.max_disk_bytes:
            threading.Thread(target=self._watch_disk, args=(container, over_disk, stop_watching),
                             name=f"disk-{self.job.id}", daemon=True).start()
        started = self.job.started_at or time.time()
        deadline = started + self.job.timeout_s
        outcome, reason = JobState.SUCCEEDED, ""
        try:
            while not exited.is_set():
                if self.cancel.is_set():
                    raise Abort("cancelled or lost")
                if self.stop.is_set():
                    outcome, reason = JobState.CANCELLED, self.job.reason
                elif time.time() >= deadline:
                    outcome, reason = JobState.TIMED_OUT, f"stopped after its timeout of {self.job.timeout_s} s"
                elif over_disk.is_set():
                    outcome, reason = JobState.FAILED, disk_reason(self.cfg.max_disk_bytes)
                else:
                    exited.wait(min(0.5, max(deadline - time.time(), 0.01)))
                    continue
                # SIGTERM, SIGKILL after the grace; what it wrote so far is exported.
                log.info("job %s: stopping: %s", self.job.id, reason)
                container.stop(timeout=int(self.cfg.stop_grace_s))
                exited.wait(30)
                break
        finally:
            stop_watching.set()
        self._wait_for_logs(logger)
        if outcome is JobState.SUCCEEDED and result.get("StatusCode") == 0:
            code, finished = 0, result["at"]  # the wait told all a success needs: no inspect
        else:
            container.reload()
            code = container.attrs["State"].get("ExitCode")
            finished = _docker_time(container.attrs["State"].get("FinishedAt", "")) or time.time()
        if outcome is JobState.SUCCEEDED and code != 0:
            outcome = JobState.FAILED
            reason = exit_reason(code, container.attrs["State"].get("OOMKilled", False), self.job.memory_bytes)
        ended = dict(exit_code=code, finished_at=finished, gpu_seconds=round(len(self.job.gpu_indices) * max(finished - started, 0), 3), **sampler.fields())
        if self._exports_nothing():
            # No archive to make: the end is recorded at once, one transaction fewer per job.
            moved = self.store.transition(self.job, outcome, outcome=outcome.value, reason=reason, **ended,
                                          **self._end_fields())
        else:
            moved = self.store.transition(self.job, JobState.EXPORTING, outcome=outcome.value, reason=reason, **ended)
        if moved is None:
            # A cancel moved it to EXPORTING first (perhaps racing the job's own end): export.
            current = self.store.get_job(self.job.id)
            if current is None or current.state is not JobState.EXPORTING:
                raise Abort(f"job changed under us (now {current.state if current else 'deleted'})")
            moved, self.ended = current, ended
        self.job = moved
        if moved.state.terminal:
            log.info("job %s: %s (exit %s, no output archive)", self.job.id, moved.state, moved.exit_code)
        return exited.is_set()

    def _disk_used(self, container) -> int | None:
        """The size of the job's writable layer in bytes (docker's SizeRw), or None when docker
        did not tell: a check that fails is skipped, and never ends or suspends the job."""
        try:
            # docker-py's inspect_container() cannot ask for sizes; the list can.
            found = self.engine.api.containers(all=True, filters={"id": container.id}, size=True)
        except (docker.errors.APIError, requests.RequestException) as exc:  # the wait sees to those
            log.info("job %s: could not check its disk use: %s", self.job.id, exc)
            return None
        except Exception:  # noqa: BLE001 - a bug here must not end the job either
            log.exception("job %s: could not check its disk use", self.job.id)
            return None
        size = next((c.get("SizeRw") for c in found or () if c.get("Id") == container.id), None)
        return size if isinstance(size, int) and not isinstance(size, bool) else None

    def _watch_disk(self, container, over: threading.Event, stop: threading.Event) -> None:
        """Every worker.disk_check_interval_s until ``stop``: set ``over`` once the job's
        writable layer is larger than worker.max_disk_bytes."""
        while not stop.wait(self.cfg.disk_check_interval_s):
            used = self._disk_used(container)
            if used is not None and used > self.cfg.max_disk_bytes:
                log.info("job %s: its filesystem holds %d bytes, more than worker.max_disk_bytes (%d)",
                         self.job.id, used, self.cfg.max_disk_bytes)
                over.set()
                return

    def _log_bytes(self) -> int:
        return self.log_file.stat().st_size if self.log_file.exists() else 0

    def _wait_for_logs(self, logger: threading.Thread) -> None:
        """Let the log copy finish: Docker sends what a stopped container printed at its own
        pace (some 50,000 lines a second), so wait as long as the copy moves on."""
        copied = -1
        while logger.is_alive() and self._log_bytes() > copied:
            copied = self._log_bytes()
            logger.join(10)
        if logger.is_alive():
            log.warning("job %s: the log copy stopped moving; its log may miss the end", self.job.id)

    def _copy_logs(self, container) -> None:
        """Copy the job's log into the outbox, cut at worker.max_log_bytes."""
        # Rewritten from the engine's log each time, so an adopted job's log file is complete.
        room, last = self.cfg.max_log_bytes, b""
        with open_for_transfer(self.log_file) as out:
            try:
                stream = container.logs(stream=True, follow=True, stdout=True, stderr=True)
                for chunk in stream:
                    kept = chunk[:room]
                    out.write(kept)
                    room -= len(kept)
                    last = kept[-1:] or last
                    if len(kept) < len(chunk):  # the job printed more than the cap: stop reading
                        out.write(log_cut_line(self.cfg.max_log_bytes, last))
                        stream.close()
                        break
                    out.flush()
            except (docker.errors.APIError, requests.RequestException):
                log.warning("job %s: log stream ended early", self.job.id)

    def _export_and_finish(self, container, exited: bool = False) -> None:
        size, digest, entries = 0, "", ()
        state, reason = JobState(self.job.outcome or JobState.FAILED.value), self.job.reason
        if container is not None and not exited:  # adopted while a cancel waited: stop it first
            container.reload()
            if container.attrs.get("State", {}).get("Running"):
                container.stop(timeout=int(self.cfg.stop_grace_s))
        if not self._exports_nothing() and container is not None:
            try:
                size, digest, entries = export_output(self.job.output, container, self.engine, self.cfg.docker_url,
                                                      self.cfg.compressor, self.archive_file, self.cfg.max_output_bytes)
            except OutputTooLarge as exc:
                state, reason = JobState.FAILED, "; ".join(filter(None, (reason, str(exc))))
        self.update(state, reason=reason, **self.ended, **self._end_fields(size, digest, entries))
        log.info("job %s: %s (exit %s, archive %d bytes)", self.job.id, self.job.state, self.job.exit_code, size)

    def _exports_nothing(self) -> bool:
        """The job's end makes no archive: output mode ``none``, or a cancel that discards it."""
        return self.job.output == "none" or self.job.discard_output

    def _end_fields(self, size: int = 0, digest: str = "", entries: tuple = ()) -> dict:
        """What the record of an ended run carries besides how its container ended."""
        return dict(output_bytes=size, output_sha256=digest, output_entries=entries, log_bytes=self._log_bytes(),
                    output_expires_at=output_expiry(time.time(), self.cfg.output_retention_s))

    # ----- endings -------------------------------------------------------------------------------
    def _fail(self, reason: str) -> str:
        try:
            moved = self.store.transition(self.job, JobState.FAILED, reason=reason,
                                          output_expires_at=output_expiry(time.time(), self.cfg.output_retention_s))
            if moved is not None:
                self.job = moved
        except PinkError:
            log.warning("job %s: could not record failure: %s", self.job.id, reason)
        return reason

    def _stop(self, container) -> None:
        if container is None:
            return
        try:
            container.stop(timeout=int(self.cfg.stop_grace_s))
        except docker.errors.NotFound:
            pass  # already gone: a race with cleanup, not an error

    def _cleanup(self, container) -> None:
        """Remove what the job left on this host once its record is terminal."""
        if not self.job.state.terminal:
            try:
                self.job = self.store.get_job(self.job.id) or self.job
            except PinkError:
                return  # the daemon's sweep cleans up once etcd answers
            if not self.job.state.terminal:
                return
        if container is not None:
            if self.reaper is not None:
                self.reaper.remove(container, f"job {self.job.id}")
            else:
                remove_container(container, f"job {self.job.id}")
        if not self.job.array_id:
            self.inbox_file.unlink(missing_ok=True)
        if not self.job.output_bytes:
            # Cancelled or lost during the export: nobody can download this archive.
            self.archive_file.unlink(missing_ok=True)


def exit_reason(code: int, oom_killed: bool, memory_bytes: int) -> str:
    """Why a job whose container exited with ``code`` (not 0) and that PINK did not stop failed,
    for its user.

    Docker's ``State.OOMKilled`` says for sure that the kernel killed a process of the job for
    its memory limit (cgroup v2 hosts). Where docker cannot tell (cgroup v1 on recent kernels,
    which no longer signal it), a SIGKILL (exit code 137) that PINK did not send is almost
    always the same thing, and the reason says so.
    """
    limit = f"memory limit of {format_size(memory_bytes)}; ask for more with --memory"
    if oom_killed:
        return f"out of memory: the job used its whole {limit}" if memory_bytes else \
            f"out of memory: the kernel killed the job (exit code {code})"
    if code == 137 and memory_bytes:
        return f"killed (exit code 137), most likely out of memory: the job used its whole {limit}"
    return f"the container exited with code {code}"


def disk_reason(cap: int) -> str:
    """The reason of a job stopped for writing more than ``cap`` bytes to its own filesystem."""
    return f"the job wrote more than {cap} bytes to its own filesystem (worker.max_disk_bytes): " \
        f"write less, or ask the operators"


def log_cut_line(cap: int, last: bytes) -> bytes:
    """The line that ends a log cut at ``cap`` bytes, on a line of its own after ``last``,
    the last byte kept."""
    return (b"\n" if last not in (b"", b"\n") else b"") + \
        f"[PINK: log cut at {cap} bytes: the job printed more]\n".encode()


def _docker_time(text: str) -> float | None:
    """Docker's RFC 3339 nanosecond timestamps to UNIX seconds."""
    if not text or text.startswith("0001-"):
        return None
    main, _, frac = text.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(main + "+00:00").timestamp()
    return seconds + (float("0." + frac[:9]) if frac else 0.0)
