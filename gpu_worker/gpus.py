"""GPU discovery on a worker host (DESIGN §4).

A worker learns its GPUs once at start from ``nvidia-smi``. A host without a usable NVIDIA
stack (no binary, driver not loaded, hung driver) is not an error under ``worker.gpus =
"auto"``: the worker logs why and runs CPU-only jobs. An explicit list of indices is a promise
by the operator, so anything that breaks it is a :class:`ConfigError` instead.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from typing import Callable

from pink.errors import ConfigError

log = logging.getLogger(__name__)

#: The exact query the worker runs; tests and :func:`parse_nvidia_smi` assume these columns.
NVIDIA_SMI_COMMAND: tuple[str, ...] = (
    "nvidia-smi",
    "--query-gpu=index,uuid,name,memory.total",
    "--format=csv,noheader",
)
#: A wedged driver can make nvidia-smi hang for minutes; the worker must not hang with it.
NVIDIA_SMI_TIMEOUT_S = 30.0

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str
    memory_mib: int


def _parse_memory(field: str, line: str) -> int:
    value = field.strip()
    # "--format=csv" appends the unit, "--format=csv,nounits" does not; accept both.
    if value.endswith("MiB"):
        value = value[: -len("MiB")].strip()
    if not value.isdigit():
        raise ValueError(f"nvidia-smi: bad memory.total {field.strip()!r} in line {line!r}")
    return int(value)


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """Parse ``nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader``.

    Accepts the ``nounits`` variant too. Blank lines are ignored. Raises ValueError naming
    the offending line when a line is not ``index, uuid, name, memory``.
    """
    gpus: list[Gpu] = []
    seen: set[int] = set()
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4:
            raise ValueError(
                f"nvidia-smi: expected 'index, uuid, name, memory.total', got {line!r}"
            )
        # A marketing name could in principle contain a comma; the other columns cannot,
        # so take them from both ends and leave the rest to the name.
        index_s, uuid, memory_s = parts[0], parts[1], parts[-1]
        name = ", ".join(parts[2:-1])
        if not index_s.isdigit():
            raise ValueError(f"nvidia-smi: bad index {index_s!r} in line {line!r}")
        if not uuid.startswith("GPU-"):
            raise ValueError(f"nvidia-smi: bad uuid {uuid!r} in line {line!r}")
        if not name:
            raise ValueError(f"nvidia-smi: empty GPU name in line {line!r}")
        index = int(index_s)
        if index in seen:
            raise ValueError(f"nvidia-smi: GPU index {index} listed twice (line {line!r})")
        seen.add(index)
        gpus.append(Gpu(index=index, uuid=uuid, name=name, memory_mib=_parse_memory(memory_s, line)))
    gpus.sort(key=lambda g: g.index)
    return gpus


def _parse_setting(setting: str) -> list[int]:
    indices: list[int] = []
    for part in setting.split(","):
        part = part.strip()
        if not part.isdigit():
            raise ConfigError(
                f"worker.gpus: {setting!r} is not valid; use \"auto\", \"none\" or a comma "
                f"list of GPU indices such as \"0,2\""
            )
        index = int(part)
        if index in indices:
            raise ConfigError(f"worker.gpus: {setting!r} lists GPU {index} twice")
        indices.append(index)
    return indices


def _run_nvidia_smi(runner: Runner) -> tuple[list[Gpu] | None, str]:
    """Return (gpus, "") or (None, why nvidia-smi could not be used)."""
    try:
        result = runner(
            list(NVIDIA_SMI_COMMAND),
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        return None, "nvidia-smi is not installed"
    except subprocess.TimeoutExpired:
        return None, f"nvidia-smi did not answer within {NVIDIA_SMI_TIMEOUT_S:g} s"
    except OSError as exc:
        return None, f"nvidia-smi could not be run: {exc}"
    if result.returncode != 0:
        # nvidia-smi prints its failure ("NVIDIA-SMI has failed because...",
        # "No devices were found") on stdout, not stderr.
        message = " ".join(((result.stderr or "") + " " + (result.stdout or "")).split())
        return None, f"nvidia-smi exited with status {result.returncode}: {message or 'no output'}"
    return parse_nvidia_smi(result.stdout or ""), ""


def discover_gpus(setting: str = "auto", runner: Runner = subprocess.run) -> list[Gpu]:
    """The GPUs this worker may hand to jobs, by ``worker.gpus``.

    - ``"auto"``: every GPU nvidia-smi reports; [] (with one warning) when nvidia-smi is
      missing, fails or hangs, so the worker runs CPU-only jobs.
    - ``"none"``: [] without running nvidia-smi.
    - ``"0,2"``: exactly those indices; ConfigError when one is absent or nvidia-smi fails.

    ValueError from :func:`parse_nvidia_smi` propagates: output we cannot read from a working
    nvidia-smi is a bug to fix, not a host without GPUs.
    """
    choice = setting.strip().lower()
    if choice == "none":
        return []
    if choice == "auto":
        gpus, why = _run_nvidia_smi(runner)
        if gpus is None:
            log.warning("no GPUs: %s; this worker will run CPU-only jobs", why)
            return []
        log.info("found %d GPU(s): %s", len(gpus), ", ".join(f"{g.index}={g.name}" for g in gpus))
        return gpus
    wanted = _parse_setting(choice)
    gpus, why = _run_nvidia_smi(runner)
    if gpus is None:
        raise ConfigError(f"worker.gpus is {setting!r} but {why}")
    by_index = {g.index: g for g in gpus}
    missing = [i for i in wanted if i not in by_index]
    if missing:
        present = ",".join(str(i) for i in sorted(by_index)) or "none"
        raise ConfigError(
            f"worker.gpus is {setting!r} but this host has no GPU "
            f"{','.join(str(i) for i in missing)} (present: {present})"
        )
    return [by_index[i] for i in sorted(wanted)]


__all__ = ["Gpu", "NVIDIA_SMI_COMMAND", "parse_nvidia_smi", "discover_gpus"]

