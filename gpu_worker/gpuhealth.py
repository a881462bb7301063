"""GPU health checks on a worker host (DESIGN §4), in the style of :mod:`gpu_worker.gpus`.

At start and every ``worker.gpu_health_interval_s`` the worker asks ``nvidia-smi`` about each
GPU it uses and reads the driver's Xid reports from the kernel log; a GPU that fails a check is
quarantined by index (it gets no new jobs; the others keep running them):

- lost: ``nvidia-smi`` prints "Unable to determine the device handle for GPU ...: GPU is lost"
  for it, or no longer lists it, or ``nvidia-smi`` itself fails or hangs (then every GPU);
- uncorrectable ECC errors since the last driver reload (the volatile DRAM/SRAM uncorrectable,
  or on older GPUs double-bit, counts of ``nvidia-smi -q -d ECC``);
- a page retirement pending, a row remapping pending or a row remapping failure
  (``-d PAGE_RETIREMENT,ROW_REMAPPER``): the first two clear with a GPU reset, the last does not;
- an Xid the driver reports that means the GPU is broken (``NVRM: Xid (PCI:0000:3b:00): 79,
  ...``; :data:`CRITICAL_XIDS`), read from ``dmesg`` or a log file (``worker.gpu_xid_source``).
  An Xid quarantines its GPU for ``worker.gpu_xid_quarantine_s`` after it was read; the lines
  already in the log when the worker starts are only logged. Where the log cannot be read (no
  permission for dmesg), the worker says so once and checks the rest.

GPUs are matched by UUID, so a GPU that disappears does not shift the blame to another index.
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable

from .gpus import NVIDIA_SMI_TIMEOUT_S, Gpu, Runner

log = logging.getLogger(__name__)

LIST_COMMAND = ("nvidia-smi", "--query-gpu=index,uuid,pci.bus_id", "--format=csv,noheader")
DETAIL_COMMAND = ("nvidia-smi", "-q", "-d", "ECC,PAGE_RETIREMENT,ROW_REMAPPER")

#: Xids that mean the GPU itself is broken (NVIDIA's "Xid Errors" table): 48 double-bit ECC,
#: 61/62 internal micro-controller halt, 64 ECC page retirement or row remapper failure,
#: 74 NVLink error, 79 fallen off the bus, 92 high single-bit ECC rate, 95 uncontained ECC,
#: 119/120 GSP errors. Others (13, 31, 43, 45, ...) are usually a job's own fault.
CRITICAL_XIDS = frozenset({48, 61, 62, 64, 74, 79, 92, 95, 119, 120})

LOST_LINE = re.compile(r"Unable to determine the device handle for GPU ([0-9A-Fa-f:.]+): (.*)")
XID_LINE = re.compile(r"NVRM: Xid \((?:PCI:)?([0-9A-Fa-f:.]+)\): (\d+),\s*(.*)")
GPU_HEADER = re.compile(r"GPU ([0-9A-Fa-f]+:[0-9A-Fa-f]+:[0-9A-Fa-f.]+)$")
BusKey = tuple[int, int, int]


def bus_key(text: str) -> BusKey:
    """(domain, bus, device) of "00000000:3B:00.0", "0000:3B:00.0" or the kernel's "0000:3b:00"."""
    parts = text.strip().removeprefix("PCI:").split(":")
    if len(parts) != 3:
        raise ValueError(f"not a PCI bus id: {text!r}")
    return int(parts[0], 16), int(parts[1], 16), int(parts[2].split(".")[0], 16)


def parse_list(text: str) -> tuple[dict[str, tuple[int, BusKey]], dict[BusKey, str]]:
    """``LIST_COMMAND``'s output: (uuid -> (index, bus), bus of each lost GPU -> its message)."""
    rows: dict[str, tuple[int, BusKey]] = {}
    lost: dict[BusKey, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        m = LOST_LINE.search(line)
        if m:
            lost[bus_key(m.group(1))] = " ".join(m.group(2).split())
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].startswith("GPU-"):
            raise ValueError(f"nvidia-smi: expected 'index, uuid, pci.bus_id', got {line!r}")
        rows[parts[1]] = (int(parts[0]), bus_key(parts[2]))
    return rows, lost


