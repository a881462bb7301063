"""Prometheus metrics of web servers and workers (prometheus-client; docs/metrics.md lists them).

Two kinds of series:

* Counters and histograms of what *this process* did (submits, transitions it made, bytes it
  moved, etcd errors and retries, lease renewals). Every web server and worker exports its own;
  Prometheus sums them across targets (``sum(rate(...))``). Gunicorn runs several processes per
  web server: they share one view through prometheus-client's multiprocess mode
  (``PROMETHEUS_MULTIPROC_DIR``, set by the gunicorn config; see :mod:`pink.gunicorn_metrics`),
  so a scrape of any process of a web server answers for the whole server.
* Gauges of the cluster read from etcd on scrape (:class:`ClusterCollector`): live jobs by state
  and per worker, from the queue index (non-terminal jobs only, small entries), cached for a
  few seconds so that frequent scrapes from several Prometheus servers cost one range read.
  Every web server exports the same values: aggregate them with ``max``, not ``sum``.

Ended jobs are counted by the process that moved them to their end (``pink_jobs_ended_total``):
reading every job record on each scrape would cost as much as the admin listing.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Callable, Iterable

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from .model import Job
    from .store import Store

log = logging.getLogger(__name__)

#: Latencies from a few milliseconds (a submit of a held image) to minutes (a queued job).
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_THROUGHPUT_BUCKETS = tuple(float(1 << n) for n in range(16, 34, 2))  # 64 KiB/s .. 4 GiB/s

SUBMIT_SECONDS = Histogram("pink_submit_seconds", "Time a web server took to answer a job submission "
                           "(image upload to the worker included)", buckets=_LATENCY_BUCKETS)
DISPATCH_SECONDS = Histogram("pink_dispatch_seconds", "Time from QUEUED to RUNNING of the jobs this worker "
                             "started", buckets=_LATENCY_BUCKETS)
JOBS_ENDED = Counter("pink_jobs_ended", "Jobs this process moved to an end state", ["outcome"])
TRANSFER_BYTES = Counter("pink_transfer_bytes", "Bytes a web server moved to or from workers "
                         "(upload: images and inputs; download: outputs and logs)", ["direction"])
TRANSFER_SPEED = Histogram("pink_transfer_bytes_per_second", "Throughput of each transfer of at least "
                           "1 MiB between a web server and a worker", ["direction"], buckets=_THROUGHPUT_BUCKETS)
ETCD_ERRORS = Counter("pink_etcd_errors", "etcd calls that failed", ["kind"])
QUEUE_LOAD_READS = Counter("pink_queue_load_reads", "Placement reads of the queues' load, by where "
                           "they came from (this process's mirror, or all of queue/ in etcd)", ["source"])
ETCD_RETRIES = Counter("pink_etcd_retries", "Retries of calls after a transient failure (pink.retry)")
LEASE_RENEW_SECONDS = Histogram("pink_lease_renew_seconds", "Time a lease refresh took",
                                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
LEASE_REGRANTS = Counter("pink_lease_regrants", "Leases granted anew because the old one was gone (or first)")

#: Transfers smaller than this say more about latency than throughput: no throughput sample.
_SPEED_MIN_BYTES = 1 << 20


def job_ended(outcome: str) -> None:
    JOBS_ENDED.labels(outcome=outcome).inc()


def job_dispatched(job: "Job", now: float | None = None) -> None:
    """Observe QUEUED -> RUNNING of ``job`` (just moved to RUNNING) from its history."""
    queued_at = next((h.get("at") for h in reversed(job.history) if h.get("state") == "QUEUED"), None)
    if queued_at is not None:
        DISPATCH_SECONDS.observe(max((time.time() if now is None else now) - queued_at, 0.0))


def transferred(direction: str, nbytes: int, seconds: float) -> None:
    TRANSFER_BYTES.labels(direction=direction).inc(nbytes)
    if nbytes >= _SPEED_MIN_BYTES and seconds > 0:
        TRANSFER_SPEED.labels(direction=direction).observe(nbytes / seconds)


def counted_stream(chunks: Iterable[bytes], direction: str = "download") -> Iterable[bytes]:
    """Yield ``chunks`` on, counting their bytes (also when the reader stops early)."""
    start, total = time.monotonic(), 0
    try:
        for chunk in chunks:
            total += len(chunk)
            yield chunk
    finally:
        transferred(direction, total, time.monotonic() - start)


#: The kinds of waiting reasons of :func:`pink.scheduling.plan`, by the words they start with
#: (first match wins; "waiting for" lists what is lacking, the first lack names the kind).
_REASON_KINDS = (
    ("needs ", "too_big"), ("its array runs", "array_limit"), ("behind job", "behind"),
    ("waiting for a free job slot", "slots"), ("waiting for ", "resources"),
)


def reason_kind(reason: str) -> str:
    """A short label for a waiting reason of :func:`pink.scheduling.plan` (bounded set)."""
    for prefix, kind in _REASON_KINDS:
        if reason.startswith(prefix):
            if kind == "resources":
                first = reason[len(prefix):]
                return "gpus" if "GPU" in first.split("(")[0] else \
                    "memory" if "memory" in first.split("(")[0] else "cpus"
            return kind
    return "other"


class ClusterCollector:
    """Live jobs by state and per worker, read from etcd's queue index on scrape (cached)."""

    def __init__(self, store: "Store", ttl_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._at = -1e18
        self._counts: dict[tuple[str, str], int] = {}
        self._ok = True

    def _read(self) -> None:
        from .states import JobState  # noqa: PLC0415 - keep this module light to import

        counts: dict[tuple[str, str], int] = {}
        for worker, entries in self.store.queue_mirror.queues().items():
            for state in JobState:
                if not state.terminal:
                    counts.setdefault((worker, state.value), 0)
            for entry in entries:
                counts[(worker, entry.state.value)] = counts.get((worker, entry.state.value), 0) + 1
        self._counts = counts

    def collect(self):
        from .errors import PinkError  # noqa: PLC0415

        with self._lock:
            if self._clock() - self._at >= self.ttl_s:
                self._at = self._clock()
                try:
                    self._read()
                    self._ok = True
                except PinkError as exc:  # etcd away: say so, keep no stale numbers
                    log.warning("metrics: cannot read the queues: %s", exc)
                    self._counts, self._ok = {}, False
            counts, ok = dict(self._counts), self._ok
        from .states import JobState  # noqa: PLC0415

        up = GaugeMetricFamily("pink_store_up", "1 when the last read of etcd for these metrics worked")
        up.add_metric([], 1.0 if ok else 0.0)
        yield up
        if not ok:
            return
        jobs = GaugeMetricFamily("pink_jobs", "Live (not ended) jobs in the cluster by state", labels=["state"])
        for state in JobState:
            if not state.terminal:
                jobs.add_metric([state.value], sum(n for (_, s), n in counts.items() if s == state.value))
        yield jobs
        queue = GaugeMetricFamily("pink_queue_jobs", "Live jobs in each worker's queue by state",
                                  labels=["worker", "state"])
        for (worker, state), n in sorted(counts.items()):
            queue.add_metric([worker, state], n)
        yield queue
