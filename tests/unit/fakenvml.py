"""A stand-in for ``pynvml`` answering from recorded-style readings (tests/unit/nvml_recorded.json).

Only the calls gpu_worker/gpustats.py makes, with pynvml's return shapes: utilisation and memory
as objects with attributes, temperature in degrees C, power in milliwatts, NVMLError on failure.
Each device answers its readings in turn (one step per ``nvmlDeviceGetUtilizationRates``),
repeating the last, as a GPU under a job does between samples.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

FIXTURE = Path(__file__).with_name("nvml_recorded.json")


class NVMLError(Exception):
    pass


class NVMLError_LibraryNotFound(NVMLError):  # noqa: N801 - pynvml's name
    pass


class FakeNvml:
    """Module-like: pass an instance where gpustats takes the ``pynvml`` module."""

    NVMLError = NVMLError
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, fixture: Path = FIXTURE, library: bool = True, lost: tuple[int, ...] = ()) -> None:
        self.devices = json.loads(fixture.read_text())["devices"]
        self.library = library
        self.lost = set(lost)  # indices that answer NVMLError (a GPU that fell off the bus)
        self.step = {d["index"]: -1 for d in self.devices}
        self.initialised = False

    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        if not self.library:
            raise NVMLError_LibraryNotFound("NVML Shared Library Not Found")
        self.initialised = True

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict:  # noqa: N802
        if index in self.lost:
            raise NVMLError("GPU is lost")
        for device in self.devices:
            if device["index"] == index:
                return device
        raise NVMLError("Invalid Argument")

    def _now(self, handle: dict) -> dict:
        samples = handle["samples"]
        return samples[min(max(self.step[handle["index"]], 0), len(samples) - 1)]

    def nvmlDeviceGetUtilizationRates(self, handle: dict) -> SimpleNamespace:  # noqa: N802
        self.step[handle["index"]] += 1
        now = self._now(handle)
        return SimpleNamespace(gpu=now["util_gpu"], memory=now["util_memory"])

    def nvmlDeviceGetMemoryInfo(self, handle: dict) -> SimpleNamespace:  # noqa: N802
        used = self._now(handle)["memory_used"]
        return SimpleNamespace(total=handle["memory_total"], used=used, free=handle["memory_total"] - used)

    def nvmlDeviceGetTemperature(self, handle: dict, sensor: int) -> int:  # noqa: N802
        assert sensor == self.NVML_TEMPERATURE_GPU
        return self._now(handle)["temperature"]

    def nvmlDeviceGetPowerUsage(self, handle: dict) -> int:  # noqa: N802
        return self._now(handle)["power_mw"]

    def nvmlDeviceGetName(self, handle: dict) -> str:  # noqa: N802
        return handle["name"]

    def nvmlDeviceGetUUID(self, handle: dict) -> str:  # noqa: N802
        return handle["uuid"]