def parse_query(text: str) -> dict[BusKey, dict]:
    """``nvidia-smi -q`` output: bus -> the GPU's section as nested dicts (``"Key": value`` or
    ``"Section": {...}``), from its indentation."""
    gpus: dict[BusKey, dict] = {}
    stack: list[tuple[int, dict]] = []
    for raw in text.splitlines():
        if not raw.strip() or raw.startswith("="):
            continue
        indent = len(raw) - len(raw.lstrip(" "))
        key, sep, value = raw.strip().partition(":")
        if indent == 0:
            stack = []
            header = GPU_HEADER.match(raw.strip())
            if header:
                section: dict = {}
                gpus[bus_key(header.group(1))] = section
                stack = [(0, section)]
            continue
        if not stack:
            continue
        while len(stack) > 1 and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        if sep and value.strip():
            parent[key.strip()] = value.strip()
        else:
            child: dict = {}
            parent[key.strip()] = child
            stack.append((indent, child))
    return gpus


def _count(value) -> int:
    return int(value) if isinstance(value, str) and value.isdigit() else 0


def problems(section: dict) -> list[str]:
    """What is wrong with one GPU, from its ``nvidia-smi -q`` section ([] when healthy)."""
    found = []
    volatile = (section.get("ECC Errors") or {}).get("Volatile") or {}
    if isinstance(volatile, dict):
        # Drivers R510+: "DRAM Uncorrectable", "SRAM Uncorrectable[ Parity| SEC-DED]"; older:
        # "Double Bit" -> "Total".
        uncorrectable = sum(_count(v) for k, v in volatile.items() if "Uncorrectable" in k)
        double = volatile.get("Double Bit")
        if isinstance(double, dict):
            uncorrectable += _count(double.get("Total"))
        if uncorrectable:
            found.append(f"{uncorrectable} uncorrectable ECC error(s) since the driver loaded")
    retired = section.get("Retired Pages")
    if isinstance(retired, dict) and any(k.startswith("Pending") and v == "Yes" for k, v in retired.items()):
        found.append("a page retirement is pending (reset the GPU)")
    remap = section.get("Remapped Rows")
    if isinstance(remap, dict):
        if remap.get("Remapping Failure Occurred") == "Yes":
            found.append("row remapping failed (the GPU needs service)")
        elif remap.get("Pending") == "Yes":
            found.append("a row remapping is pending (reset the GPU)")
    return found


def parse_xids(text: str) -> list[tuple[BusKey, int, str]]:
    """Kernel log lines of driver Xid reports: (bus, xid, the rest of the line)."""
    out = []
    for line in text.splitlines():
        m = XID_LINE.search(line)
        if m:
            out.append((bus_key(m.group(1)), int(m.group(2)), m.group(3).strip()))
    return out


