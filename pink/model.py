"""Immutable records read from the store: jobs, workers, inputs, users, tokens."""

from __future__ import annotations

import calendar
import dataclasses
import json
import os
import re
import time
from fractions import Fraction
from typing import Any

from .states import JobState

JOB_ID = re.compile(r"^[0-9a-f]{20}$")
USER_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
WORKER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}$")
#: A job's input (its files at /in) is named by the sha256 of its tar archive, as uploaded.
INPUT_ID = IMAGE_ID
#: What a job's output archive holds: the container's filesystem, only what the job changed
#: (with a list of what it deleted), one directory made empty and writable for it, or nothing.
OUTPUT_MODES = ("full", "changes", "path:/DIR", "none")
#: The most top-level entries of an archive a job records (Job.output_entries).
MAX_OUTPUT_ENTRIES = 50
_OUTPUT_DIR = re.compile(r"^(/[A-Za-z0-9_.@+-]+){1,16}$")
#: Directories an output directory may not be, nor lie under: the job's inputs and datasets,
#: the kernel's and docker's own mounts, and what the image needs to run.
_RESERVED_DIRS = ("/in", "/data", "/proc", "/sys", "/dev", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32",
                  "/lib64", "/libx32", "/run", "/var", "/boot")
#: Operator-declared dataset names (worker.datasets), mounted at /data/NAME.
DATASET_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
#: The least memory docker gives a container.
MIN_MEMORY_BYTES = 6 << 20
#: Docker's size syntax: bytes, or a number with a k/m/g/t suffix (powers of 1024), "b" or "ib" after.
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])i?)?b?\s*$", re.IGNORECASE)
_SIZE_UNITS = {None: 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str | int) -> int:
    """Bytes from docker's size syntax: ``"16g"`` -> 17179869184; ``"512m"``, ``"1.5g"``,
    ``"16GiB"``, ``"100"`` and non-negative ints too.

    Suffixes b/k/m/g/t (any case, optionally followed by "b" or "ib") are powers of 1024, as
    in ``docker run --memory``. Raises ValueError for anything else.
    """
    if isinstance(text, int) and not isinstance(text, bool) and text >= 0:
        return text
    match = _SIZE.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"{text!r} is not a size (bytes, or a number with b/k/m/g/t, e.g. 512m, 16g)")
    number, unit = match.groups()
    return int(Fraction(number) * _SIZE_UNITS[unit and unit.lower()])


def valid_output(text: str) -> str:
    """``text`` as an output mode (``full``, ``changes``, ``none`` or ``path:/DIR``), or raise
    ValueError saying what is wrong. DIR must be absolute and normalised (no ``..``, ``//``,
    trailing ``/``), at most 200 characters of letters, digits and ``_.@+-``, and neither ``/``
    nor a system directory (or one under it) such as /in, /data, /proc, /etc, /usr."""
    if text in ("full", "changes", "none"):
        return text
    if not text.startswith("path:"):
        raise ValueError(f"output must be one of full, changes, none or path:/DIR (e.g. path:/out), not {text!r}")
    folder = text[len("path:"):]
    if len(folder) > 200 or not _OUTPUT_DIR.fullmatch(folder) or any(p in (".", "..") for p in folder.split("/")):
        raise ValueError(f"output path:{folder} must name an absolute, normalised directory such as path:/out "
                         f"(letters, digits and _.@+-, no '..', at most 200 characters)")
    for reserved in _RESERVED_DIRS:
        if folder == reserved or folder.startswith(reserved + "/"):
            raise ValueError(f"output path:{folder} is not allowed: {reserved} belongs to the system or to "
                             f"PINK; use a directory of your own such as /out")
    return text


def output_dir(mode: str) -> str:
    """The directory of a ``path:/DIR`` output mode ("" for the other modes)."""
    return mode[len("path:"):] if mode.startswith("path:") else ""


def format_size(n: float) -> str:
    """``17179869184`` -> ``"16 GiB"``, ``1610612736`` -> ``"1.5 GiB"``: sizes for people."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= scale:
            return f"{round(n / scale, 1):g} {unit}"
    return f"{n:g} bytes"


#: A day as usage queries take it (UTC).
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def day_of(ts: float) -> str:
    """The UTC day of ``ts``: ``"2026-12-02"``."""
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def parse_day(text: str) -> str:
    """``text`` checked as a day ``YYYY-MM-DD`` (ValueError saying so otherwise)."""
    try:
        if not DAY.match(text):
            raise ValueError
        calendar.timegm(time.strptime(text, "%Y-%m-%d"))
    except ValueError:
        raise ValueError(f"{text!r} is not a day: write YYYY-MM-DD, e.g. 2026-12-01") from None
    return text


def new_job_id(now: float | None = None) -> str:
    """20 hex digits: milliseconds since the epoch, then randomness, so ids sort by age."""
    ms = int((time.time() if now is None else now) * 1000)
    return f"{ms:012x}{os.urandom(4).hex()}"


def output_expiry(ended_at: float, retention_s: float) -> float | None:
    """When a job that ended at ``ended_at`` loses its archive and log to the worker's retention."""
    return ended_at + retention_s if retention_s > 0 else None


