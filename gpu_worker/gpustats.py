"""GPU readings through NVML (nvidia-ml-py's ``pynvml``): the worker's per-GPU metrics and the
per-job samples (mean and max utilisation, peak memory) stored on the job when it ends.

All NVML calls go through :class:`Nvml`, which takes the module as an argument, so tests give
it a fake built from recorded readings (tests/unit/nvml_recorded.json). A host without NVML
(no driver, no library: every CPU-only worker) gets ``None`` from :func:`shared` and one info
line in the log; then there are no GPU series and jobs record no GPU fields.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from types import ModuleType
from typing import Iterable

from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Reading:
    """One GPU at one moment, as NVML tells it."""

    index: int
    uuid: str
    name: str
    util_percent: int
    memory_used_bytes: int
    memory_total_bytes: int
    temperature_c: int
    power_w: float


def _text(value) -> str:  # noqa: ANN001 - older pynvml returned bytes
    return value.decode() if isinstance(value, bytes) else str(value)


class Nvml:
    """The few NVML calls PINK makes, on an initialised ``pynvml`` (or a stand-in of it)."""

    def __init__(self, nv: ModuleType) -> None:
        self.nv = nv

    @classmethod
    def open(cls, nv: ModuleType | None = None) -> "Nvml | None":
        """NVML, initialised; None (with one info line) where this host has none."""
        try:
            if nv is None:
                import pynvml as nv  # noqa: PLC0415 - optional: only GPU workers need it
            nv.nvmlInit()
        except ImportError:
            log.info("no GPU metrics: nvidia-ml-py (pynvml) is not installed")
            return None
        except Exception as exc:  # pynvml.NVMLError and its many subclasses (no driver, no library)
            if not isinstance(exc, getattr(nv, "NVMLError", ())):
                raise
            log.info("no GPU metrics: NVML is not available on this host (%s)", exc)
            return None
        return cls(nv)

    def count(self) -> int:
        return int(self.nv.nvmlDeviceGetCount())

    def read(self, index: int) -> Reading:
        nv = self.nv
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        util = nv.nvmlDeviceGetUtilizationRates(handle)
        memory = nv.nvmlDeviceGetMemoryInfo(handle)
        return Reading(
            index=index, uuid=_text(nv.nvmlDeviceGetUUID(handle)), name=_text(nv.nvmlDeviceGetName(handle)),
            util_percent=int(util.gpu), memory_used_bytes=int(memory.used), memory_total_bytes=int(memory.total),
            temperature_c=int(nv.nvmlDeviceGetTemperature(handle, nv.NVML_TEMPERATURE_GPU)),
            power_w=nv.nvmlDeviceGetPowerUsage(handle) / 1000.0,  # milliwatts
        )

    def read_some(self, indices: Iterable[int]) -> list[Reading]:
        """Readings of the GPUs that answer (one that fails is left out and logged)."""
        out = []
        for index in indices:
            try:
                out.append(self.read(index))
            except self.nv.NVMLError as exc:
                log.warning("NVML: cannot read GPU %s: %s", index, exc)
        return out


_shared: list[Nvml | None] = []
_shared_lock = threading.Lock()


def shared() -> Nvml | None:
    """This process's NVML, opened on first use (None where there is none)."""
    with _shared_lock:
        if not _shared:
            _shared.append(Nvml.open())
        return _shared[0]


class Aggregate:
    """Utilisation and memory samples of a job's GPUs, folded as they come."""

    def __init__(self) -> None:
        self.samples = 0
        self._util_sum = 0
        self.util_max = 0
        self.mem_peak = 0

    def add(self, readings: Iterable[Reading]) -> None:
        for r in readings:
            self.samples += 1
            self._util_sum += r.util_percent
            self.util_max = max(self.util_max, r.util_percent)
            self.mem_peak = max(self.mem_peak, r.memory_used_bytes)

    def fields(self) -> dict:
        """The job's fields: mean and max utilisation in percent over all samples of all its
        GPUs, and the most memory one of its GPUs used (bytes). Empty without samples."""
        if not self.samples:
            return {}
        return {"gpu_util_mean": round(self._util_sum / self.samples, 1), "gpu_util_max": float(self.util_max),
                "gpu_mem_peak_bytes": self.mem_peak}


class JobSampler:
    """A thread sampling a running job's GPUs every ``interval_s`` until ``stop`` is set.

    Does nothing for a job without GPUs or on a host without NVML (``fields()`` is then empty).
    """

    def __init__(self, indices: Iterable[int], interval_s: float, stop: threading.Event,
                 nvml: Nvml | None = None) -> None:
        self.indices = tuple(indices)
        self.interval_s = interval_s
        self.stop = stop
        self.nvml = nvml if nvml is not None or not self.indices else shared()
        self.aggregate = Aggregate()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> "JobSampler":
        if self.indices and self.nvml is not None:
            self._thread = threading.Thread(target=self._loop, name="gpu-sampler", daemon=True)
            self._thread.start()
        return self

    def sample(self) -> None:
        readings = self.nvml.read_some(self.indices) if self.nvml is not None else []
        with self._lock:
            self.aggregate.add(readings)

    def _loop(self) -> None:
        while True:
            self.sample()
            if self.stop.wait(self.interval_s):
                return

    def fields(self) -> dict:
        """The samples so far as job fields (see :meth:`Aggregate.fields`)."""
        with self._lock:
            return self.aggregate.fields()


class GpuCollector:
    """Per-GPU gauges of this worker's GPUs, read from NVML on each scrape."""

    def __init__(self, nvml: Nvml, indices: Iterable[int]) -> None:
        self.nvml = nvml
        self.indices = tuple(indices)

    def collect(self):
        labels = ["gpu", "uuid", "name"]
        families = {
            "util": GaugeMetricFamily("pink_gpu_utilization_ratio", "GPU utilisation (0..1) over NVML's last sample "
                                      "period", labels=labels),
            "used": GaugeMetricFamily("pink_gpu_memory_used_bytes", "GPU memory in use", labels=labels),
            "total": GaugeMetricFamily("pink_gpu_memory_total_bytes", "GPU memory in all", labels=labels),
            "temp": GaugeMetricFamily("pink_gpu_temperature_celsius", "GPU core temperature", labels=labels),
            "power": GaugeMetricFamily("pink_gpu_power_watts", "GPU power draw", labels=labels),
        }
        for r in self.nvml.read_some(self.indices):
            key = [str(r.index), r.uuid, r.name]
            families["util"].add_metric(key, r.util_percent / 100.0)
            families["used"].add_metric(key, r.memory_used_bytes)
            families["total"].add_metric(key, r.memory_total_bytes)
            families["temp"].add_metric(key, r.temperature_c)
            families["power"].add_metric(key, r.power_w)
        yield from families.values()
