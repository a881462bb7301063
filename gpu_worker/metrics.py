"""The worker daemon's ``/metrics`` (prometheus-client's own HTTP server on ``worker.metrics_address``).

One process, so no multiprocess mode: the default registry holds the counters of pink/metrics.py
(jobs this worker ended, dispatch latency, etcd errors and retries, lease renewals), plus what
this module collects on each scrape from the daemon's memory (no etcd read): its queue, running
jobs, job slots and why queued jobs wait, and per-GPU readings through NVML where there is one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily

from pink.metrics import reason_kind

from . import gpustats

if TYPE_CHECKING:
    from .daemon import WorkerDaemon

log = logging.getLogger(__name__)

#: The kinds :func:`pink.metrics.reason_kind` gives, always exported (0 when none waits so).
REASON_KINDS = ("gpus", "cpus", "memory", "slots", "behind", "array_limit", "too_big", "drained", "other")


class WorkerCollector:
    """Queue depth, running jobs, slots and waiting reasons of one worker daemon."""

    def __init__(self, daemon: "WorkerDaemon") -> None:
        self.daemon = daemon

    def collect(self):
        d = self.daemon
        name = d.wcfg.name
        queued = GaugeMetricFamily("pink_worker_queued_jobs", "Jobs QUEUED on this worker (at its last cycle)",
                                   labels=["worker"])
        queued.add_metric([name], d.queued_count)
        yield queued
        running = GaugeMetricFamily("pink_worker_running_jobs", "Jobs this worker runs now", labels=["worker"])
        running.add_metric([name], len(d.runs))
        yield running
        slots = GaugeMetricFamily("pink_worker_job_slots", "Jobs this worker may run at once", labels=["worker"])
        slots.add_metric([name], d.slots.value)
        yield slots
        gpus = GaugeMetricFamily("pink_worker_gpus", "GPUs of this worker, free or busy", labels=["worker", "state"])
        busy = {i for run in list(d.runs.values()) for i in run.gpu_indices}
        gpus.add_metric([name, "busy"], sum(1 for g in d.gpus if g.index in busy))
        gpus.add_metric([name, "free"], sum(1 for g in d.gpus if g.index not in busy))
        yield gpus
        waiting = GaugeMetricFamily("pink_worker_waiting_jobs", "Queued jobs of this worker by why they wait "
                                    "(the kind of reason its last plan gave)", labels=["worker", "reason"])
        counts = dict.fromkeys(REASON_KINDS, 0)
        for reason in list(d.waiting.values()):
            kind = reason if reason == "drained" else reason_kind(reason)
            counts[kind] = counts.get(kind, 0) + 1
        for kind, n in counts.items():
            waiting.add_metric([name, kind], n)
        yield waiting


class _ProcessCollector:
    """The process-wide registry (pink/metrics.py's counters, process and Python series)."""

    def collect(self):
        yield from REGISTRY.collect()


def registry_for(daemon: "WorkerDaemon") -> CollectorRegistry:
    """What the daemon's ``/metrics`` shows: the process's counters and this daemon's gauges.

    A registry per daemon, so that several daemons in one process (a bench) do not clash."""
    registry = CollectorRegistry()
    registry.register(_ProcessCollector())
    registry.register(WorkerCollector(daemon))
    nvml = gpustats.shared() if daemon.gpus else None
    if nvml is not None:
        registry.register(gpustats.GpuCollector(nvml, [g.index for g in daemon.gpus]))
    return registry


def serve(daemon: "WorkerDaemon") -> bool:
    """Serve the daemon's metrics on ``worker.metrics_address``.

    Returns False (after a log line) when metrics are off or the address cannot be bound: the
    worker runs jobs without metrics rather than not at all.
    """
    bind = daemon.wcfg.metrics_bind
    if bind is None:
        log.info("metrics off (worker.metrics_address)")
        return False
    registry = registry_for(daemon)
    try:
        start_http_server(bind[1], addr=bind[0], registry=registry)
    except OSError as exc:
        log.warning("cannot serve metrics on %s:%s: %s; running without them", *bind, exc)
        return False
    log.info("metrics on http://%s:%s/metrics", *bind)
    return True