@dataclasses.dataclass(frozen=True)
class Job:
    id: str
    user: str
    state: JobState
    worker: str
    gpus: int = 0
    timeout_s: int = 3600
    output: str = "full"
    priority: int = 0
    name: str = ""
    image_id: str = ""
    #: Bytes of the image uploaded for this job (0: it ran from an image its worker held).
    image_bytes: int = 0
    #: The image's size as its worker's docker counts it (its layers, unpacked), recorded
    #: when the job starts (0: not started yet, or a record from before this field).
    image_size: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    history: tuple[dict, ...] = ()
    gpu_indices: tuple[int, ...] = ()
    exit_code: int | None = None
    reason: str = ""
    #: Outcome decided when the container stopped, written as the terminal state after export.
    outcome: str = ""
    output_bytes: int = 0
    output_sha256: str = ""
    #: Top-level entries of the archive (at most MAX_OUTPUT_ENTRIES, largest first), recorded
    #: at the end of an export of mode changes or path:: {"name", "bytes", "type": file, dir,
    #: link or deleted}.
    output_entries: tuple[dict, ...] = ()
    #: Set by a cancel that asked to throw the job's output away (no export).
    discard_output: bool = False
    log_bytes: int = 0
    #: When the worker deletes the archive and log (None: never, or nothing to keep).
    output_expires_at: float | None = None
    gpu_seconds: float = 0.0
    #: Sampled through NVML while the job ran (gpu_worker/gpustats.py; None: no GPU, no NVML on
    #: its worker, or a record from before): utilisation of its GPUs in percent, mean and max
    #: over all samples, and the most memory one of its GPUs held, in bytes.
    gpu_util_mean: float | None = None
    gpu_util_max: float | None = None
    gpu_mem_peak_bytes: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    resubmit_of: str = ""
    idempotency_key: str = ""
    #: What the job runs: argv replacing the image's CMD / ENTRYPOINT (None: the image's own;
    #: an empty entrypoint clears the image's), environment (the owner's eyes only), workdir.
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    workdir: str = ""
    #: Operator-declared datasets of its worker, mounted read-only at /data/NAME.
    datasets: tuple[str, ...] = ()
    #: The input its worker holds, mounted read-only at /in ("": none).
    input: str = ""
    #: Resources the container gets, resolved at placement (0 = unlimited).
    cpus: float = 0.0
    memory_bytes: int = 0
    shm_bytes: int = 0
    #: Job arrays (pink.arrays): the array's id ("": not in one), this job's index (told as
    #: PINK_ARRAY_INDEX), how many jobs the array has, and how many of them may be claimed
    #: at once (0: no limit).
    array_id: str = ""
    array_index: int | None = None
    array_size: int = 0
    array_limit: int = 0
    #: The array's run slot this job holds while claimed (-1: none; pink.arraystore).
    array_slot: int = -1
    #: Random id of the write that produced this version; lets a retried CAS recognise itself.
    write_id: str = ""
    #: Opt-in re-run of a LOST job (pink.reactions): retries left, the LOST job this one
    #: retries, the job that retried this one, and why a retry waits or was given up.
    retry_lost: int = 0
    retry_of: str = ""
    retried_by: str = ""
    retry_note: str = ""
    #: True once PINK stopped trying to retry this LOST job (retry_note says why).
    retry_given_up: bool = False
    #: E-mail the owner when the job ends; POST the end to this URL (on the operator's allow-list).
    notify: bool = False
    webhook: str = ""
    #: When the end was announced (e-mail and/or webhook; None: not yet), and what failed.
    notified_at: float | None = None
    notify_note: str = ""
    #: When the job was added to its user's usage rollup (pink.store_usage; None: not yet).
    accounted_at: float | None = None
    #: etcd mod_revision this record was read at (0 = not stored yet). Not serialised.
    mod_revision: int = dataclasses.field(default=0, compare=False)

    def to_json(self) -> bytes:
        data = dataclasses.asdict(self)
        del data["mod_revision"]
        data["state"] = self.state.value
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes, mod_revision: int = 0) -> "Job":
        data: dict[str, Any] = json.loads(raw)
        names = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k in names}
        data["state"] = JobState(data["state"])
        data["history"] = tuple(data.get("history", ()))
        data["gpu_indices"] = tuple(data.get("gpu_indices", ()))
        data["datasets"] = tuple(data.get("datasets", ()))
        data["output_entries"] = tuple(data.get("output_entries", ()))
        for argv in ("command", "entrypoint"):
            if data.get(argv) is not None:
                data[argv] = tuple(data[argv])
        return cls(**data, mod_revision=mod_revision)

    def public(self) -> dict[str, Any]:
        """The job as the API shows it."""
        data = json.loads(self.to_json())
        for private in ("write_id", "idempotency_key", "outcome"):
            data.pop(private, None)
        return data


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """What a worker registers (static) plus its heartbeat (dynamic, on its lease)."""

    name: str
    ssh_host: str
    ssh_port: int
    ssh_user: str
    inbox: str
    outbox: str
    gpus: tuple[dict, ...] = ()
    cpus: int = 1
    memory_bytes: int = 0
    archive_suffix: str = ".tar.zst"
    #: Outputs of jobs that ended longer ago than this are deleted (0 = kept).
    output_retention_s: float = 0.0
    registered_at: float = 0.0
    #: Names of the operator-declared datasets this worker can mount (worker.datasets).
    datasets: tuple[str, ...] = ()
    #: Per-job resources (pink.scheduling.job_resources): a CPU-only job's defaults (0: no
    #: limit; a GPU job gets its share of the host instead), the /dev/shm default (0: docker's
    #: 64 MiB) and the most a job may ask for (0, as in records of older workers: the host's).
    default_cpus: float = 0.0
    default_memory_bytes: int = 0
    default_shm_bytes: int = 0
    max_cpus: float = 0.0
    max_memory_bytes: int = 0
    #: Its configured max_parallel_jobs (0: an older worker); an admin's live setting
    #: (pink.slots) may differ: ``max_parallel_jobs`` below is the one in force.
    slots_configured: int = 0
    # dynamic part, from the heartbeat key; alive False when the lease is gone
    alive: bool = False
    drained: bool = False
    disk_free_bytes: int = 0
    images: tuple[str, ...] = ()
    layers: tuple[str, ...] = ()
    gpus_free: tuple[int, ...] = ()
    running: int = 0
    max_parallel_jobs: int = 1
    heartbeat_at: float = 0.0
    #: Bytes of the job images PINK loaded that the engine holds (gpu_worker.imagegc).
    image_cache_bytes: int = 0
    #: GPUs that get no new jobs: index (as a string, as in JSON) -> why ("admin: ..." for an
    #: admin's quarantine, else what the worker's health check found).
    quarantined: dict[str, str] = dataclasses.field(default_factory=dict)

    STATIC = ("name", "ssh_host", "ssh_port", "ssh_user", "inbox", "outbox", "gpus", "cpus",
              "memory_bytes", "archive_suffix", "output_retention_s", "registered_at", "datasets",
              "default_cpus", "default_memory_bytes", "default_shm_bytes", "max_cpus", "max_memory_bytes",
              "slots_configured")

    def static_json(self) -> bytes:
        return json.dumps({k: getattr(self, k) for k in self.STATIC}).encode()

    def heartbeat_json(self) -> bytes:
        keys = ("disk_free_bytes", "images", "layers", "gpus_free", "running",
                "max_parallel_jobs", "heartbeat_at", "image_cache_bytes", "quarantined")
        return json.dumps({k: getattr(self, k) for k in keys}).encode()

    @classmethod
    def from_parts(cls, static: bytes, heartbeat: bytes | None, drained: bool) -> "WorkerInfo":
        data = json.loads(static)
        if heartbeat is not None:
            data.update(json.loads(heartbeat), alive=True)
        names = {f.name for f in dataclasses.fields(cls)}
        data = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in names}
        return cls(**data, drained=drained)

    def public(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("layers")
        return data


@dataclasses.dataclass(frozen=True)
class InputRecord:
    """An input that a worker holds (in its inbox as a tar, or extracted for its jobs)."""

    input_id: str
    worker: str
    bytes: int = 0
    #: Who uploaded it to this worker: only they may run jobs with it (knowing an id is not enough).
    users: tuple[str, ...] = ()
    #: When it was last uploaded there, and when a job was last placed there with it (0: never).
    uploaded_at: float = 0.0
    used_at: float = 0.0
    #: etcd mod_revisions of the record and of its last use (0: none), for a guarded removal.
    mod_revision: int = dataclasses.field(default=0, compare=False)
    use_revision: int = dataclasses.field(default=0, compare=False)


@dataclasses.dataclass(frozen=True)
class User:
    name: str
    password_hash: str
    admin: bool = False
    created_at: float = 0.0
    #: A disabled user can neither log in nor use a token or session; their jobs stay.
    disabled: bool = False
    #: Where job-end e-mails go ("": none), and whether every job of theirs sends one (else only
    #: jobs submitted with notify=1).
    email: str = ""
    notify_all: bool = False


@dataclasses.dataclass(frozen=True)
class Token:
    id: str
    user: str
    name: str = ""
    created_at: float = 0.0
    #: When the token stops working (0: never, tokens made before expiry existed).
    expires_at: float = 0.0