class GpuHealth:
    """Runs the checks for the GPUs of one worker; :meth:`check` returns index -> reason."""

    def __init__(self, gpus: Iterable[Gpu], runner: Runner = subprocess.run, xid_source: str = "dmesg",
                 xid_quarantine_s: float = 3600.0, clock: Callable[[], float] = time.time) -> None:
        self.gpus = list(gpus)
        self.runner = runner
        self.xid_source = xid_source.strip()
        self.xid_quarantine_s = xid_quarantine_s
        self.clock = clock
        self._bus: dict[str, BusKey] = {}  # uuid -> bus, as last listed
        self._xid_seen: set[str] | None = None  # lines read so far (None: not read yet)
        self._xid_until: dict[int, tuple[float, str]] = {}
        self._xid_broken = False

    def _run(self, command: tuple[str, ...]) -> tuple[str | None, str]:
        try:
            result = self.runner(list(command), capture_output=True, text=True,
                                 timeout=NVIDIA_SMI_TIMEOUT_S, check=False)
        except FileNotFoundError:
            return None, f"{command[0]} is not installed"
        except subprocess.TimeoutExpired:
            return None, f"{command[0]} did not answer within {NVIDIA_SMI_TIMEOUT_S:g} s"
        except OSError as exc:
            return None, f"{command[0]} could not be run: {exc}"
        return result.stdout or "", " ".join(((result.stderr or "") + " " + (result.stdout or "")).split()) \
            if result.returncode else ""

    def check(self) -> dict[int, str]:
        if not self.gpus:
            return {}
        reasons: dict[int, list[str]] = {}
        listing, error = self._run(LIST_COMMAND)
        if listing is None:
            return {g.index: f"nvidia-smi failed: {error}" for g in self.gpus}
        try:
            rows, lost = parse_list(listing)
        except ValueError as exc:
            return {g.index: f"nvidia-smi failed: {error or exc}" for g in self.gpus}
        for g in self.gpus:
            if g.uuid in rows:
                self._bus[g.uuid] = rows[g.uuid][1]
                continue
            bus = self._bus.get(g.uuid)
            message = lost.get(bus) if bus is not None else next(iter(lost.values()), None)
            reasons.setdefault(g.index, []).append(
                f"GPU is lost ({message})" if message else "missing from nvidia-smi's list of GPUs")
        detail, error = self._run(DETAIL_COMMAND)
        sections = parse_query(detail) if detail else {}
        for g in self.gpus:
            section = sections.get(self._bus.get(g.uuid, (-1, -1, -1)))
            if section is not None:
                reasons.setdefault(g.index, []).extend(problems(section))
        for index, why in self._xids().items():
            reasons.setdefault(index, []).append(why)
        return {i: "; ".join(r) for i, r in sorted(reasons.items()) if r}

    def _read_xid_source(self) -> str | None:
        if not self.xid_source or self._xid_broken:
            return None
        if self.xid_source == "dmesg":
            text, error = self._run(("dmesg",))
            if text is None or error:
                log.warning("GPU health: cannot read the kernel log with dmesg (%s); Xid errors are not "
                            "checked (set worker.gpu_xid_source to a readable log file, or \"\")",
                            error or "no output")
                self._xid_broken = True
                return None
            return text
        try:
            with Path(self.xid_source).open("rb") as f:
                size = f.seek(0, 2)
                f.seek(max(0, size - (4 << 20)))  # the last 4 MiB: the Xids that matter are recent
                return f.read().decode(errors="replace")
        except OSError as exc:
            log.warning("GPU health: cannot read %s (%s); Xid errors are not checked", self.xid_source, exc)
            self._xid_broken = True
            return None

    def _xids(self) -> dict[int, str]:
        text = self._read_xid_source()
        now = self.clock()
        if text is not None:
            by_bus = {bus: g.index for g in self.gpus if (bus := self._bus.get(g.uuid)) is not None}
            lines = {line for line in text.splitlines() if "NVRM: Xid" in line}
            first = self._xid_seen is None
            for line in sorted(lines - (self._xid_seen or set())):
                for bus, xid, rest in parse_xids(line):
                    index = by_bus.get(bus)
                    if index is None or xid not in CRITICAL_XIDS:
                        continue
                    if first:
                        log.warning("GPU health: GPU %d reported Xid %d before this worker started: %s",
                                    index, xid, rest)
                    else:
                        self._xid_until[index] = (now + self.xid_quarantine_s, f"Xid {xid}: {rest}")
            self._xid_seen = lines
        self._xid_until = {i: v for i, v in self._xid_until.items() if v[0] > now}
        return {i: why for i, (_until, why) in self._xid_until.items()}
