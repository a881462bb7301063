"""Pieces the benchmarks stand on: the cluster under test, the baselines' sshd and Slurm, a
byte-counting TCP relay, process memory, statistics, and versions of everything measured."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import requests

from pink import allinone as aio

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------- numbers


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)i?[bB]?\s*", text)
    if not m:
        raise ValueError(f"{text!r} is not a size (e.g. 64M, 1G)")
    return int(float(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()])


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def median(values: Iterable[float]) -> float:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return float("nan")
    k = (len(vals) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (k - lo)


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def uptime_offset() -> float:
    """epoch = offset + /proc/uptime (the clock jobs read inside their containers)."""
    best = None
    for _ in range(5):
        t0 = time.time()
        up = float(Path("/proc/uptime").read_text().split()[0])
        t1 = time.time()
        cand = (t0 + t1) / 2 - up
        best = cand if best is None else max(best, cand)
    return best  # /proc/uptime truncates to 10 ms: the largest offset is the closest


# ------------------------------------------------------------------------------- memory


def rss_children(pid: int) -> list[int]:
    return [p for p in aio.descendants(pid) if p != pid]


def reset_peak_rss(pids: Iterable[int]) -> bool:
    ok = True
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def peak_rss(pids: Iterable[int]) -> int:
    """Largest VmHWM (bytes) among ``pids``."""
    best = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    best = max(best, int(line.split()[1]) * 1024)
    return best


class RssSampler:
    """Samples the RSS of ``pids`` every 50 ms (a cross-check of VmHWM)."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                with contextlib.suppress(OSError):
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            self.peak = max(self.peak, int(line.split()[1]) * 1024)
            self._stop.wait(0.05)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def tree_cpu(pid: int) -> float:
    """CPU seconds used by ``pid`` and everything under it (children that ended included)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in [pid, *rss_children(pid)]:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / tick


class CpuMeter:
    """CPU seconds spent by process trees and by our own children between enter and exit."""

    def __init__(self, trees: dict[str, int], with_self: bool = False) -> None:
        self.trees = trees
        self.with_self = with_self  # count this process too (all its threads)
        self.used: dict[str, float] = {}

    def __enter__(self) -> "CpuMeter":
        import resource
        self._before = {k: tree_cpu(p) for k, p in self.trees.items()}
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._children = r.ru_utime + r.ru_stime
        me = resource.getrusage(resource.RUSAGE_SELF)
        self._self = me.ru_utime + me.ru_stime
        return self

    def __exit__(self, *exc: object) -> None:
        import resource
        self.used = {k: tree_cpu(p) - self._before[k] for k, p in self.trees.items()}
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.used["client"] = r.ru_utime + r.ru_stime - self._children
        if self.with_self:
            me = resource.getrusage(resource.RUSAGE_SELF)
            self.used["client"] += me.ru_utime + me.ru_stime - self._self

    @property
    def total(self) -> float:
        return sum(self.used.values())


# ------------------------------------------------------------------------------- relay


class CountingRelay:
    """A TCP relay in front of ``target`` that counts the bytes clients send through it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sent = 0  # client -> server
        self.received = 0  # server -> client
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.sent = self.received = 0

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
                with self._lock:
                    if up:
                        self.sent += len(data)
                    else:
                        self.received += len(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closed = True
        self._sock.close()


# ------------------------------------------------------------------------------- sshd


class PlainSshd(aio.Sshd):
    """The same OpenSSH server as a worker's, but without the transfer gate: the baseline an
    operator would use by hand (``ssh worker 'cat > f'``)."""

    name = "sshd-baseline"

    def _config_text(self) -> str:
        return super()._config_text().replace(
            "PermitRootLogin forced-commands-only", "PermitRootLogin prohibit-password")

    def prepare(self) -> None:
        super().prepare()
        pub = self.client_key.with_suffix(".pub").read_text().strip()
        aio._write_private(self.authorized_keys, pub + "\n")

    def ssh_argv(self, command: str, cipher: str | None = None) -> list[str]:
        return [
            "ssh", "-i", str(self.client_key), "-p", str(self.port),
            "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR",
            *(["-c", cipher] if cipher else []),
            f"{self.user}@{self.host}", command,
        ]

    def negotiated_cipher(self) -> str:
        out = subprocess.run(self.ssh_argv("true")[:-2] + ["-v", f"{self.user}@{self.host}", "true"],
                             capture_output=True, text=True, timeout=30)
        m = re.search(r"kex: client->server cipher: (\S+)", out.stderr)
        return m.group(1) if m else "?"


# ------------------------------------------------------------------------------- slurm


class _Daemon(aio.Service):
    def __init__(self, base_dir: Path, name: str, argv: list[str], env: dict[str, str] | None = None,
                 ready=None) -> None:
        self.name = name
        self.marker = Path(argv[0]).name
        super().__init__(base_dir, env=env)
        self._argv = argv
        self._ready = ready

    def command(self) -> list[str]:
        return self._argv

    def is_ready(self) -> bool:
        return self.alive() and (self._ready is None or self._ready())


SLURM_COMMON = """\
ClusterName=pinkbench
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# As many job slots as the PINK worker runs jobs at once (its max_parallel_jobs), whatever
# the core count: the node is declared with that many CPUs.
SlurmdParameters=config_overrides
NodeName=localhost NodeHostname=localhost NodeAddr=127.0.0.1 CPUs={slots} State=UNKNOWN
PartitionName=bench Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""

#: Settings added for the "tuned" Slurm: schedule at once on every submit and job end, no
#: batching delay, no minimum interval, a deep queue; lighter FIFO scheduler.
SLURM_TUNED = """\
SchedulerType=sched/builtin
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,default_queue_depth=1000,sched_interval=1,max_rpc_cnt=0
MessageTimeout=5
"""


def slurm_available() -> str:
    missing = [p for p in ("slurmctld", "slurmd", "sbatch", "squeue", "munged")
               if not shutil.which(p, path=os.environ.get("PATH", "") + ":/usr/sbin")]
    return "" if not missing else f"not installed ({', '.join(missing)}): apt-get install slurm-wlm"


class Slurm:
    """slurmctld + slurmd (+ a private munged) on localhost, in ``base_dir``."""

    def __init__(self, base_dir: Path, slots: int, tuned: bool) -> None:
        self.dir = base_dir
        self.slots = slots
        self.tuned = tuned
        self.conf = base_dir / "slurm.conf"
        self.env = {"SLURM_CONF": str(self.conf)}
        self.munge_dir = base_dir / "munge"
        self.munge_socket = self.munge_dir / "munge.socket"
        self.services: list[aio.Service] = []

    def settings(self) -> str:
        return SLURM_TUNED if self.tuned else "(defaults)\n"

    def start(self) -> "Slurm":
        if self.dir.exists():
            shutil.rmtree(self.dir)
        for sub in ("state", "spool", "out"):
            (self.dir / sub).mkdir(parents=True)
        self.munge_dir.mkdir(mode=0o700)
        key = self.munge_dir / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o600)
        text = SLURM_COMMON.format(ctld_port=aio.free_port(), d_port=aio.free_port(),
                                   munge_socket=self.munge_socket, dir=self.dir, slots=self.slots)
        if self.tuned:
            text += SLURM_TUNED
        self.conf.write_text(text)
        munged = _Daemon(self.dir / "munged", "munged", [
            shutil.which("munged", path="/usr/sbin:/usr/bin") or "munged", "-F", "--force",
            f"--socket={self.munge_socket}", f"--key-file={key}",
            f"--pid-file={self.munge_dir}/munged.pid", f"--log-file={self.munge_dir}/munged.log",
            f"--seed-file={self.munge_dir}/seed"], ready=self.munge_socket.exists)
        self.services.append(munged.start().wait_ready(30))
        ctld = _Daemon(self.dir / "ctld", "slurmctld", [
            shutil.which("slurmctld", path="/usr/sbin:/usr/bin") or "slurmctld", "-D", "-i",
            "-f", str(self.conf)], env=self.env)
        self.services.append(ctld.start())
        slurmd = _Daemon(self.dir / "slurmd", "slurmd", [
            shutil.which("slurmd", path="/usr/sbin:/usr/bin") or "slurmd", "-D", "-N", "localhost",
            "-f", str(self.conf)], env=self.env, ready=self._idle)
        self.services.append(slurmd.start())
        slurmd.wait_ready(60)
        return self

    def _run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **self.env})

    def _idle(self) -> bool:
        out = self._run("sinfo", "-h", "-o", "%t")
        return out.returncode == 0 and out.stdout.strip() == "idle"

    def sbatch(self, command: str) -> str:
        out = self._run("sbatch", "--parsable", "-o", str(self.dir / "out" / "%j.out"), "--wrap", command)
        if out.returncode != 0:
            raise RuntimeError(f"sbatch failed: {out.stderr.strip()}")
        return out.stdout.strip().split(";")[0]

    def queue_empty(self) -> bool:
        out = self._run("squeue", "-h", "-o", "%i")
        return out.returncode == 0 and not out.stdout.strip()

    def output(self, job_id: str) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "out" / f"{job_id}.out").read_text()
        return ""

    def stop(self) -> None:
        for service in reversed(self.services):
            with contextlib.suppress(Exception):
                service.stop(15)
        self.services.clear()


# ------------------------------------------------------------------------------- etcd


def etcd_metrics(client_url: str) -> dict[str, float]:
    text = requests.get(f"{client_url}/metrics", timeout=5).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


def etcd_summary(m: dict[str, float]) -> dict[str, float]:
    """Counters that say what clients asked of etcd."""
    out = {"writes (raft proposals)": m.get("etcd_server_proposals_committed_total", 0),
           "WAL bytes": m.get("etcd_disk_wal_write_bytes_total", 0),
           "WAL fsyncs": m.get("etcd_disk_wal_fsync_duration_seconds_count", 0)}
    for key, value in m.items():
        if key.startswith("grpc_server_handled_total{") and 'grpc_type="unary"' in key:
            method = re.search(r'grpc_method="(\w+)"', key).group(1)
            out[f"rpc {method}"] = out.get(f"rpc {method}", 0) + value
        elif key.startswith("grpc_server_msg_received_total{") and 'grpc_type="bidi_stream"' in key:
            method = re.search(r'grpc_method="(\w+)"', key).group(1)
            out[f"stream msg {method}"] = out.get(f"stream msg {method}", 0) + value
    return out


# ------------------------------------------------------------------------------- versions


def _first_line(argv: list[str]) -> str:
    with contextlib.suppress(Exception):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        text = (out.stdout or out.stderr).strip()
        return text.splitlines()[0] if text else "?"
    return "?"


def describe_machine() -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "host": socket.gethostname(),
        "cpu": f"{os.cpu_count()} x {cpu}",
        "memory": f"{mem / 2**30:.0f} GiB",
        "kernel": platform.release(),
    }


def describe_versions() -> dict[str, str]:
    import gunicorn
    import paramiko

    import pink

    commit = _first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "pink": f"{pink.__version__} ({commit}{' + local changes' if dirty else ''})",
        "python": sys.version.split()[0],
        "docker": _first_line(["docker", "version", "--format", "{{.Server.Version}}"]),
        "etcd": _first_line(["etcd", "--version"]).replace("etcd Version: ", ""),
        "nginx": _first_line(["nginx", "-v"]).replace("nginx version: ", ""),
        "openssh": _first_line(["ssh", "-V"]).split(",")[0],
        "paramiko": paramiko.__version__,
        "gunicorn": gunicorn.__version__,
        "zstd": _first_line(["zstd", "-V"]).split(",")[0].replace("*** ", ""),
        "slurm": _first_line(["slurmctld", "-V"]) if not slurm_available() else "not installed",
    }


def kill_tree(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
