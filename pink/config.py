"""Configuration: a TOML file plus ``PINK_<SECTION>_<KEY>`` environment overrides.

The file is found at ``$PINK_CONFIG`` (default ``/etc/pink/pink.toml``). Every value has a
default that suits an all-in-one cluster on one host, except secrets, which must be set where
they are used. Bad values raise :class:`ConfigError` naming the key and what it should be.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import socket
import tomllib
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError
from .model import DATASET_NAME, MIN_MEMORY_BYTES, format_size, parse_size

DEFAULT_PATH = "/etc/pink/pink.toml"
#: The smallest worker.max_disk_bytes other than 0 (no cap).
MIN_DISK_BYTES = 64 << 20


@dataclasses.dataclass(frozen=True)
class EtcdConfig:
    endpoints: tuple[str, ...] = ("127.0.0.1:2379",)
    ca_cert: str = ""
    cert: str = ""
    key: str = ""
    #: Seconds one etcd request may take before the endpoint counts as unreachable.
    timeout_s: float = 5.0
    #: Key prefix, so several clusters can share one etcd.
    prefix: str = "/pink"


@dataclasses.dataclass(frozen=True)
class WebConfig:
    secret_key: str = ""
    #: Private key web servers use to reach the workers' transfer account.
    ssh_key: str = "/etc/pink/ssh/id_ed25519"
    #: Pinned host keys of the workers; unknown hosts are refused, never added.
    known_hosts: str = "/etc/pink/ssh/known_hosts"
    #: OpenSSH ``Ciphers`` list of the web servers' bulk transfers to workers, most preferred
    #: first (the worker's sshd picks the first it also allows). AES-GCM runs on AES-NI and
    #: costs ~30 % less CPU per GiB than OpenSSH's default chacha20-poly1305 (bench/RESULTS.md).
    ssh_ciphers: str = ("aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,"
                        "aes128-ctr,aes256-ctr")
    #: Must match nginx's client_max_body_size.
    max_upload_bytes: int = 64 << 30
    #: Every other request body (JSON, login forms) larger than this is refused with 413
    #: before a byte of it is read, whoever sends it.
    max_body_bytes: int = 1 << 20
    quota_queued_jobs: int = 100
    quota_upload_bytes: int = 64 << 30
    #: The largest input (a job's files at /in, POST /api/v1/inputs) one upload may carry.
    quota_input_bytes: int = 64 << 30
    #: The most jobs one job array may have (``array=``; each also counts against quota_queued_jobs).
    max_array_size: int = 1000
    #: How often each web server sweeps for jobs of dead workers.
    janitor_interval_s: float = 5.0
    #: QUEUED jobs of a worker that is down wait this long for it, then fail.
    lost_worker_grace_s: float = 600.0
    #: Each web server process holds a lease; its uploads die with it (DESIGN §3).
    lease_ttl_s: int = 15
    #: Ended job records leave etcd this many days after their outputs expire (after their end
    #: when the outputs never expire); their usage stays in the rollups (pink.store_usage).
    #: 0 keeps every record forever. Fractions are allowed (tests use seconds).
    job_record_retention_days: float = 30.0
    #: API tokens last this many days unless their request asks for fewer, at most max.
    token_days: float = 90.0
    token_max_days: float = 365.0
    #: A browser session ends this long after its login, or at logout, whichever comes first.
    session_hours: float = 12.0
    #: Failed logins are counted per user name and per client address over this window; past
    #: the limits, further attempts are refused with 429 until the window ends.
    login_window_s: int = 300
    login_failures_per_user: int = 10
    login_failures_per_address: int = 50
    #: Addresses or networks of the load balancers. Only requests from these may set the
    #: client address, scheme and host with X-Forwarded-* headers; anyone else's are ignored.
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    name: str = dataclasses.field(default_factory=socket.gethostname)
    docker_url: str = "unix:///var/run/docker.sock"
    inbox: str = "/var/lib/pink/inbox"
    outbox: str = "/var/lib/pink/outbox"
    #: Jobs' inputs, extracted from their tar in the inbox, one folder each (mounted read-only at /in).
    inputs_dir: str = "/var/lib/pink/inputs"
    #: How web servers reach this worker over SSH.
    ssh_host: str = "127.0.0.1"
    ssh_port: int = 22
    ssh_user: str = "pink-transfer"
    lease_ttl_s: int = 10
    loop_interval_s: float = 1.0
    #: "auto" (ask nvidia-smi), "none", or a comma list of indices to use.
    gpus: str = "auto"
    #: Container runtime for GPU jobs; empty means "nvidia" when the host has GPUs.
    runtime: str = ""
    #: Resources of a job that does not ask (pink.scheduling.job_resources): a CPU-only job
    #: gets cpus_per_job (0: no limit, or the maximum where one is set) and memory_per_job
    #: (docker's size syntax, e.g. "8g"; "": the maximum where one is set, else the host's
    #: memory / max_parallel_jobs, so that a full worker's jobs fit in its memory), a GPU job
    #: its share of the host (gpus x host CPUs / host GPUs, the same for memory); every job
    #: shm_per_job of /dev/shm ("": half of the job's memory).
    cpus_per_job: float = 0.0
    memory_per_job: str = ""
    shm_per_job: str = ""
    #: The most one job may ask for: 0 = the host's CPUs, "" = the host's memory.
    max_cpus_per_job: float = 0.0
    max_memory_per_job: str = ""
    #: Datasets jobs may mount, read-only at /data/NAME: name -> absolute path on this host.
    #: Environment: PINK_WORKER_DATASETS="imagenet=/srv/imagenet,coco=/srv/coco".
    datasets: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Processes and threads one job may have at once (docker's pids limit; never unlimited).
    pids_limit: int = 4096
    #: A job's log file keeps the first this many bytes the job printed, then the line
    #: "[PINK: log cut at N bytes: the job printed more]"; the job runs on.
    max_log_bytes: int = 100 << 20
    #: A job's output archive (compressed) may be this large: past it the export stops, the
    #: partial archive is deleted and the job fails with a reason saying so.
    max_output_bytes: int = 20 << 30
    #: What one job may write to its own filesystem (its container's writable layer, which is
    #: on this worker's disk; 0 = no cap, else at least 64 MiB). The runner asks docker for the
    #: layer's size (SizeRw) every disk_check_interval_s while the job runs, so a job can pass
    #: the cap by what it writes in one interval; past it the job is stopped (SIGTERM, then
    #: SIGKILL after stop_grace_s, as at its timeout) and fails with a reason saying so; what it
    #: wrote is exported as after a timeout, within max_output_bytes. A poller, not a quota:
    #: docker's hard quota (--storage-opt size) works only on some storage drivers.
    max_disk_bytes: int = 50 << 30
    disk_check_interval_s: float = 30.0
    network: str = "none"
    stop_grace_s: float = 10.0
    #: Jobs whose start or wait the engine keeps failing are resumed this long, then failed.
    engine_grace_s: float = 600.0
    max_parallel_jobs: int = 4
    #: Containers created (not started) for the CPU-only jobs next in the queue while the
    #: slots are busy, so a freed slot only starts one (gpu_worker.ahead); 0 = off.
    containers_ahead: int = 4
    #: How often to remove containers and inbox files of jobs that are over.
    sweep_interval_s: float = 60.0
    #: Output archives and logs are deleted this many days after their job ended (0 = kept).
    output_retention_days: float = 14.0
    #: Inputs that no job has used for this many days are deleted (0 = kept).
    input_retention_days: float = 7.0
    compressor: tuple[str, ...] = ("zstd", "-1", "-T0", "-q")
    archive_suffix: str = ".tar.zst"
    drain: bool = False
    #: Where the worker serves Prometheus metrics (host:port; "" or "off": nowhere). See docs/metrics.md.
    metrics_address: str = "127.0.0.1:9464"
    #: How often a running GPU job's GPUs are sampled (utilisation, memory) through NVML.
    gpu_sample_interval_s: float = 5.0
    #: Image GC (gpu_worker.imagegc): remove the job images PINK loaded, least recently used
    #: first, while the engine's data root has less than image_gc_min_free_bytes free or they
    #: take more than image_cache_max_bytes (0 switches a rule off); every image_gc_interval_s.
    image_gc_min_free_bytes: int = 10 << 30
    image_cache_max_bytes: int = 0
    image_gc_interval_s: float = 60.0
    #: Where the worker keeps its small state files (the images it loaded); "" = the folder
    #: "state" next to the inbox.
    state_dir: str = ""
    #: GPU health checks (gpu_worker.gpuhealth), at start and this often (0: only at start).
    gpu_health_interval_s: float = 60.0
    #: Where the driver's Xid reports are read: "dmesg", a log file (e.g. /var/log/kern.log) or
    #: "" (not checked). A GPU with a critical Xid is quarantined this long after it was read.
    gpu_xid_source: str = "dmesg"
    gpu_xid_quarantine_s: float = 3600.0

    @property
    def metrics_bind(self) -> tuple[str, int] | None:
        """``metrics_address`` as (host, port), or None when metrics are off."""
        if self.metrics_address.strip().lower() in ("", "off"):
            return None
        host, sep, port = self.metrics_address.strip().rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ConfigError(f"worker.metrics_address ({self.metrics_address!r}) must be host:port "
                              "(e.g. 127.0.0.1:9464, 0.0.0.0:9464) or off")
        return host.strip("[]") or "0.0.0.0", int(port)

    @property
    def state_path(self) -> str:
        return self.state_dir or os.path.join(os.path.dirname(self.inbox.rstrip("/")) or "/", "state")

    @property
    def output_retention_s(self) -> float:
        return self.output_retention_days * 86400

    @property
    def input_retention_s(self) -> float:
        return self.input_retention_days * 86400

    @property
    def memory_per_job_bytes(self) -> int:
        return parse_size(self.memory_per_job) if self.memory_per_job else 0

    @property
    def max_memory_per_job_bytes(self) -> int:
        return parse_size(self.max_memory_per_job) if self.max_memory_per_job else 0

    @property
    def shm_per_job_bytes(self) -> int:
        return parse_size(self.shm_per_job) if self.shm_per_job else 0

    def check_resources(self) -> None:
        """Per-job resources, caps and datasets: sizes that parse, defaults within the maxima."""
        for key, low in (("max_parallel_jobs", 1), ("containers_ahead", 0), ("pids_limit", 16),
                         ("max_log_bytes", 64 << 10), ("max_output_bytes", 1 << 20)):
            if getattr(self, key) < low:
                raise ConfigError(f"worker.{key} ({getattr(self, key)}) must be at least {low}")
        if self.max_disk_bytes < 0 or 0 < self.max_disk_bytes < MIN_DISK_BYTES:
            raise ConfigError(f"worker.max_disk_bytes ({self.max_disk_bytes}) must be 0 (no cap) or at least "
                              f"{MIN_DISK_BYTES}")
        for key in ("image_gc_min_free_bytes", "image_cache_max_bytes", "gpu_health_interval_s",
                    "gpu_xid_quarantine_s"):
            if not math.isfinite(getattr(self, key)) or getattr(self, key) < 0:
                raise ConfigError(f"worker.{key} ({getattr(self, key)}) must be 0 or more")
        if not math.isfinite(self.image_gc_interval_s) or self.image_gc_interval_s <= 0:
            raise ConfigError(f"worker.image_gc_interval_s ({self.image_gc_interval_s}) must be more than 0")
        if not math.isfinite(self.disk_check_interval_s) or self.disk_check_interval_s <= 0:
            raise ConfigError(f"worker.disk_check_interval_s ({self.disk_check_interval_s}) must be more than 0")
        if not math.isfinite(self.gpu_sample_interval_s) or self.gpu_sample_interval_s <= 0:
            raise ConfigError(f"worker.gpu_sample_interval_s ({self.gpu_sample_interval_s}) must be more than 0")
        self.metrics_bind  # noqa: B018 - raises ConfigError when it does not parse
        for key, low in (("memory_per_job", MIN_MEMORY_BYTES), ("max_memory_per_job", MIN_MEMORY_BYTES),
                         ("shm_per_job", 1 << 20)):
            try:
                size = getattr(self, f"{key}_bytes")
            except ValueError as exc:
                raise ConfigError(f"worker.{key}: {exc}") from None
            if size and size < low:
                raise ConfigError(f"worker.{key} ({getattr(self, key)}) must be at least {format_size(low)}")
        for key in ("cpus_per_job", "max_cpus_per_job"):
            value = getattr(self, key)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"worker.{key} ({value}) must be 0 or more")
        if self.max_cpus_per_job and self.cpus_per_job > self.max_cpus_per_job:
            raise ConfigError(f"worker.cpus_per_job ({self.cpus_per_job}) is more than worker.max_cpus_per_job "
                              f"({self.max_cpus_per_job})")
        if self.max_memory_per_job and self.memory_per_job_bytes > self.max_memory_per_job_bytes:
            raise ConfigError(f"worker.memory_per_job ({self.memory_per_job}) is more than "
                              f"worker.max_memory_per_job ({self.max_memory_per_job})")
        for name, path in self.datasets.items():
            if not DATASET_NAME.fullmatch(name):
                raise ConfigError(f"worker.datasets: {name!r} is not a dataset name (lower case letters, digits "
                                  f"and _.-, starting with a letter or digit, at most 63)")
            if not path.startswith("/") or "\0" in path:
                raise ConfigError(f"worker.datasets: the path of {name} ({path!r}) must be absolute")


@dataclasses.dataclass(frozen=True)
class NotifyConfig:
    """Job-end notifications and retries of LOST jobs (pink.reactions, the web servers)."""

    #: The SMTP relay job-end e-mails go through ("": no e-mail; notify=1 is refused).
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_from: str = ""
    smtp_starttls: bool = False
    smtp_user: str = ""
    smtp_password: str = ""
    #: Where webhooks may go: URL prefixes ("https://hooks.example.org/pink/") or host names
    #: ("hooks.example.org": any https URL on it). Empty: webhook= is refused.
    webhook_allow: tuple[str, ...] = ()
    #: Seconds one webhook POST or SMTP session may take; attempts per notification (with
    #: backoff doubling from backoff_s) before it is given up and noted on the job.
    timeout_s: float = 10.0
    attempts: int = 5
    backoff_s: float = 5.0
    #: The site's address for links in notifications ("": links are paths only).
    base_url: str = ""
    #: A LOST job with retry_lost waits this long for a live worker holding its image.
    retry_give_up_s: float = 1800.0
    #: How often each web server looks for ended jobs to notify or retry.
    interval_s: float = 5.0

    @property
    def email_enabled(self) -> bool:
        return bool(self.smtp_host and self.smtp_from)


@dataclasses.dataclass(frozen=True)
class SchedulingConfig:
    """How workers order their queues and cap users (pink.fairshare, pink.runslots). Workers
    and web servers read it alike (the web servers to show positions and reasons): set it
    the same on every host (the roles write it from pink_cluster_scheduling)."""

    #: Fair share: a user's GPU-seconds count half as much this many days later; users with
    #: less decayed usage go first among jobs of equal priority. 0: no fair share by usage
    #: (users with fewer running jobs go first, as before).
    fair_share_half_life_days: float = 7.0
    #: What one CPU-second counts in fair share, in GPU-seconds (Slurm's billing weights: a
    #: CPU-only job is charged its CPU-seconds x this; a GPU job its GPU-seconds plus this).
    fair_share_cpu_weight: float = 0.1
    #: The most GPUs one user's claimed jobs may hold on all workers together (0: no limit);
    #: admins set other values per user (`pink-admin quota`).
    gpu_quota: int = 0


@dataclasses.dataclass(frozen=True)
class Config:
    etcd: EtcdConfig = dataclasses.field(default_factory=EtcdConfig)
    web: WebConfig = dataclasses.field(default_factory=WebConfig)
    worker: WorkerConfig = dataclasses.field(default_factory=WorkerConfig)
    notify: NotifyConfig = dataclasses.field(default_factory=NotifyConfig)
    scheduling: SchedulingConfig = dataclasses.field(default_factory=SchedulingConfig)
    path: str = ""

    def check(self) -> "Config":
        """Cross-field rules: the loop and retries must fit in the lease TTL."""
        w = self.worker
        if w.lease_ttl_s < 3 * w.loop_interval_s:
            raise ConfigError(
                f"worker.lease_ttl_s ({w.lease_ttl_s}) must be at least 3 x worker.loop_interval_s "
                f"({w.loop_interval_s}) so a busy loop does not lose its lease"
            )
        if self.etcd.timeout_s * 2 > w.lease_ttl_s:
            raise ConfigError(
                f"etcd.timeout_s ({self.etcd.timeout_s}) must be at most half of worker.lease_ttl_s"
            )
        if self.web.job_record_retention_days < 0:
            raise ConfigError(f"web.job_record_retention_days ({self.web.job_record_retention_days}) must be "
                              f">= 0 (0 keeps job records forever)")
        if self.web.lease_ttl_s < 3 * self.web.janitor_interval_s:
            raise ConfigError(
                f"web.lease_ttl_s ({self.web.lease_ttl_s}) must be at least 3 x web.janitor_interval_s "
                f"({self.web.janitor_interval_s}): the janitor keeps the web server's lease alive"
            )
        for proxy in self.web.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ConfigError(f"web.trusted_proxies: {proxy!r} is not an IP address or network") from None
        for what, days in (("output", w.output_retention_days), ("input", w.input_retention_days)):
            if not math.isfinite(days) or days < 0:
                raise ConfigError(f"worker.{what}_retention_days ({days}) must be 0 (keep {what}s) or more")
        if not 0 < self.web.token_days <= self.web.token_max_days:
            raise ConfigError(f"web.token_days ({self.web.token_days}) must be more than 0 and at most "
                              f"web.token_max_days ({self.web.token_max_days})")
        if not 0 < self.web.session_hours <= 24 * 366:
            raise ConfigError(f"web.session_hours ({self.web.session_hours}) must be more than 0")
        if not 1024 <= self.web.max_body_bytes <= self.web.max_upload_bytes:
            raise ConfigError(f"web.max_body_bytes ({self.web.max_body_bytes}) must be between 1024 and "
                              f"web.max_upload_bytes ({self.web.max_upload_bytes})")
        if self.web.max_array_size < 1:
            raise ConfigError(f"web.max_array_size ({self.web.max_array_size}) must be at least 1")
        if not self.etcd.endpoints:
            raise ConfigError("etcd.endpoints is empty: list at least one host:port")
        w.check_resources()
        s = self.scheduling
        if not (math.isfinite(s.fair_share_half_life_days) and s.fair_share_half_life_days >= 0
                and math.isfinite(s.fair_share_cpu_weight) and s.fair_share_cpu_weight >= 0 and s.gpu_quota >= 0):
            raise ConfigError("scheduling: fair_share_half_life_days, fair_share_cpu_weight and gpu_quota "
                              "must be 0 or more")
        n = self.notify
        if n.attempts < 1 or n.timeout_s <= 0 or n.backoff_s < 0 or n.interval_s <= 0 or n.retry_give_up_s < 0:
            raise ConfigError("notify: attempts must be at least 1, timeout_s and interval_s more than 0, "
                              "backoff_s and retry_give_up_s 0 or more")
        for entry in n.webhook_allow:
            if "://" in entry and not entry.startswith(("http://", "https://")):
                raise ConfigError(f"notify.webhook_allow: {entry!r} must be an http(s):// URL prefix or a host name")
        return self


_SECTIONS = {"etcd": EtcdConfig, "web": WebConfig, "worker": WorkerConfig, "notify": NotifyConfig,
             "scheduling": SchedulingConfig}


def _coerce(section: str, field: dataclasses.Field, value: Any) -> Any:
    name = f"{section}.{field.name}"
    if field.default is not dataclasses.MISSING:
        kind = type(field.default)
    else:
        kind = type(field.default_factory())  # type: ignore[misc]
    try:
        if kind is dict:
            if isinstance(value, str):  # "name=/path,name2=/path2"
                pairs = [p.partition("=") for p in (p.strip() for p in value.split(",")) if p]
                if any(not eq for _, eq, _ in pairs):
                    raise ValueError(value)
                value = {k.strip(): v.strip() for k, _, v in pairs}
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise ValueError(value)
            return dict(value)
        if kind is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                    raise ValueError(value)
                return low in {"1", "true", "yes", "on"}
            return bool(value)
        if kind is tuple:
            if isinstance(value, str):
                value = [v for v in (p.strip() for p in value.split(",")) if v]
            if not isinstance(value, (list, tuple)):
                raise ValueError(value)
            return tuple(str(v) for v in value)
        if kind is int:
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if kind is float:
            return float(value)
        if not isinstance(value, (str, int, float)):
            raise ValueError(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: {value!r} is not a valid {kind.__name__}") from None


def load(path: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read the config file (if it exists) and apply environment overrides."""
    env = os.environ if env is None else env
    path = path or env.get("PINK_CONFIG") or DEFAULT_PATH
    raw: dict[str, Any] = {}
    if Path(path).exists():
        try:
            raw = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
    unknown = set(raw) - set(_SECTIONS)
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {sorted(unknown)}; known: {sorted(_SECTIONS)}")
    sections = {}
    for section, cls in _SECTIONS.items():
        fields = {f.name: f for f in dataclasses.fields(cls)}
        given = dict(raw.get(section, {}))
        bad = set(given) - set(fields)
        if bad:
            raise ConfigError(f"{path}: unknown key(s) in [{section}]: {sorted(bad)}")
        for fname in fields:
            env_name = f"PINK_{section}_{fname}".upper()
            if env_name in env:
                given[fname] = env[env_name]
        sections[section] = cls(**{k: _coerce(section, fields[k], v) for k, v in given.items()})
    return Config(path=path, **sections).check()
