"""The worker daemon's loop (one per GPU server, run by systemd).

Each cycle: keep the lease alive (re-register if it was lost), re-read this worker's queue from
etcd (the truth; the watch only wakes the loop early), adopt claimed jobs nobody here runs,
stop runs whose job was cancelled or marked LOST, start what the plan allows, publish a
heartbeat, and log one status line when something changed. Signal handlers only set a flag.
Stopping the daemon leaves containers running: the next start adopts them.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import docker
import docker.errors
import requests

from pink import config as pink_config
from pink import quarantine, queueplan
from pink.fairshare import FairShare
from pink.errors import PinkError
from gpu_worker.gpus import Gpu, discover_gpus
from pink.layers import chain_ids, held_entry
from pink.lease import Lease
from pink.scheduling import Decision
from pink.model import JOB_ID, WorkerInfo
from pink.states import CLAIMED, JobState
from pink.queues import WorkerQueue
from pink.store import QueueEntry, Store

from .ahead import Ahead
from .container import host_cpus, host_memory_bytes
from .deletions import Deletions
from .engine import engine_client
from . import metrics as worker_metrics, sweeps
from .gpuhealth import GpuHealth
from .imagegc import ImageGC, LoadRecord
from .inputs import Inputs
from .layerload import is_partial, remove_partials
from .liveslots import LiveSlots
from .preload import Preload
from .reaper import Reaper
from .runner import JobRun

log = logging.getLogger(__name__)

#: Heartbeats publish free disk space in steps of this size.
DISK_FREE_STEP = 256 << 20
#: Images loaded at once while their upload is still arriving.
MAX_PRELOADS = 2
#: Seconds between full reads of the worker's queue from etcd; the cycles in between read the
#: watched copy (pink.queues.WorkerQueue).
QUEUE_REREAD_S = 60.0


class WorkerDaemon:
    def __init__(self, cfg: pink_config.Config, store: Store | None = None) -> None:
        self.cfg = cfg
        self.wcfg = cfg.worker
        self.store = store or Store(cfg.etcd)
        self.fairshare = FairShare(self.store, cfg.scheduling)
        # Every run holds two streaming connections (logs, wait) and the image events one more:
        # a pool of docker-py's default 10 would open and close a connection for most calls.
        self.engine = engine_client(self.wcfg.docker_url, timeout=120,
                                    max_pool_size=3 * self.wcfg.max_parallel_jobs + 8)
        self.gpus: list[Gpu] = discover_gpus(self.wcfg.gpus)
        self.runtime = self.wcfg.runtime or ("nvidia" if self.gpus else "")
        self.health = GpuHealth(self.gpus, xid_source=self.wcfg.gpu_xid_source,
                                xid_quarantine_s=self.wcfg.gpu_xid_quarantine_s)
        #: GPU index -> why it gets no new jobs: the health check's, and admins' (etcd).
        self.sick: dict[int, str] = {}
        self.admin_quarantine: dict[int, str] = {}
        self.quarantine_changed = threading.Event()
        self.quarantine_changed.set()
        self.check_gpus()
        self.image_gc = ImageGC(LoadRecord(Path(self.wcfg.state_path) / "images.json"), self.engine,
                                self.wcfg.image_gc_min_free_bytes, self.wcfg.image_cache_max_bytes, self.wcfg.inbox)
        self._image_sizes: dict[str, int] = {}
        #: job id -> the images the engine held when its preload started (not PINK's load).
        self._preload_before: dict[str, frozenset[str]] = {}
        self.host_cpus, self.host_memory = host_cpus(), host_memory_bytes()
        self._datasets: tuple[str, ...] = ()
        self.runs: dict[str, JobRun] = {}
        self.inputs = Inputs(self.wcfg)
        self.deletions = Deletions(self.wcfg)
        #: Set by the watch of tombstones: an owner deleted a job; remove its files next cycle.
        self.deleted = threading.Event()
        self.preloads: dict[str, Preload] = {}
        self._pinged_at = 0.0
        self.stop_requested = threading.Event()
        self.reaper = Reaper(self.stop_requested)
        self.ahead = Ahead(self.engine, self.store, self.wcfg, self.runtime, self.inputs, self.reaper,
                           self.stop_requested)
        #: Whether an admin drained this worker, re-read when the watch of its drain key fires.
        self.drained, self.drain_changed = False, threading.Event()
        self.drain_changed.set()
        self.need_register = threading.Event()
        self.wake = threading.Event()
        self.lease = Lease(self.store, self.wcfg.lease_ttl_s, f"worker {self.wcfg.name}")
        self.slots = LiveSlots(self.store, self.wcfg.name, self.wcfg.max_parallel_jobs, self.wake)
        #: This worker's queue, kept by a watch that also wakes the loop; ``_claimed_at`` is the
        #: revision of the newest claim, which the copy must have before a cycle reads it.
        self.queue = WorkerQueue(self.store, self.wcfg.name, self.wake.set)
        self._claimed_at = 0
        self._queue_read_at = 0.0
        self._unwatch_deleted = None
        self._unwatch_quarantine = None
        self._unwatch_drain = None
        self._failing = False
        self._last_status = ""
        self._images: tuple[str, ...] = ()
        self._layers: tuple[str, ...] = ()
        self._images_at = 0.0
        self._layer_cache: dict[str, tuple[str, ...]] = {}
        #: job id -> when the engine first failed it (runs resume until engine_grace_s).
        self._engine_trouble: dict[str, float] = {}
        self._heartbeat_sent = ""
        #: For the metrics (gpu_worker/metrics.py): queued jobs at the last cycle, and why each waits.
        self.queued_count = 0
        self.waiting: dict[str, str] = {}
        for folder in (self.wcfg.inbox, self.wcfg.outbox, self.wcfg.inputs_dir):
            Path(folder).mkdir(parents=True, exist_ok=True)

    # ----- registration and lease ------------------------------------------------------------------
    def _present_datasets(self) -> tuple[str, ...]:
        """The configured datasets whose folder is here (looked at on each registration); jobs
        asking for the others go to other workers."""
        present = []
        for name, path in sorted(self.wcfg.datasets.items()):
            if os.path.isdir(path):
                present.append(name)
            else:
                log.warning("dataset %s: %s is not a folder on this host; not offered to jobs", name, path)
        return tuple(present)

    # ----- GPU health and quarantine ---------------------------------------------------------------
    def check_gpus(self) -> None:
        """Run the GPU health checks (gpu_worker.gpuhealth); log what changed."""
        sick = self.health.check()
        for index in sorted(set(sick) | set(self.sick)):
            if sick.get(index) != self.sick.get(index):
                if index in sick:
                    log.warning("GPU %d quarantined: %s", index, sick[index])
                else:
                    log.info("GPU %d passes its health checks again", index)
        self.sick = sick

    def quarantined(self) -> dict[int, str]:
        """GPU index -> why it gets no new jobs (an admin's reason first)."""
        if self.quarantine_changed.is_set():
            self.quarantine_changed.clear()
            try:
                self.admin_quarantine = {i: quarantine.reason_text(e) for i, e in
                                         quarantine.admin_quarantines(self.store, self.wcfg.name).items()}
            except BaseException:
                self.quarantine_changed.set()
                raise
        merged = dict(self.sick)
        for index, why in self.admin_quarantine.items():
            merged[index] = f"{why}; {merged[index]}" if index in merged else why
        return {i: merged[i] for i in sorted(merged) if any(g.index == i for g in self.gpus)}

    def info(self) -> WorkerInfo:
        busy = {i for run in self.runs.values() for i in run.gpu_indices}
        quarantined = self.quarantined()
        disk = shutil.disk_usage(self.wcfg.inbox)
        w = self.wcfg
        # "No limit" is the host; a default without a value of its own is the maximum. Memory
        # always has a default: a full worker's jobs fit in its memory, and one that runs out
        # is killed alone (with a reason) instead of the host's OOM killer picking anything.
        max_cpus = min(w.max_cpus_per_job or self.host_cpus, self.host_cpus)
        max_memory = min(w.max_memory_per_job_bytes or self.host_memory, self.host_memory)
        default_memory = w.memory_per_job_bytes or w.max_memory_per_job_bytes or self.host_memory // w.max_parallel_jobs
        return WorkerInfo(
            name=self.wcfg.name, ssh_host=self.wcfg.ssh_host, ssh_port=self.wcfg.ssh_port,
            ssh_user=self.wcfg.ssh_user, inbox=self.wcfg.inbox, outbox=self.wcfg.outbox,
            gpus=tuple({"index": g.index, "uuid": g.uuid, "name": g.name, "memory_mib": g.memory_mib}
                       for g in self.gpus),
            cpus=self.host_cpus, memory_bytes=self.host_memory,
            archive_suffix=self.wcfg.archive_suffix, output_retention_s=self.wcfg.output_retention_s,
            registered_at=time.time(), datasets=self._datasets,
            default_cpus=min(w.cpus_per_job or w.max_cpus_per_job, max_cpus),
            default_memory_bytes=min(default_memory, max_memory),
            default_shm_bytes=w.shm_per_job_bytes, max_cpus=max_cpus, max_memory_bytes=max_memory,
            # Rounded down to 256 MiB, so that writing a file is not news for the heartbeat.
            disk_free_bytes=disk.free - disk.free % DISK_FREE_STEP, images=self._images, layers=self._layers,
            gpus_free=tuple(g.index for g in self.gpus if g.index not in busy and g.index not in quarantined),
            running=len(self.runs), max_parallel_jobs=self.slots.value, slots_configured=w.max_parallel_jobs,
            heartbeat_at=time.time(), quarantined={str(i): why for i, why in quarantined.items()},
            # Changes only with the image list: no rounding needed to keep heartbeats rare.
            image_cache_bytes=self.image_gc.cache_bytes(self._image_sizes),
        )

    def _refresh_images(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._images_at < 15:
            return
        self._images_at = time.monotonic()  # before listing: an event during the list re-arms it
        # Ids only: images.list() would inspect every image, and fail on one deleted meanwhile.
        ids = set(self.engine.api.images(quiet=True))
        # The image list carries no layers: inspect each image once and remember it.
        cache: dict[str, tuple[str, ...]] = {}
        sizes: dict[str, int] = {}
        for i in ids:
            layers = self._layer_cache.get(i)
            if layers is None or i not in self._image_sizes:
                try:
                    found = self.engine.api.inspect_image(i)
                except docker.errors.NotFound:
                    continue  # deleted since the list
                if is_partial(found):
                    continue  # an upload's layers so far (gpu_worker.layerload): not an image to offer
                layers = tuple(found.get("RootFS", {}).get("Layers", ()))
                self._image_sizes[i] = int(found.get("Size") or 0)
            cache[i] = layers
            sizes[i] = self._image_sizes[i]
        self._layer_cache = cache
        self._image_sizes = sizes
        # Images the GC is about to remove are no longer offered to resubmits (imagegc).
        ids = set(cache) - self.image_gc.hidden
        self._images = tuple(sorted(ids))
        # Per image, the chain ids of its layers: what a thin upload may leave out (pink.layers).
        self._layers = tuple(held_entry(i, self._layer_cache[i]) for i in self._images if self._layer_cache[i])

    def follow_image_events(self) -> None:
        """Thread: re-list the images as soon as the engine loads, tags or deletes one, so the
        web servers never skip an upload of an image that is gone, nor send one that is here."""
        while not self.stop_requested.is_set():
            try:
                for _event in self.engine.events(decode=True, filters={"type": "image"}):
                    self._images_at = 0.0
                    self.ahead.retry()
                    self.wake.set()
                    if self.stop_requested.is_set():
                        return
            except (docker.errors.DockerException, requests.RequestException, OSError, ValueError):
                pass  # the engine restarted or is away; the cycle reports that
            self.stop_requested.wait(5)

    def register(self) -> None:
        try:
            self._refresh_images(force=True)
        except (docker.errors.DockerException, requests.RequestException) as exc:
            # Register anyway: the worker is alive and keeps its claims; it claims nothing new
            # until the engine answers (see cycle).
            log.warning("docker engine unavailable while registering: %s", exc)
        self._datasets = self._present_datasets()
        info = self.info()
        self.store.register_worker(info, self.lease.id)
        self._heartbeat_sent = ""
        log.info("registered worker %s (%d GPUs, datasets %s, lease %x)", self.wcfg.name, len(self.gpus),
                 ", ".join(self._datasets) or "none", self.lease.id)
        if self.wcfg.drain:
            self.store.set_drained(self.wcfg.name, True)
        # Claims of the jobs this worker still holds must hang on the new lease.
        for entry in self.store.queue(self.wcfg.name):
            if entry.state in CLAIMED:
                job = self.store.get_job(entry.job_id)
                if job is not None and job.state in CLAIMED:
                    renewed = self.store.renew_claim(job, self.wcfg.name, self.lease.id)
                    if renewed is not None and job.id in self.runs:
                        self.runs[job.id].job = renewed

    def keep_lease_alive(self) -> None:
        """Thread: refresh the lease every loop interval, whatever the main loop is doing.

        A slow or restarting Docker engine can block the main loop for a while; the worker and
        its containers are still alive then, so their claims must not expire with it.
        """
        failing = False
        while not self.stop_requested.is_set():
            try:
                if self.lease.keepalive():
                    self.need_register.set()
                    self.wake.set()
                failing = False
            except PinkError as exc:
                if not failing:
                    log.warning("cannot refresh the lease: %s", exc)
                failing = True
            self.stop_requested.wait(self.wcfg.loop_interval_s)

    def heartbeat(self) -> None:
        # A job that brought a new image: publish it now, so resubmits can skip the upload.
        self._refresh_images(force=any(r.job.image_id not in self._images for r in self.runs.values()))
        info = self.info()
        # Heartbeats only carry news: the lease refresh alone keeps the worker alive. The count
        # of running jobs is not news (the API counts them from the queue), or every start and
        # end of a job would rewrite the image and layer lists in etcd.
        key = repr((info.disk_free_bytes, info.images, info.layers, info.gpus_free, info.max_parallel_jobs,
                    info.image_cache_bytes, info.quarantined))
        if key != self._heartbeat_sent:
            self.store.heartbeat(info, self.lease.id)
            self._heartbeat_sent = key

    def watch(self) -> None:
        """Wake the loop early when this worker's queue (self.queue's watch) or its settings
        change (the watches heal themselves)."""
        self.queue.start()
        if self._unwatch_deleted is None:
            self._unwatch_deleted = self.store.watch_prefix(("deleted", ""), self._on_deleted)
        if self._unwatch_quarantine is None:
            self._unwatch_quarantine = self.store.watch_prefix(("quarantine", self.wcfg.name, ""),
                                                               self._on_quarantine)
        if self._unwatch_drain is None:
            self._unwatch_drain = self.store.watch_prefix(("drain", self.wcfg.name), self._on_drain)
        self.slots.watch()

    def _on_drain(self, _ok: bool) -> None:
        self.drain_changed.set()
        self.wake.set()

    def _on_quarantine(self, _ok: bool) -> None:
        self.quarantine_changed.set()
        self.wake.set()

    def _on_deleted(self, _ok: bool) -> None:
        self.deleted.set()
        self.wake.set()

    # ----- one cycle ---------------------------------------------------------------------------------
    def cycle(self) -> None:
        if not self.lease.id:
            return  # the lease thread has not reached etcd yet
        if self.need_register.is_set():
            self.need_register.clear()
            try:
                self.register()
            except BaseException:
                self.need_register.set()  # not registered yet: try again next cycle
                raise
        if time.monotonic() - self._pinged_at >= self.wcfg.loop_interval_s:
            # No claims or restarts while the engine is away (raises). Once per loop interval:
            # a burst of queue events must not put a round trip to the engine before each claim.
            self.engine.ping()
            self._pinged_at = time.monotonic()
        self.watch()
        entries = self._queue_entries()
        by_id = {e.job_id: e for e in entries}
        self._preload(by_id)
        # Runs that ended, or whose job left our hands (cancelled, LOST: gone from the queue).
        for job_id, run in list(self.runs.items()):
            if run.done.is_set():
                del self.runs[job_id]
                if run.loaded_image:
                    self.image_gc.record.loaded([run.job.image_id])
                self.image_gc.record.touch(run.job.image_id)
                if job_id in self.deletions.waiting:
                    self.deleted.set()  # deleted while it ran: its files could not go then
                if run.engine_trouble:
                    self._engine_trouble.setdefault(job_id, time.monotonic())
                else:
                    self._engine_trouble.pop(job_id, None)
            elif job_id not in by_id or by_id[job_id].state not in CLAIMED:
                run.cancel.set()
            elif by_id[job_id].state is JobState.EXPORTING:
                run.stop.set()  # cancelled while it ran: stop it and export (a no-op once it exited)
        # Claimed jobs nobody here runs: after a restart, adopt them.
        for entry in entries:
            if entry.state in CLAIMED and entry.job_id not in self.runs:
                job = self.store.get_job(entry.job_id)
                if job is not None and job.state in CLAIMED:
                    self._launch(job)
        self._start_queued(entries)
        if self.deleted.is_set():
            self.deleted.clear()
            self.deletions.sweep(self.store, busy=self.runs)
        self.heartbeat()
        self._log_status(entries)

    def _queue_entries(self) -> list[QueueEntry]:
        """This worker's queue: from the watched copy once it holds this worker's newest claim
        (or a run of a job just claimed would look cancelled), from etcd when the copy is behind
        and every QUEUE_REREAD_S, so a watch that hangs without an error delays no change longer."""
        entries = None
        if time.monotonic() - self._queue_read_at < QUEUE_REREAD_S:
            entries = self.queue.entries(self._claimed_at)
        if entries is None:
            entries = self.store.queue(self.wcfg.name)
            self._queue_read_at = time.monotonic()
        return entries

    def _start_queued(self, entries: list[QueueEntry]) -> None:
        queued = [e for e in entries if e.state is JobState.QUEUED]
        self.queued_count = len(queued)
        slots = self.slots.effective()
        if self.drain_changed.is_set():  # set by the watch of the drain key (and at start)
            self.drain_changed.clear()
            self.drained = self.store.is_drained(self.wcfg.name)
        # Most cycles are woken by a running job's own state change: nothing can start.
        if not queued or self.drained or len(self.runs) >= slots:
            why = "drained" if self.drained else f"waiting for a free job slot ({len(self.runs)} running)"
            self.waiting = {q.job_id: why for q in queued}
            self._make_ahead([] if self.drained else queued)
            return
        running = [queueplan.Running(run.job.user, len(run.gpu_indices), run.job.cpus, run.job.memory_bytes)
                   for run in self.runs.values()]
        sick = self.quarantined()
        busy = {i for run in self.runs.values() for i in run.gpu_indices} | set(sick)
        capacity = queueplan.Capacity(tuple(g.index for g in self.gpus if g.index not in busy), len(self.gpus),
                                      len(self.gpus) - len(sick), self.host_cpus, self.host_memory, slots)
        # Run slots of arrays with a %N limit and of users with a GPU quota, on every worker.
        taken = self.fairshare.taken(queued)
        # Planned only until the free slots are taken: the jobs after wait for a slot (whatever
        # else they wait for, which the web servers' plan of the queue tells their users).
        decisions = queueplan.plan_queue(queued, running, capacity, array_running=taken.array_running(),
                                         until_full=True, **self.fairshare.order_args(taken)).decisions
        by_id = {q.job_id: q for q in queued}
        starts = {d.job_id for d in decisions if d.starts}
        reasons = {d.job_id: d.reason for d in decisions if not d.starts}
        slot = f"waiting for a free job slot ({slots} running)"
        self.waiting = {q.job_id: reasons.get(q.job_id, slot) for q in queued if q.job_id not in starts}
        for decision in decisions:
            if not decision.starts:
                continue
            run_slots = taken.pick(by_id[decision.job_id])
            if run_slots is None:
                continue  # another claim of this cycle took the array's or the user's slots
            made = self.ahead.take(decision.job_id)  # its container, made ahead from this record
            claimed = self._claim(made.job if made else self.store.get_job(decision.job_id), decision, run_slots)
            fresh = True
            if made is not None and claimed is None:
                # The record changed since: claim it as it is now; the run replaces the container.
                claimed = self._claim(self.store.get_job(decision.job_id), decision, run_slots)
                if claimed is None:
                    self.reaper.remove(made.container, f"job {decision.job_id} (made ahead, not claimed)")
                made, fresh = None, False
            if claimed is not None:
                self._claimed_at = max(self._claimed_at, claimed.mod_revision)
                log.info("job %s: claimed (user %s, GPUs %s)", claimed.id, claimed.user,
                         list(decision.gpu_indices) or "none")
                self._launch(claimed, fresh=fresh, ahead=made.container if made else None)
        self._make_ahead(queued)

    def _make_ahead(self, queued: list[QueueEntry]) -> None:
        """Have the containers of the CPU-only jobs next in the start order made while the
        running jobs run (gpu_worker.ahead): the plan of an idle worker with room for them all."""
        waiting, depth = [q for q in queued if q.job_id in self.waiting and not q.gpus], self.wcfg.containers_ahead
        room = queueplan.Capacity((), len(self.gpus), len(self.gpus), self.host_cpus * depth,
                                  self.host_memory * depth, depth)
        idle = queueplan.plan_queue(waiting, [], room, usage=self.fairshare.usage(), until_full=True).decisions \
            if waiting else []
        self.ahead.want([d.job_id for d in idle if d.starts], {q.job_id for q in queued})

    def _preload(self, by_id: dict[str, QueueEntry]) -> None:
        """Load images while they are uploaded (see :class:`~gpu_worker.preload.Preload`)."""
        for job_id, preload in list(self.preloads.items()):
            entry = by_id.get(job_id)
            preload.state = entry.state if entry is not None else None
            if preload.done.is_set():
                del self.preloads[job_id]  # a run still waiting holds its own reference
                # Only images the engine did not hold before are PINK's to remove later.
                self.image_gc.record.loaded(preload.loaded - self._preload_before.pop(job_id, frozenset()))
        for job_id, entry in by_id.items():
            if entry.state is JobState.UPLOADING and job_id not in self.preloads and JOB_ID.match(job_id) \
                    and len(self.preloads) < MAX_PRELOADS:
                inbox_file = Path(self.wcfg.inbox) / f"{entry.array_id or job_id}.tar"
                self._preload_before[job_id] = frozenset(self._layer_cache)
                held = frozenset(c for layers in self._layer_cache.values() for c in chain_ids(layers))
                self.preloads[job_id] = Preload(job_id, inbox_file, self.engine, held).start()

    def _claim(self, job, decision: Decision, run_slots: tuple[str, ...]):
        """QUEUED -> STARTING of ``job`` as ``decision`` says, taking ``run_slots`` (pink.runslots);
        None: someone else changed it."""
        if job is None or job.state is not JobState.QUEUED:
            return None
        return self.store.claim(job, self.wcfg.name, self.lease.id, decision.gpu_indices, run_slots)

    def _launch(self, job, fresh: bool = False, ahead=None) -> None:
        since = self._engine_trouble.get(job.id)
        give_up = since is not None and time.monotonic() - since > self.wcfg.engine_grace_s
        run = JobRun(job=job, cfg=self.wcfg, store=self.store, engine=self.engine, runtime=self.runtime,
                     inputs=self.inputs, give_up_on_engine=give_up, fresh=fresh, preload=self.preloads.get(job.id),
                     ahead=ahead, reaper=self.reaper, image_size=self._image_sizes.get(job.image_id))
        self.runs[job.id] = run
        run.start()

    def _log_status(self, entries: list[QueueEntry]) -> None:
        queued = sum(1 for e in entries if e.state is JobState.QUEUED)
        busy = {i for run in self.runs.values() for i in run.gpu_indices}
        sick = self.quarantined()
        status = f"worker {self.wcfg.name}: {len(self.runs)} running, {queued} queued, " \
                 f"GPUs free {[g.index for g in self.gpus if g.index not in busy and g.index not in sick]}" \
                 + (f", quarantined {sorted(sick)}" if sick else "")
        if status != self._last_status:
            log.info("%s", status)
            self._last_status = status

    # ----- housekeeping ----------------------------------------------------------------------------
    def images_needed(self) -> set[str]:
        """Images jobs here need: those of its queue in etcd (re-read), runs and preloads.
        While an upload to this worker is in flight, every image: a thin upload leaves out
        layers of images held here, and which ones its queue entry does not say."""
        entries = self.store.queue(self.wcfg.name)
        if any(e.state is JobState.UPLOADING for e in entries):
            return set(self._layer_cache)
        needed = {e.image_id for e in entries
                  if e.state.value in ("QUEUED", "STARTING", "RUNNING", "EXPORTING") and e.image_id}
        needed |= {run.job.image_id for run in self.runs.values()}
        for preload in list(self.preloads.values()):
            needed |= preload.loaded
        return needed

    def collect_images(self) -> None:
        """Image GC (gpu_worker.imagegc): hide, publish, re-check, remove."""
        self._refresh_images(force=True)
        if self.image_gc.collect(self._image_sizes, self.images_needed, self._publish_now):
            self._refresh_images(force=True)
            self.heartbeat()

    def _publish_now(self) -> None:
        self._refresh_images(force=True)
        self.store.heartbeat(self.info(), self.lease.id)
        self._heartbeat_sent = ""

    # ----- main loop -------------------------------------------------------------------------------
    def run(self) -> None:
        log.info("worker %s starting: engine %s, GPUs %s, runtime %s", self.wcfg.name, self.wcfg.docker_url,
                 [g.index for g in self.gpus] or "none (CPU-only)", self.runtime or "default")
        last_sweep = last_gc = last_health = 0.0
        worker_metrics.serve(self)
        remove_partials(self.engine)
        threading.Thread(target=self.keep_lease_alive, name="lease", daemon=True).start()
        threading.Thread(target=self.follow_image_events, name="image-events", daemon=True).start()
        self.reaper.start()
        if self.wcfg.containers_ahead:
            self.ahead.start()
        try:
            while not self.stop_requested.is_set():
                self.wake.clear()
                try:
                    began = time.monotonic()
                    self.cycle()
                    # A cycle is linear in the queue's length: with a long queue, the changes that
                    # come during a pause as long as the cycle took are taken in the next one
                    # together (at most half the daemon's time goes to cycles; each cycle starts
                    # every job the free slots allow, so no start is lost, only batched).
                    self.stop_requested.wait(time.monotonic() - began)
                    if time.monotonic() - last_sweep > self.wcfg.sweep_interval_s:
                        sweeps.sweep_orphans(self)
                        sweeps.expire_outputs(self)
                        self.inputs.sweep(self.store)
                        self.deletions.sweep(self.store, busy=self.runs)
                        last_sweep = time.monotonic()
                    if time.monotonic() - last_gc > self.wcfg.image_gc_interval_s:
                        self.collect_images()
                        last_gc = time.monotonic()
                    if self.wcfg.gpu_health_interval_s and \
                            time.monotonic() - last_health > self.wcfg.gpu_health_interval_s:
                        if last_health:  # the first check ran at start
                            self.check_gpus()
                        last_health = time.monotonic()
                    if self._failing:
                        log.info("worker %s: back to normal", self.wcfg.name)
                    self._failing = False
                except (PinkError, docker.errors.DockerException, requests.RequestException) as exc:
                    if not self._failing:
                        log.warning("cycle failed: %s", exc, exc_info=True)
                    else:
                        log.warning("cycle failed again: %s", exc)
                    self._failing = True
                self.wake.wait(self.wcfg.loop_interval_s)
        finally:
            self.queue.stop()
            for unwatch in (self._unwatch_deleted, self._unwatch_quarantine, self._unwatch_drain):
                if unwatch is not None:
                    unwatch()
            self.slots.close()
            log.info("worker %s stopped; %d containers keep running and are adopted on restart",
                     self.wcfg.name, len(self.runs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pink-worker", description="PINK worker daemon")
    parser.add_argument("--config", help="config file (default $PINK_CONFIG or /etc/pink/pink.toml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        daemon = WorkerDaemon(pink_config.load(args.config))
    except (PinkError, docker.errors.DockerException) as exc:
        log.error("cannot start: %s", exc)
        return 1

    def stop(signum, _frame) -> None:
        daemon.stop_requested.set()
        daemon.wake.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    daemon.run()
    return 0
