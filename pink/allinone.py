"""Process launchers for a PINK cluster on one host, and the ``pink-aio`` command.

The same classes serve three users: the all-in-one command (``python -m pink.allinone up``),
the integration tests (``tests/integration/conftest.py``) and the benchmarks. Each launcher
owns one folder that holds all of its state (config, data, log, pid), takes its ports from the
caller, and runs its program detached in a new session so that it outlives the command that
started it and can be stopped as a group.

Every launcher has ``start()``, ``wait_ready(timeout)``, ``stop()`` (SIGTERM, wait, then
SIGKILL), ``kill(sig)``, ``.pid`` and ``.log_path``; ``with launcher:`` starts it, waits until
it answers and stops it on exit.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import fcntl
import functools
import ipaddress
import json
import logging
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Self, Sequence

import requests

from . import config as pink_config
from .errors import PinkError

log = logging.getLogger(__name__)

#: The checkout (or site-packages) that holds ``pink``, ``webapp`` and ``gpu_worker``: the
#: working directory of every Python process we start, so ``-m`` finds them either way.
REPO_ROOT = Path(__file__).resolve().parents[1]

SYSTEM_DOCKER_URL = "unix:///var/run/docker.sock"
DOCKERD_LOG = "/var/log/dockerd.log"


class ServiceError(PinkError):
    """A launched service failed to start, to become ready or to stop."""


def _binary(name: str, *fallbacks: str) -> str:
    """Absolute path of a program; sshd in particular refuses to run from a relative path."""
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found:
        return found
    for candidate in fallbacks:
        if os.access(candidate, os.X_OK):
            return candidate
    raise ServiceError(f"{name} is not installed: run scripts/bootstrap.sh (as root) first")


# --------------------------------------------------------------------------- small helpers

_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to port 0, read it back, close).

    Ports handed out by this process are never handed out twice, so a caller that asks for
    several ports before starting anything does not get the same one back.
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise ServiceError("could not find a free TCP port")  # pragma: no cover


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie.

    A detached service whose parent has exited is re-parented to PID 1, which may never reap
    it, so "kill -0 works" is not enough: a zombie must count as dead.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        return True
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (children first), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[-1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop(0)
        out.append(child)
        todo.extend(children.get(child, []))
    return out


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; raise ServiceError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception as exc:  # noqa: BLE001 - a failing probe just means "not yet"
            value = None
            last = exc
        else:
            last = None
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f" (last error: {last})" if last else ""
            raise ServiceError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def _write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Write a file that may hold a secret: created with ``mode`` from the start, no window."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, mode)


def current_user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


# --------------------------------------------------------------------------- base launcher


class Managed:
    """``with``: start, wait until ready (stopping again if that fails), stop on the way out."""

    def start(self) -> Self:
        raise NotImplementedError

    def wait_ready(self, timeout: float = 30.0) -> Self:
        raise NotImplementedError

    def stop(self, timeout: float = 15.0) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Service(Managed):
    """One long-running program we start detached, with its state under ``base_dir``."""

    #: Short name, used for the log file and in messages.
    name = "service"
    #: A string the program's /proc cmdline contains, to tell our process from a reused pid.
    marker = ""

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        env: Mapping[str, str] | None = None,
        pidfile: str | os.PathLike[str] | None = None,
    ) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.log_path = self.base_dir / f"{self.name}.log"
        self.extra_env = dict(env or {})
        self.pidfile = Path(pidfile) if pidfile else None
        self.proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None

    # What subclasses provide.
    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Write config files and folders before the first start (idempotent)."""
        self.base_dir.mkdir(parents=True, exist_ok=True)

    def is_ready(self) -> bool:
        """One probe of whether the service answers (no waiting)."""
        return self.alive()

    def cwd(self) -> Path:
        return REPO_ROOT

    # Life cycle.
    @property
    def pid(self) -> int | None:
        return self._pid

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self._pid is not None and pid_alive(self._pid)

    def start(self) -> "Service":
        if self.alive():
            raise ServiceError(f"{self.name} is already running (pid {self.pid})")
        self.prepare()
        cmd = self.command()
        env = os.environ.copy()
        env.update(self.extra_env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as logf:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            logf.write(f"\n=== {stamp} pink: starting {shlex.join(cmd)}\n".encode())
            logf.flush()
            # A new session: the service outlives our command, keeps no terminal, and its
            # helpers (nginx workers, containerd, ...) share a process group we can clean up.
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd=self.cwd(),
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        self._pid = self.proc.pid
        if self.pidfile:
            self.pidfile.parent.mkdir(parents=True, exist_ok=True)
            self.pidfile.write_text(f"{self._pid}\n")
        log.info("started %s (pid %d), log %s", self.name, self._pid, self.log_path)
        return self

    def wait_ready(self, timeout: float = 30.0) -> "Service":
        deadline = time.monotonic() + timeout
        interval = 0.05
        last_error: Exception | None = None
        while True:
            if not self.alive():
                code = self.proc.returncode if self.proc is not None else None
                raise ServiceError(
                    f"{self.name} exited (status {code}) before it was ready; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                if self.is_ready():
                    return self
                last_error = None
            except Exception as exc:  # noqa: BLE001 - any probe failure means "not yet"
                last_error = exc
            if time.monotonic() >= deadline:
                why = f" (last probe error: {last_error})" if last_error else ""
                raise ServiceError(
                    f"{self.name} did not become ready within {timeout:.0f}s{why}; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(interval)
            interval = min(interval * 1.5, 0.5)

    def _wait_exit(self, timeout: float) -> bool:
        if self.proc is not None:
            try:
                self.proc.wait(timeout=timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while self._pid is not None and pid_alive(self._pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def terminate(self) -> None:
        """Send SIGTERM and return at once (see :func:`stop_many`)."""
        if self._pid is not None and self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGTERM)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; then kill leftovers of its group."""
        pid = self._pid
        if pid is None:
            return
        if self.alive():
            log.info("stopping %s (pid %d)", self.name, pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not self._wait_exit(timeout):
                log.warning("%s (pid %d) ignored SIGTERM for %.0fs: SIGKILL", self.name, pid, timeout)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._wait_exit(10)
        # Helpers that stayed behind in its process group (the group id is the pid because of
        # start_new_session); the group id cannot be reused while any member lives.
        if group_members(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            # SIGKILL is delivered asynchronously: return only once they are gone.
            deadline = time.monotonic() + 5
            while group_members(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
        if self.pidfile:
            with contextlib.suppress(FileNotFoundError):
                self.pidfile.unlink()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the main process (SIGKILL: also wait until it is gone)."""
        pid = self._pid
        if pid is None or not self.alive():
            return
        os.kill(pid, sig)
        if sig == signal.SIGKILL:
            self._wait_exit(10)

    def adopt(self) -> bool:
        """Take over the process named by ``pidfile`` (started by an earlier command).

        Returns True if the pid is alive and its command line looks like ours, so that a pid
        reused by an unrelated process is never signalled.
        """
        if not self.pidfile or not self.pidfile.exists():
            return False
        try:
            pid = int(self.pidfile.read_text().split()[0])
        except (ValueError, IndexError, OSError):
            return False
        cmdline = _cmdline(pid)
        if not pid_alive(pid) or not (str(self.base_dir) in cmdline or (self.marker and self.marker in cmdline)):
            return False
        self._pid = pid
        self.proc = None
        return True

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 16384))
                text = fh.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        return f"<{type(self).__name__} pid={self.pid} dir={self.base_dir}>"


def stop_many(services: Sequence[Service], timeout: float = 15.0) -> None:
    """Stop several services at once: SIGTERM to all, then wait for each (in parallel)."""
    for service in services:
        service.terminate()
    for service in services:
        service.stop(timeout)


# --------------------------------------------------------------------------- etcd


def etcd_get(endpoints: Sequence[str], key: str, timeout: float = 1.0) -> dict[str, Any] | None:
    """Read one key through etcd's JSON gateway (no client library needed).

    Returns the key-value dict (``key``, ``value``, ``mod_revision``, ``lease``, base64 where
    etcd sends bytes) or None if the key does not exist. Raises on no answer.
    """
    body = {"key": base64.b64encode(key.encode()).decode()}
    last: Exception | None = None
    for endpoint in endpoints:
        url = endpoint if "://" in endpoint else f"http://{endpoint}"
        try:
            resp = requests.post(f"{url}/v3/kv/range", json=body, timeout=timeout)
            resp.raise_for_status()
        except requests.RequestException as exc:
            last = exc
            continue
        kvs = resp.json().get("kvs") or []
        return kvs[0] if kvs else None
    raise ServiceError(f"no etcd endpoint answered: {last}")


def etcd_get_prefix(endpoints: Sequence[str], prefix: str, timeout: float = 2.0) -> list[dict[str, Any]]:
    """Every key-value under ``prefix`` through etcd's JSON gateway (values base64)."""
    raw = prefix.encode()
    end = raw[:-1] + bytes([raw[-1] + 1]) if raw and raw[-1] < 0xFF else b"\0"
    body = {"key": base64.b64encode(raw).decode(), "range_end": base64.b64encode(end).decode()}
    last: Exception | None = None
    for endpoint in endpoints:
        url = endpoint if "://" in endpoint else f"http://{endpoint}"
        try:
            resp = requests.post(f"{url}/v3/kv/range", json=body, timeout=timeout)
            resp.raise_for_status()
        except requests.RequestException as exc:
            last = exc
            continue
        return list(resp.json().get("kvs") or [])
    raise ServiceError(f"no etcd endpoint answered: {last}")


class EtcdMember(Service):
    """One etcd 3.4 member on loopback, with its own data dir and explicit ports."""

    name = "etcd"
    marker = "etcd"

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        member_name: str = "m0",
        client_port: int | None = None,
        peer_port: int | None = None,
        initial_cluster: str | None = None,
        cluster_token: str = "pink-etcd",
        host: str = "127.0.0.1",
        **kwargs: Any,
    ) -> None:
        super().__init__(base_dir, **kwargs)
        self.member_name = member_name
        self.host = host
        self.client_port = client_port or free_port(host)
        self.peer_port = peer_port or free_port(host)
        self.client_url = f"http://{host}:{self.client_port}"
        self.peer_url = f"http://{host}:{self.peer_port}"
        self.endpoint = f"{host}:{self.client_port}"
        self.initial_cluster = initial_cluster or f"{member_name}={self.peer_url}"
        self.cluster_token = cluster_token
        self.data_dir = self.base_dir / "data"

    def command(self) -> list[str]:
        # --initial-cluster* only matter on the first start; a restart reads the data dir.
        return [
            _binary("etcd", "/usr/bin/etcd"),
            "--name", self.member_name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-token", self.cluster_token,
            "--initial-cluster-state", "new",
            "--logger", "zap",
            "--log-outputs", "stderr",
        ]

    def is_ready(self) -> bool:
        # /health answers true only when the member sees a leader and can serve a
        # linearizable read, i.e. the cluster has quorum.
        resp = requests.get(f"{self.client_url}/health", timeout=2)
        return resp.status_code == 200 and resp.json().get("health") == "true"


class EtcdCluster(Managed):
    """``n`` etcd members on loopback that form one cluster; members can be stopped singly."""

    def __init__(
        self,
        n: int,
        base_dir: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        token: str | None = None,
        pidfile_dir: str | os.PathLike[str] | None = None,
        ports: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        if n < 1:
            raise ValueError("an etcd cluster needs at least one member")
        self.base_dir = Path(base_dir).resolve()
        ports = list(ports) if ports else [(free_port(host), free_port(host)) for _ in range(n)]
        initial = ",".join(f"m{i}=http://{host}:{peer}" for i, (_, peer) in enumerate(ports))
        token = token or f"pink-{secrets.token_hex(4)}"
        self.members = [
            EtcdMember(
                self.base_dir / f"m{i}" if n > 1 else self.base_dir,
                member_name=f"m{i}",
                client_port=client,
                peer_port=peer,
                initial_cluster=initial,
                cluster_token=token,
                host=host,
                pidfile=(Path(pidfile_dir) / (f"etcd-m{i}.pid" if n > 1 else "etcd.pid")) if pidfile_dir else None,
            )
            for i, (client, peer) in enumerate(ports)
        ]

    @property
    def endpoints(self) -> list[str]:
        """``host:port`` of every member, the form ``etcd.endpoints`` takes in pink.toml."""
        return [m.endpoint for m in self.members]

    @property
    def client_urls(self) -> list[str]:
        return [m.client_url for m in self.members]

    def start(self) -> "EtcdCluster":
        # Start all before waiting: no member is healthy until a quorum of them runs.
        for member in self.members:
            if not member.alive():
                member.start()
        return self

    def wait_ready(self, timeout: float = 30.0) -> "EtcdCluster":
        deadline = time.monotonic() + timeout
        for member in self.members:
            if member.alive() or member.pid is None:
                member.wait_ready(max(1.0, deadline - time.monotonic()))
        return self

    def stop(self, timeout: float = 15.0) -> None:
        for member in reversed(self.members):
            member.stop(timeout)

    def stop_member(self, i: int, timeout: float = 15.0) -> None:
        self.members[i].stop(timeout)

    def kill_member(self, i: int, sig: int = signal.SIGKILL) -> None:
        self.members[i].kill(sig)

    def start_member(self, i: int, wait: bool = True, timeout: float = 30.0) -> EtcdMember:
        member = self.members[i]
        member.start()
        if wait:
            member.wait_ready(timeout)
        return member

    def live_endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members if m.alive()]

    def etcdctl(
        self, *args: str, endpoints: Sequence[str] | None = None, timeout: float = 5.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``etcdctl`` against the live members (or ``endpoints``); never raises on failure."""
        eps = list(endpoints) if endpoints is not None else self.live_endpoints() or self.endpoints
        cmd = [
            _binary("etcdctl", "/usr/bin/etcdctl"),
            f"--endpoints={','.join(eps)}",
            f"--command-timeout={timeout:.0f}s",
            f"--dial-timeout={min(timeout, 2):.0f}s",
            *args,
        ]
        env = dict(os.environ, ETCDCTL_API="3")
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 10, env=env)
        except subprocess.TimeoutExpired as exc:
            return subprocess.CompletedProcess(cmd, 124, exc.stdout or "", f"etcdctl timed out: {exc}")


# --------------------------------------------------------------------------- docker engines


def docker_answers(url: str | None = None, timeout: float = 10.0) -> bool:
    """True if the docker engine at ``url`` (default: the system one) answers."""
    cmd = [_binary("docker", "/usr/bin/docker")]
    if url:
        cmd += ["-H", url]
    cmd += ["version", "--format", "{{.Server.Version}}"]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0 and bool(result.stdout.strip())


def ensure_system_dockerd(timeout: float = 60.0) -> bool:
    """Start the system docker engine if it does not answer (hosts without systemd).

    Returns True if this call started it. Its output goes to /var/log/dockerd.log.
    """
    if docker_answers():
        return False
    dockerd = _binary("dockerd", "/usr/sbin/dockerd")
    log.info("docker engine not answering: starting %s (log %s)", dockerd, DOCKERD_LOG)
    Path(DOCKERD_LOG).parent.mkdir(parents=True, exist_ok=True)
    with open(DOCKERD_LOG, "ab") as logf:
        proc = subprocess.Popen(
            [dockerd],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + timeout
    while not docker_answers(timeout=5):
        if proc.poll() is not None:
            raise ServiceError(f"dockerd exited with status {proc.returncode}; see {DOCKERD_LOG}")
        if time.monotonic() >= deadline:
            raise ServiceError(f"dockerd did not answer within {timeout:.0f}s; see {DOCKERD_LOG}")
        time.sleep(0.5)
    # Forget the Popen without a warning: the engine must outlive this process.
    proc.returncode = 0
    return True


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    return [m.split()[1] for m in lines if len(m.split()) > 1 and (m.split()[1] + "/").startswith(prefix)]


class Dockerd(Service):
    """An extra docker engine (one per simulated worker) with its own roots and socket."""

    name = "dockerd"
    marker = "dockerd"

    #: Unix socket paths are limited to 107 bytes and containerd nests its sockets a few
    #: levels under the exec root, so a long exec root (pytest's tmp paths) moves to /tmp.
    _MAX_EXEC_ROOT = 50

    def __init__(self, base_dir: str | os.PathLike[str], **kwargs: Any) -> None:
        super().__init__(base_dir, **kwargs)
        self.data_root = self.base_dir / "data"
        self._short_exec: Path | None = None
        self.exec_root = self.base_dir / "exec"
        self.docker_pidfile = self.base_dir / "dockerd.pid"
        #: More dockerd flags (tests add e.g. ``--add-runtime``).
        self.extra_args: list[str] = []
        self._terminating = False

    @property
    def sock(self) -> Path:
        return self.exec_root / "docker.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.sock}"

    @property
    def config_file(self) -> Path:
        return self.base_dir / "daemon.json"

    def prepare(self) -> None:
        super().prepare()
        self.data_root.mkdir(parents=True, exist_ok=True)
        # Its own file, so the host's /etc/docker/daemon.json (a deployed worker's, say) does not
        # apply or clash with the flags here. live-restore, as on deployed workers: running
        # containers outlive a restart of the engine.
        self.config_file.write_text(json.dumps({"live-restore": True}) + "\n")
        if len(str(self.base_dir / "exec")) > self._MAX_EXEC_ROOT:
            if self._short_exec is None or not self._short_exec.exists():
                self._short_exec = Path(tempfile.mkdtemp(prefix="pinkd-", dir="/tmp"))
            self.exec_root = self._short_exec
            link = self.base_dir / "exec"
            # A pointer for people reading the folder; the daemon uses the short path.
            with contextlib.suppress(OSError):
                if link.is_symlink() or link.exists():
                    link.unlink()
                link.symlink_to(self.exec_root)
        else:
            self.exec_root.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        # No bridge and no iptables: a second engine must not fight the system one over
        # docker0 and the NAT rules; PINK's jobs run with network "none" anyway.
        return [
            _binary("dockerd", "/usr/sbin/dockerd"),
            "--data-root", str(self.data_root),
            "--exec-root", str(self.exec_root),
            "-H", self.url,
            "--pidfile", str(self.docker_pidfile),
            "--bridge=none",
            "--iptables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            "--userland-proxy=false",
            "--config-file", str(self.config_file),
            *self.extra_args,
        ]

    def is_ready(self) -> bool:
        return self.sock.exists() and docker_answers(self.url, timeout=5)

    def docker(self, *args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this engine."""
        cmd = [_binary("docker", "/usr/bin/docker"), "-H", self.url, *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check)

    def remove_all_containers(self) -> None:
        ids = self.docker("ps", "-aq", check=False).stdout.split()
        if ids:
            self.docker("rm", "-f", *ids, check=False)

    def terminate(self) -> None:
        # dockerd waits for running containers on shutdown: remove them first so that a
        # test's leftovers cannot stall teardown.
        if self.alive() and not self._terminating:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self.remove_all_containers()
            self._terminating = True
        super().terminate()

    def stop(self, timeout: float = 30.0, keep_containers: bool = False) -> None:
        """Stop the engine; ``keep_containers`` stops it as ``systemctl restart docker`` would,
        leaving the containers (running ones go on, thanks to live-restore)."""
        # The exec root (and so the socket path in the workers' config) stays for a restart;
        # purge() removes it.
        if not keep_containers:
            self.terminate()
        super().stop(timeout)
        self._terminating = False
        if not keep_containers:
            self._kill_stray_shims()

    def _kill_stray_shims(self) -> None:
        """Kill containerd shims of this engine that outlived it, with what they run: live-restore
        keeps them, and a restart in the middle of a container start can leave one docker no
        longer knows (its task "already exists"), so removing the containers did not stop it."""
        marker = f"-address {self.exec_root}/"
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and "containerd-shim" in (cmd := _cmdline(int(entry.name))) and marker in cmd:
                shim = int(entry.name)
                for pid in [*reversed(descendants(shim)), shim]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

    def purge(self) -> None:
        """Delete the engine's data root (after stop), unless something is still mounted there."""
        if self.alive():
            raise ServiceError("stop dockerd before purging its data")
        left = _mounts_under(self.data_root)
        if left == [str(self.data_root)]:
            # Only dockerd's private bind mount of its own root, which a killed dockerd leaves.
            subprocess.run(["umount", str(self.data_root)], capture_output=True, check=False)
            left = _mounts_under(self.data_root)
        if left:
            log.warning("not deleting %s: still mounted: %s", self.data_root, left[:3])
            return
        shutil.rmtree(self.data_root, ignore_errors=True)
        if self._short_exec is not None and not _mounts_under(self._short_exec):
            shutil.rmtree(self._short_exec, ignore_errors=True)


# --------------------------------------------------------------------------- sshd + gate


@functools.lru_cache(maxsize=None)
def _gate_importable() -> bool:
    """Can this interpreter import pink.sshgate from any folder (project installed)?"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", "import pink.sshgate"], cwd="/", env=env, capture_output=True, timeout=30
    )
    return result.returncode == 0


def gate_command(inbox: str | os.PathLike[str], outbox: str | os.PathLike[str]) -> str:
    """The forced command that limits a key to the transfer gate (for authorized_keys)."""
    argv = [sys.executable, "-m", "pink.sshgate", "--inbox", str(inbox), "--outbox", str(outbox)]
    if not _gate_importable():
        # Not installed (no `pip install -e .`): sshd runs the command from the user's home,
        # so point Python at the checkout explicitly.
        argv = ["env", f"PYTHONPATH={REPO_ROOT}", *argv]
    command = shlex.join(argv)
    if '"' in command or "\n" in command or "\\" in command:
        raise ServiceError(f"paths for the SSH gate must not contain quotes or backslashes: {command}")
    return command


def ssh_keygen(path: Path, comment: str) -> Path:
    """Create an ed25519 key pair at ``path`` (and ``path.pub``) unless it exists."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [_binary("ssh-keygen", "/usr/bin/ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True,
            capture_output=True,
            timeout=30,
        )
    return path


class Sshd(Service):
    """OpenSSH server on loopback whose only key is forced through ``pink.sshgate``."""

    name = "sshd"
    marker = "sshd"

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        inbox: str | os.PathLike[str],
        outbox: str | os.PathLike[str],
        port: int | None = None,
        client_key: str | os.PathLike[str] | None = None,
        user: str | None = None,
        host: str = "127.0.0.1",
        **kwargs: Any,
    ) -> None:
        super().__init__(base_dir, **kwargs)
        self.inbox = Path(inbox).resolve()
        self.outbox = Path(outbox).resolve()
        self.port = port or free_port(host)
        self.host = host
        self.user = user or current_user()
        self.config_path = self.base_dir / "sshd_config"
        self.host_key = self.base_dir / "ssh_host_ed25519_key"
        self.authorized_keys = self.base_dir / "authorized_keys"
        self.known_hosts = self.base_dir / "known_hosts"
        self.client_key = Path(client_key).resolve() if client_key else self.base_dir / "id_ed25519"
        self.sshd_pidfile = self.base_dir / "sshd.pid"

    @property
    def known_hosts_line(self) -> str:
        """``[host]:port ssh-ed25519 AAAA...``, the pinned host key (prepare() first)."""
        kind, key = self.host_key.with_suffix(".pub").read_text().split()[:2]
        return f"[{self.host}]:{self.port} {kind} {key}"

    def prepare(self) -> None:
        super().prepare()
        os.chmod(self.base_dir, 0o700)
        for box in (self.inbox, self.outbox):
            box.mkdir(parents=True, exist_ok=True)
        ssh_keygen(self.host_key, f"pink-sshd@{self.host}:{self.port}")
        ssh_keygen(self.client_key, "pink-web")
        pub = self.client_key.with_suffix(".pub").read_text().strip()
        _write_private(
            self.authorized_keys,
            f'command="{gate_command(self.inbox, self.outbox)}",restrict {pub}\n',
        )
        _write_private(self.known_hosts, self.known_hosts_line + "\n", 0o644)
        _write_private(self.config_path, self._config_text(), 0o600)
        if os.getuid() == 0:
            # The privilege-separation folder that Debian's service script normally creates.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        check = subprocess.run(
            [_binary("sshd", "/usr/sbin/sshd"), "-t", "-f", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if check.returncode != 0:
            raise ServiceError(f"sshd rejected {self.config_path}: {check.stderr.strip()}")

    def _config_text(self) -> str:
        return "\n".join(
            [
                "# Written by pink.allinone: a loopback sshd for PINK's transfer gate.",
                f"ListenAddress {self.host}",
                f"Port {self.port}",
                f"HostKey {self.host_key}",
                f"PidFile {self.sshd_pidfile}",
                f"AuthorizedKeysFile {self.authorized_keys}",
                f"AllowUsers {self.user}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                # Root may log in only with a key that carries a forced command (the gate).
                "PermitRootLogin forced-commands-only",
                # StrictModes would reject key files below a world-writable folder such as
                # /tmp (pytest's tmp_path); this folder is 0700 and the files 0600 instead.
                "StrictModes no",
                "AllowTcpForwarding no",
                "AllowAgentForwarding no",
                "X11Forwarding no",
                "PermitTunnel no",
                "PermitUserEnvironment no",
                "PrintMotd no",
                "PrintLastLog no",
                # One persistent transport per worker carries many channels at once.
                "MaxSessions 128",
                "MaxStartups 64:30:256",
                "ClientAliveInterval 15",
                "ClientAliveCountMax 4",
                "LogLevel VERBOSE",
                "",
            ]
        )

    def command(self) -> list[str]:
        # -D: stay in the foreground (we supervise it); -e: log to stderr = our log file.
        return [_binary("sshd", "/usr/sbin/sshd"), "-D", "-e", "-f", str(self.config_path)]

    def is_ready(self) -> bool:
        with socket.create_connection((self.host, self.port), timeout=2) as sock:
            sock.settimeout(2)
            return sock.recv(64).startswith(b"SSH-")

    def kill_sessions(self) -> None:
        """Cut every open connection (sshd forks one session process tree per client)."""
        if self._pid is None:
            return
        for child in descendants(self._pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)

    def stop(self, timeout: float = 15.0, kill_sessions: bool = True) -> None:
        # sshd's per-connection processes run in their own sessions and would survive the
        # listener; a stopped "worker host" must not keep serving its old connections.
        if kill_sessions:
            self.kill_sessions()
        super().stop(timeout)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if sig == signal.SIGKILL:
            self.kill_sessions()
        super().kill(sig)


# --------------------------------------------------------------------------- TLS + nginx


@dataclasses.dataclass(frozen=True)
class DevCA:
    """Files written by :func:`make_dev_ca`."""

    folder: Path
    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path


def make_dev_ca(folder: str | os.PathLike[str], hosts: Sequence[str] = ("127.0.0.1", "localhost")) -> DevCA:
    """A private CA and a server certificate for ``hosts`` (SAN), made with openssl.

    Writes ca.pem, ca.key, server.pem and server.key; existing files are kept, so calling it
    again is cheap and does not invalidate clients that already trust ca.pem.
    """
    out = Path(folder).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ca = DevCA(out, out / "ca.pem", out / "ca.key", out / "server.pem", out / "server.key")
    if all(p.exists() for p in (ca.ca_cert, ca.ca_key, ca.cert, ca.key)):
        return ca
    openssl = _binary("openssl", "/usr/bin/openssl")
    sans = []
    for host in hosts:
        try:
            ipaddress.ip_address(host)
            sans.append(f"IP:{host}")
        except ValueError:
            sans.append(f"DNS:{host}")
    ext = out / "server.ext"
    ext.write_text(
        "\n".join(
            [
                "basicConstraints = critical, CA:FALSE",
                "keyUsage = critical, digitalSignature, keyEncipherment",
                "extendedKeyUsage = serverAuth",
                f"subjectAltName = {', '.join(sans)}",
                "subjectKeyIdentifier = hash",
                "authorityKeyIdentifier = keyid, issuer",
                "",
            ]
        )
    )
    old_umask = os.umask(0o077)  # keys are created private
    try:
        def run(*args: str) -> None:
            subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

        run(
            "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(ca.ca_key), "-out", str(ca.ca_cert), "-days", "3650",
            "-subj", "/CN=PINK development CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )
        csr = out / "server.csr"
        run(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(ca.key), "-out", str(csr), "-subj", f"/CN={hosts[0]}",
        )
        run(
            "x509", "-req", "-in", str(csr), "-CA", str(ca.ca_cert), "-CAkey", str(ca.ca_key),
            "-CAcreateserial", "-out", str(ca.cert), "-days", "825", "-extfile", str(ext),
        )
        csr.unlink()
    finally:
        os.umask(old_umask)
    for public in (ca.ca_cert, ca.cert):
        os.chmod(public, 0o644)
    return ca


class Nginx(Service):
    """nginx as the TLS load balancer in front of one or more gunicorn web servers."""

    name = "nginx"
    marker = "nginx"

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        https_port: int,
        upstreams: Sequence[str | int],
        cert: str | os.PathLike[str],
        key: str | os.PathLike[str],
        ca_cert: str | os.PathLike[str] | None = None,
        max_upload_bytes: int = pink_config.WebConfig.max_upload_bytes,
        host: str = "127.0.0.1",
        max_fails: int = 1,
        fail_timeout_s: int = 10,
        stream_timeout_s: int = 3600,
        **kwargs: Any,
    ) -> None:
        super().__init__(base_dir, **kwargs)
        self.https_port = https_port
        self.upstreams = [f"127.0.0.1:{u}" if isinstance(u, int) else str(u) for u in upstreams]
        self.cert = Path(cert).resolve()
        self.key = Path(key).resolve()
        self.ca_cert = Path(ca_cert).resolve() if ca_cert else None
        self.max_upload_bytes = max_upload_bytes
        self.host = host
        self.max_fails = max_fails
        self.fail_timeout_s = fail_timeout_s
        self.stream_timeout_s = stream_timeout_s
        self.conf_path = self.base_dir / "nginx.conf"
        self.error_log = self.base_dir / "error.log"

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.https_port}"

    def config_text(self) -> str:
        d = self.base_dir
        servers = "\n".join(
            f"        server {u} max_fails={self.max_fails} fail_timeout={self.fail_timeout_s}s;"
            for u in self.upstreams
        )
        # Run workers as the invoking user: their temp paths live in this private folder
        # (pytest's tmp dirs are 0700), and this launcher only serves loopback.
        user_line = f"user {current_user()};" if os.getuid() == 0 else ""
        return f"""# Written by pink.allinone: TLS load balancer for PINK's web servers.
{user_line}
worker_processes 2;
pid {d}/nginx.pid;
error_log {self.error_log} info;
events {{
    worker_connections 1024;
}}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp/client;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    server_tokens off;

    upstream pink_web {{
        # Passive health checks: a server that fails is skipped for fail_timeout.
{servers}
        keepalive 32;
    }}

    server {{
        listen {self.host}:{self.https_port} ssl;
        server_name _;
        ssl_certificate {self.cert};
        ssl_certificate_key {self.key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:pinkssl:4m;

        # Uploads are docker-save tarballs streamed to gunicorn, never spooled here.
        client_max_body_size {self.max_upload_bytes};
        proxy_request_buffering off;
        proxy_buffering off;
        # Unbuffered, nginx moves at most one buffer per read: 1 MiB for bodies and 256 KiB for
        # responses instead of the default 16 KiB and 4 KiB take far fewer system calls per GiB.
        # (proxy_buffers only satisfy nginx's size checks; unbuffered responses do not use them.)
        client_body_buffer_size 1m;
        proxy_buffer_size 256k;
        proxy_buffers 4 256k;
        proxy_busy_buffers_size 512k;
        proxy_max_temp_file_size 0;

        location / {{
            proxy_pass http://pink_web;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_connect_timeout 5s;
            # Long uploads, downloads and log streams (?follow=1).
            proxy_read_timeout {self.stream_timeout_s}s;
            proxy_send_timeout {self.stream_timeout_s}s;
            # A dead web server is skipped; requests already sent are never replayed
            # (nginx does not retry non-idempotent requests).
            proxy_next_upstream error timeout http_502 http_503;
            proxy_next_upstream_tries 3;
        }}
    }}
}}
"""

    def _base_cmd(self) -> list[str]:
        return [_binary("nginx", "/usr/sbin/nginx"), "-c", str(self.conf_path), "-p", f"{self.base_dir}/",
                "-e", str(self.error_log)]

    def prepare(self) -> None:
        super().prepare()
        for sub in ("client", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.base_dir / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.config_text())
        check = subprocess.run([*self._base_cmd(), "-t", "-q"], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise ServiceError(f"nginx -t rejected {self.conf_path}: {check.stderr.strip()}")

    def command(self) -> list[str]:
        return [*self._base_cmd(), "-g", "daemon off;"]

    def is_ready(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.ca_cert)) if self.ca_cert else ssl._create_unverified_context()  # noqa: S323
        with socket.create_connection((self.host, self.https_port), timeout=2) as raw:
            with context.wrap_socket(raw, server_hostname=self.host):
                return True

    def set_upstreams(self, upstreams: Sequence[str | int]) -> None:
        """Rewrite the upstream list and reload nginx without dropping connections."""
        self.upstreams = [f"127.0.0.1:{u}" if isinstance(u, int) else str(u) for u in upstreams]
        self.prepare()
        if self.alive() and self.pid:
            os.kill(self.pid, signal.SIGHUP)


# --------------------------------------------------------------------------- web + worker


class Gunicorn(Service):
    """A PINK web server: gunicorn (gthread) serving ``webapp.wsgi:app``."""

    name = "gunicorn"
    marker = "gunicorn"

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        port: int,
        config_path: str | os.PathLike[str],
        workers: int = 2,
        threads: int = 16,
        app: str = "webapp.wsgi:app",
        host: str = "127.0.0.1",
        graceful_timeout_s: int = 10,
        env: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.config_path = Path(config_path).resolve()
        super().__init__(base_dir, env={"PINK_CONFIG": str(self.config_path), **(env or {})}, **kwargs)
        self.port = port
        self.host = host
        self.workers = workers
        self.threads = threads
        self.app = app
        self.graceful_timeout_s = graceful_timeout_s
        self.conf_path = self.base_dir / "gunicorn.conf.py"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def prepare(self) -> None:
        super().prepare()
        settings = {
            "bind": f"{self.host}:{self.port}",
            "workers": self.workers,
            # Threads, not processes, carry the long streams (uploads, downloads, follow).
            "worker_class": "gthread",
            "threads": self.threads,
            # The heartbeat of a worker's main loop, not a request limit: streams may last
            # hours in their threads while the main loop keeps beating.
            "timeout": 120,
            "graceful_timeout": self.graceful_timeout_s,
            # Longer than nginx's upstream keepalive so nginx closes idle connections first.
            "keepalive": 75,
            "pidfile": str(self.base_dir / "gunicorn.pid"),
            "accesslog": str(self.base_dir / "access.log"),
            "errorlog": "-",
            "loglevel": "info",
            # nginx on loopback sets X-Forwarded-For/Proto; trust it and nobody else.
            "forwarded_allow_ips": "127.0.0.1",
            "proc_name": f"pink-web-{self.port}",
        }
        lines = ["# Written by pink.allinone."] + [f"{k} = {v!r}" for k, v in settings.items()]
        self.conf_path.write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return [sys.executable, "-m", "gunicorn", "-c", str(self.conf_path), self.app]

    def is_ready(self) -> bool:
        # Any HTTP answer means gunicorn serves the app (healthz may say 503 while etcd is
        # down; that is the app's business, not the launcher's).
        requests.get(f"{self.url}/healthz", timeout=2)
        return True


class WorkerDaemon(Service):
    """A PINK worker daemon (``python -m gpu_worker``) for one config file."""

    name = "worker"
    marker = "gpu_worker"

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        config_path: str | os.PathLike[str],
        ready_check: str = "etcd",
        env: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.config_path = Path(config_path).resolve()
        super().__init__(base_dir, env={"PINK_CONFIG": str(self.config_path), **(env or {})}, **kwargs)
        if ready_check not in ("etcd", "process"):
            raise ValueError("ready_check must be 'etcd' or 'process'")
        self.ready_check = ready_check
        self._stale_lease: str | None = None
        cfg = pink_config.load(str(self.config_path), env={})
        self.worker_name = cfg.worker.name
        self.etcd_endpoints = list(cfg.etcd.endpoints)
        self.etcd_tls = bool(cfg.etcd.ca_cert)
        # The heartbeat key the worker puts on its lease (pink.store: alive/<name>).
        self.registration_key = f"{cfg.etcd.prefix.rstrip('/')}/alive/{cfg.worker.name}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "gpu_worker"]

    def start(self) -> "WorkerDaemon":
        # A worker killed a moment ago still has its registration until its lease expires:
        # remember that lease so readiness waits for the new process's own registration.
        self._stale_lease = None
        if self.ready_check == "etcd" and not self.etcd_tls:
            with contextlib.suppress(ServiceError, ValueError):
                kv = etcd_get(self.etcd_endpoints, self.registration_key)
                self._stale_lease = kv.get("lease") if kv else None
        super().start()
        return self

    def is_ready(self) -> bool:
        if self.ready_check == "process" or self.etcd_tls:
            return self.alive()
        kv = etcd_get(self.etcd_endpoints, self.registration_key)
        return kv is not None and (self._stale_lease is None or kv.get("lease") != self._stale_lease)


# --------------------------------------------------------------------------- config files


def _toml_key(key: str) -> str:
    if key and all(c.isalnum() or c in "-_" for c in key):
        return key
    return json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"cannot write {value!r} to TOML")
        return repr(value)
    if isinstance(value, str):
        # JSON string escapes are valid TOML basic-string escapes.
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, os.PathLike):
        return json.dumps(os.fspath(value))
    raise ValueError(f"cannot write {type(value).__name__} {value!r} to TOML")


def write_config(path: str | os.PathLike[str], **sections: Mapping[str, Any]) -> Path:
    """Write a pink TOML config (sections ``etcd``, ``web``, ``worker``) and check it loads.

    Unknown sections or keys raise :class:`pink.errors.ConfigError`, like the loader does. The
    file is 0600 because the web section holds the session secret.
    """
    known = {"etcd": pink_config.EtcdConfig, "web": pink_config.WebConfig, "worker": pink_config.WorkerConfig}
    out: list[str] = ["# Written by pink.allinone."]
    for section, values in sections.items():
        if section not in known:
            raise pink_config.ConfigError(f"unknown config section [{section}]; known: {sorted(known)}")
        fields = {f.name for f in dataclasses.fields(known[section])}
        bad = set(values) - fields
        if bad:
            raise pink_config.ConfigError(f"unknown key(s) in [{section}]: {sorted(bad)}")
        out.append(f"\n[{section}]")
        out.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in values.items())
    target = Path(path)
    _write_private(target, "\n".join(out) + "\n")
    pink_config.load(str(target), env={})  # fail here, not in a daemon's log
    return target


def run_admin(config_path: str | os.PathLike[str], *args: str, stdin: str | None = None,
              timeout: float = 60.0) -> str:
    """Run ``python -m pink.admin --config CFG ARGS...`` and return its stdout."""
    cmd = [sys.executable, "-m", "pink.admin", "--config", str(config_path), *args]
    result = subprocess.run(
        cmd, input=stdin, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
        env=dict(os.environ, PINK_CONFIG=str(config_path)),
    )
    if result.returncode != 0:
        raise ServiceError(
            f"pink.admin {' '.join(args)} failed (status {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()}"
        )
    return result.stdout


_ADMIN_BATCH = """
import contextlib, io, json, sys
from pink import admin
results = []
for argv, stdin in json.load(sys.stdin):
    out, err = io.StringIO(), io.StringIO()
    sys.stdin = io.StringIO(stdin or "")
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = admin.main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    results.append([code, out.getvalue(), err.getvalue()])
sys.__stdout__.write(json.dumps(results))
"""


def run_admin_batch(config_path: str | os.PathLike[str], calls: Sequence[tuple[Sequence[str], str | None]],
                    timeout: float = 120.0) -> list[str]:
    """Run several ``pink.admin`` commands in one interpreter (start-up is most of their cost).

    ``calls`` are ``(args, stdin)`` pairs as for :func:`run_admin`; returns each stdout.
    Raises ServiceError naming the first command that failed.
    """
    spec = [(["--config", str(config_path), *args], stdin) for args, stdin in calls]
    result = subprocess.run(
        [sys.executable, "-c", _ADMIN_BATCH], input=json.dumps(spec), capture_output=True, text=True,
        timeout=timeout, cwd=REPO_ROOT, env=dict(os.environ, PINK_CONFIG=str(config_path)),
    )
    try:
        rows = json.loads(result.stdout)
    except ValueError:
        raise ServiceError(f"pink.admin batch failed (status {result.returncode}): {result.stderr.strip()}") from None
    outputs = []
    for (args, _), (code, out, err) in zip(calls, rows):
        if code not in (0, None):
            raise ServiceError(f"pink.admin {' '.join(args)} failed (status {code}): {(err or out).strip()}")
        outputs.append(out)
    return outputs


def create_user(config_path: str | os.PathLike[str], name: str, password: str, admin: bool = False,
                exist_ok: bool = False) -> None:
    args = ["user", "add", name, *(["--admin"] if admin else []), "--password-stdin",
            *(["--exist-ok"] if exist_ok else [])]
    run_admin(config_path, *args, stdin=password + "\n")


def create_token(config_path: str | os.PathLike[str], name: str) -> str:
    out = run_admin(config_path, "token", "create", name)
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    if not lines:
        raise ServiceError(f"pink.admin token create {name} printed no token")
    return lines[-1]


# --------------------------------------------------------------------------- test clusters


class ApiSession(requests.Session):
    """A requests session bound to one PINK server: relative URLs are joined to ``base_url``."""

    def __init__(self, base_url: str, token: str | None = None, verify: str | bool = True) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.verify = verify
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        url = url.decode() if isinstance(url, bytes) else url
        if not url.startswith(("http://", "https://")):
            url = f"{self.base_url}/{url.lstrip('/')}"
        # Per request: requests lets $REQUESTS_CA_BUNDLE override a session's own `verify`.
        kwargs.setdefault("verify", self.verify)
        return super().request(method, url, *args, **kwargs)


@dataclasses.dataclass
class WorkerHandle:
    """One simulated worker host of a :class:`LocalCluster`."""

    index: int
    name: str
    config_path: Path
    inbox: Path
    outbox: Path
    docker_url: str
    sshd: Sshd
    daemon: WorkerDaemon
    dockerd: Dockerd | None = None  # None: the system engine

    def docker(self, *args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [_binary("docker", "/usr/bin/docker"), "-H", self.docker_url, *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check)


class LocalCluster:
    """A whole PINK cluster on loopback: etcd, per-worker sshd (+ dockerd), workers, web, nginx.

    Used by the integration tests' ``cluster`` fixture and by the benchmarks. The first worker
    uses the system docker engine; others get their own :class:`Dockerd`. ``close()`` stops
    everything and removes the containers (labels ``pink.job`` + ``pink.worker=<name>``) and
    the images that appeared on the system engine while the cluster ran.
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        workers: int = 1,
        web_servers: int = 1,
        nginx: bool = False,
        etcd_endpoints: Sequence[str] | None = None,
        etcd_prefix: str | None = None,
        users: Sequence[str] = ("alice", "bob"),
        admin_user: str = "root",
        web_overrides: Mapping[str, Any] | None = None,
        etcd_overrides: Mapping[str, Any] | None = None,
        worker_overrides: Mapping[str, Any] | None = None,
        dev_ca: DevCA | None = None,
        worker_ready_check: str = "etcd",
        start_workers: bool = True,
        own_engines: bool = False,
    ) -> None:
        self.base_dir = Path(base_dir).resolve()
        #: Give the first worker its own engine too (fault tests that restart engines).
        self.own_engines = own_engines
        self.n_workers = workers
        self.n_web = web_servers
        self.use_nginx = nginx
        self.users = list(users)
        self.admin_user = admin_user
        self.web_overrides = dict(web_overrides or {})
        self.etcd_overrides = dict(etcd_overrides or {})
        self.worker_overrides = dict(worker_overrides or {})
        self.dev_ca = dev_ca
        self.worker_ready_check = worker_ready_check
        self.start_workers_now = start_workers
        self.etcd: EtcdCluster | None = None
        self.etcd_endpoints: list[str] = list(etcd_endpoints or [])
        # A shared etcd gets a prefix of its own, so clusters never see each other's keys.
        self.etcd_prefix = etcd_prefix or (f"/pink-{secrets.token_hex(3)}" if etcd_endpoints else "/pink")
        self.workers: list[WorkerHandle] = []
        self.web: list[Gunicorn] = []
        self.nginx: Nginx | None = None
        self.config_path = self.base_dir / "web" / "pink.toml"
        self.tokens: dict[str, str] = {}
        self.passwords: dict[str, str] = {}
        self._sessions: list[ApiSession] = []
        self._images_before: set[str] | None = None
        self.tag = secrets.token_hex(3)

    # -- what tests use
    @property
    def url(self) -> str:
        """The address clients use: nginx if there is one, else the first web server."""
        if self.nginx is not None:
            return self.nginx.url
        return self.web[0].url

    @property
    def ca_cert(self) -> Path | None:
        return self.dev_ca.ca_cert if self.dev_ca and self.nginx else None

    def api(self, user: str | None = None, *, url: str | None = None) -> ApiSession:
        """A session with ``user``'s bearer token (None: anonymous) against ``url`` or .url."""
        verify: str | bool = str(self.ca_cert) if self.ca_cert else True
        session = ApiSession(url or self.url, self.tokens[user] if user else None, verify)
        self._sessions.append(session)
        return session

    def stop_worker(self, i: int, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Stop worker ``i``'s daemon: SIGTERM (graceful) or another signal (SIGKILL = crash)."""
        daemon = self.workers[i].daemon
        if sig == signal.SIGTERM:
            daemon.stop(timeout)
        else:
            daemon.kill(sig)

    def start_worker(self, i: int, wait: bool = True, timeout: float = 30.0) -> WorkerDaemon:
        daemon = self.workers[i].daemon
        daemon.start()
        if wait:
            daemon.wait_ready(timeout)
        return daemon

    def add_user(self, name: str, admin: bool = False, password: str | None = None) -> str:
        """Create a user with a token; returns the token (also kept in .tokens/.passwords)."""
        self.add_users([(name, admin)], {name: password} if password else None)
        return self.tokens[name]

    def add_users(self, users: Sequence[tuple[str, bool]], passwords: Mapping[str, str] | None = None) -> None:
        """Create ``(name, admin)`` users and a token each, through pink.admin in one go."""
        calls: list[tuple[Sequence[str], str | None]] = []
        for name, admin in users:
            password = (passwords or {}).get(name) or secrets.token_urlsafe(12)
            self.passwords[name] = password
            calls.append((["user", "add", name, *(["--admin"] if admin else []), "--password-stdin"], password + "\n"))
            calls.append((["token", "create", name], None))
        outputs = run_admin_batch(self.config_path, calls)
        for (name, _), out in zip(users, outputs[1::2]):
            lines = [line.strip() for line in out.splitlines() if line.strip()]
            if not lines:
                raise ServiceError(f"pink.admin token create {name} printed no token")
            self.tokens[name] = lines[-1]

    # -- life cycle
    def _etcd_section(self) -> dict[str, Any]:
        return {"endpoints": self.etcd_endpoints, "prefix": self.etcd_prefix, **self.etcd_overrides}

    def start(self) -> "LocalCluster":
        t0 = time.monotonic()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        user = current_user()
        ssh_dir = self.base_dir / "ssh"
        client_key = ssh_keygen(ssh_dir / "id_ed25519", "pink-web")
        images = self._system_images()
        self._images_before = set(images) if images is not None else None

        # 1. Things with no dependencies, started together: etcd, sshds, extra engines.
        if not self.etcd_endpoints:
            self.etcd = EtcdCluster(1, self.base_dir / "etcd").start()
            self.etcd_endpoints = self.etcd.endpoints
        handles: list[tuple[int, str, Path, Sshd, Dockerd | None]] = []
        for i in range(self.n_workers):
            wdir = self.base_dir / f"worker{i}"
            sshd = Sshd(wdir / "sshd", inbox=wdir / "inbox", outbox=wdir / "outbox", client_key=client_key, user=user)
            sshd.start()
            dockerd = Dockerd(wdir / "dockerd").start() if i > 0 or self.own_engines else None
            handles.append((i, f"worker{i}-{self.tag}", wdir, sshd, dockerd))  # type: ignore[arg-type]
        if self.etcd:
            self.etcd.wait_ready()
        for _, _, _, sshd, _ in handles:
            sshd.wait_ready()
        (ssh_dir / "known_hosts").write_text("".join(h[3].known_hosts_line + "\n" for h in handles))

        # 2. Config files.
        web_section = {
            "secret_key": secrets.token_hex(32),
            "ssh_key": str(client_key),
            "known_hosts": str(ssh_dir / "known_hosts"),
            **self.web_overrides,
        }
        write_config(self.config_path, etcd=self._etcd_section(), web=web_section)
        for i, name, wdir, sshd, dockerd in handles:
            worker_section = {
                "name": name,
                "docker_url": dockerd.url if dockerd else SYSTEM_DOCKER_URL,
                "inbox": str(sshd.inbox),
                "outbox": str(sshd.outbox),
                "ssh_host": "127.0.0.1",
                "ssh_port": sshd.port,
                "ssh_user": user,
                **self.worker_overrides,
            }
            cfg = write_config(wdir / "pink.toml", etcd=self._etcd_section(), web=web_section, worker=worker_section)
            daemon = WorkerDaemon(wdir / "daemon", config_path=cfg, ready_check=self.worker_ready_check)
            self.workers.append(
                WorkerHandle(i, name, cfg, sshd.inbox, sshd.outbox,
                             dockerd.url if dockerd else SYSTEM_DOCKER_URL, sshd, daemon, dockerd)
            )

        # 3. Web servers and worker daemons; users are made while they boot.
        for j in range(self.n_web):
            web = Gunicorn(self.base_dir / f"web{j}", port=free_port(), config_path=self.config_path)
            self.web.append(web.start())  # type: ignore[arg-type]
        for w in self.workers:
            if w.dockerd:
                w.dockerd.wait_ready(60)
            if self.start_workers_now:
                w.daemon.start()
        wanted = ([(self.admin_user, True)] if self.admin_user else []) + [(u, False) for u in self.users]
        if wanted:
            self.add_users(wanted)
        for web in self.web:
            web.wait_ready(60)
        if self.start_workers_now:
            for w in self.workers:
                w.daemon.wait_ready(60)

        # 4. The load balancer.
        if self.use_nginx:
            self.dev_ca = self.dev_ca or make_dev_ca(self.base_dir / "ssl")
            self.nginx = Nginx(
                self.base_dir / "nginx",
                https_port=free_port(),
                upstreams=[w.port for w in self.web],
                cert=self.dev_ca.cert,
                key=self.dev_ca.key,
                ca_cert=self.dev_ca.ca_cert,
                max_upload_bytes=int(web_section.get("max_upload_bytes", pink_config.WebConfig.max_upload_bytes)),
            )
            self.nginx.start().wait_ready(30)
        log.info("local cluster up in %.1fs at %s", time.monotonic() - t0, self.url)
        return self

    def _system_images(self) -> list[str] | None:
        """Image ids on the system engine, or None if it did not answer."""
        try:
            out = subprocess.run(
                [_binary("docker", "/usr/bin/docker"), "-H", SYSTEM_DOCKER_URL, "images", "-q", "--no-trunc"],
                capture_output=True, text=True, timeout=60,
            )
        except (subprocess.SubprocessError, OSError):
            return None
        return out.stdout.split() if out.returncode == 0 else None

    def remove_loaded_images(self) -> None:
        """Remove images from the system engine that this cluster's jobs brought there.

        Only images named by this cluster's job records *and* absent when it started: other
        clusters (a parallel test run) and images built by fixtures are left alone. No force,
        so an image a container still uses stays.
        """
        now = self._system_images()
        if self._images_before is None or now is None:
            return
        jobs = etcd_get_prefix(self.etcd_endpoints, f"{self.etcd_prefix.rstrip('/')}/jobs/")
        used = set()
        for kv in jobs:
            with contextlib.suppress(ValueError, TypeError):
                used.add(json.loads(base64.b64decode(kv.get("value", ""))).get("image_id", ""))
        docker = _binary("docker", "/usr/bin/docker")
        for image in sorted((set(now) - self._images_before) & used):
            tags = subprocess.run(
                [docker, "-H", SYSTEM_DOCKER_URL, "image", "inspect", "--format", "{{json .RepoTags}}", image],
                capture_output=True, text=True, timeout=60,
            )
            try:
                names = json.loads(tags.stdout or "null") or [image]
            except ValueError:
                names = [image]
            # Removing every tag deletes the image; removing by id would refuse a multi-tag one.
            subprocess.run([docker, "-H", SYSTEM_DOCKER_URL, "rmi", *names], capture_output=True, timeout=120)

    def remove_job_containers(self) -> None:
        """Remove containers that this cluster's workers created (label pink.job + pink.worker)."""
        for w in self.workers:
            if w.dockerd is not None and not w.dockerd.alive():
                continue
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                ids = w.docker("ps", "-aq", "--filter", "label=pink.job",
                               "--filter", f"label=pink.worker={w.name}", check=False).stdout.split()
                if ids:
                    w.docker("rm", "-f", *ids, check=False)

    def close(self) -> None:
        errors: list[str] = []

        def attempt(what: str, fn: Callable[[], Any]) -> None:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - teardown goes on whatever fails
                errors.append(f"{what}: {exc}")

        for session in self._sessions:
            attempt("close session", session.close)
        front: list[Service] = ([self.nginx] if self.nginx else []) + list(self.web) + [w.daemon for w in self.workers]
        attempt("stop web servers and workers", lambda: stop_many(front))
        attempt("remove job containers", self.remove_job_containers)
        attempt("remove images the jobs loaded", self.remove_loaded_images)
        for w in self.workers:
            attempt(f"stop sshd of {w.name}", w.sshd.stop)
        engines = [w.dockerd for w in self.workers if w.dockerd]
        attempt("stop extra docker engines", lambda: stop_many(engines, 30))
        for engine in engines:
            attempt(f"purge {engine.base_dir}", engine.purge)
        if self.etcd:
            attempt("stop etcd", self.etcd.stop)
        if errors:
            log.warning("local cluster teardown had errors: %s", "; ".join(errors))

    def __enter__(self) -> "LocalCluster":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- pink-aio


AIO_WORKER = "aio-worker"


@dataclasses.dataclass
class AioState:
    """Ports chosen by the first ``up``, kept in <dir>/aio.json so later commands agree."""

    etcd_client_port: int
    etcd_peer_port: int
    ssh_port: int
    web_port: int
    https_port: int

    @classmethod
    def load(cls, path: Path) -> "AioState | None":
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")


class AllInOne:
    """The services of an all-in-one cluster under one folder, managed through pidfiles."""

    def __init__(self, folder: str | os.PathLike[str], state: AioState) -> None:
        self.dir = Path(folder).resolve()
        self.state = state
        self.run_dir = self.dir / "run"
        self.config_path = self.dir / "pink.toml"
        self.ssl_dir = self.dir / "ssl"
        self.cli_config = self.dir / "cli.json"
        self.password_file = self.dir / "demo-password"
        self.etcd = EtcdMember(
            self.dir / "etcd", member_name="aio", client_port=state.etcd_client_port,
            peer_port=state.etcd_peer_port, cluster_token="pink-aio", pidfile=self.run_dir / "etcd.pid",
        )
        self.sshd = Sshd(
            self.dir / "sshd", inbox=self.dir / "worker" / "inbox", outbox=self.dir / "worker" / "outbox",
            port=state.ssh_port, pidfile=self.run_dir / "sshd.pid",
        )
        self.gunicorn = Gunicorn(
            self.dir / "web", port=state.web_port, config_path=self.config_path, pidfile=self.run_dir / "gunicorn.pid",
        )
        self.nginx = Nginx(
            self.dir / "nginx", https_port=state.https_port, upstreams=[state.web_port],
            cert=self.ssl_dir / "server.pem", key=self.ssl_dir / "server.key", ca_cert=self.ssl_dir / "ca.pem",
            pidfile=self.run_dir / "nginx.pid",
        )

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.state.https_port}"

    def worker(self) -> WorkerDaemon:
        # Built on demand: it reads pink.toml, which the first `up` writes after sshd starts.
        return WorkerDaemon(self.dir / "worker", config_path=self.config_path, pidfile=self.run_dir / "worker.pid")

    def services(self) -> list[Service]:
        out: list[Service] = [self.etcd, self.sshd]
        if self.config_path.exists():
            out.append(self.worker())
        out += [self.gunicorn, self.nginx]
        return out

    def write_config(self) -> None:
        if self.config_path.exists():
            return  # keep the secret key (sessions) and any edits a person made
        workdir = self.dir / "worker"
        write_config(
            self.config_path,
            etcd={"endpoints": [self.etcd.endpoint]},
            web={
                "secret_key": secrets.token_hex(32),
                "ssh_key": str(self.sshd.client_key),
                "known_hosts": str(self.sshd.known_hosts),
            },
            worker={
                "name": AIO_WORKER,
                "docker_url": SYSTEM_DOCKER_URL,
                "inbox": str(workdir / "inbox"),
                "outbox": str(workdir / "outbox"),
                "ssh_host": "127.0.0.1",
                "ssh_port": self.sshd.port,
                "ssh_user": current_user(),
                "gpus": "auto",
            },
        )

    def ensure(self, service: Service, timeout: float = 60.0) -> bool:
        """Start ``service`` unless its pidfile names a live process; True if it was started."""
        if service.adopt():
            return False
        service.start()
        service.wait_ready(timeout)
        return True

    def ensure_demo_user(self) -> bool:
        """Create user demo and the CLI config once; True if anything was created."""
        if self.cli_config.exists() and self.password_file.exists():
            return False
        if not self.password_file.exists():
            password = secrets.token_urlsafe(12)
            out = run_admin(self.config_path, "user", "add", "demo", "--password-stdin", "--exist-ok",
                            stdin=password + "\n")
            if "already exists" in out:
                # The password file was deleted by hand but etcd kept the user: reset it so
                # the file tells the truth.
                run_admin(self.config_path, "user", "passwd", "demo", "--password-stdin", stdin=password + "\n")
            _write_private(self.password_file, password + "\n")
        token = create_token(self.config_path, "demo")
        _write_private(
            self.cli_config,
            json.dumps({"url": self.url, "token": token, "ca_cert": str(self.ssl_dir / "ca.pem")}, indent=2) + "\n",
        )
        return True

    def up(self) -> list[str]:
        """Bring every service up; returns the names of those this call started."""
        started: list[str] = []
        ensure_system_dockerd()
        make_dev_ca(self.ssl_dir)
        if self.ensure(self.etcd, 30):
            started.append("etcd")
        if self.ensure(self.sshd, 30):
            started.append("sshd")
        self.write_config()
        if self.ensure(self.worker(), 60):
            started.append("worker")
        if self.ensure(self.gunicorn, 60):
            started.append("gunicorn")
        if self.ensure(self.nginx, 30):
            started.append("nginx")
        if self.ensure_demo_user():
            started.append("demo user")
        return started

    def down(self) -> list[str]:
        stopped = []
        for service in reversed(self.services()):
            if service.adopt():
                service.stop()
                stopped.append(service.name)
        return stopped

    def status(self) -> list[tuple[str, int | None, bool]]:
        rows = []
        for service in self.services():
            running = service.adopt()
            answers = False
            if running:
                with contextlib.suppress(Exception):
                    answers = bool(service.is_ready())
            rows.append((service.name, service.pid if running else None, answers))
        return rows


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One `pink-aio` command at a time per folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _aio_state(folder: Path, args: argparse.Namespace, create: bool) -> AioState | None:
    path = folder / "aio.json"
    state = AioState.load(path)
    if state is None and create:
        state = AioState(
            etcd_client_port=free_port(), etcd_peer_port=free_port(),
            ssh_port=args.ssh_port or free_port(), web_port=args.web_port or free_port(),
            https_port=args.https_port,
        )
        state.save(path)
    elif state is not None and create and args.https_port != state.https_port:
        # A new port is honoured only while nginx is down, so `up` never strands a client.
        if not AllInOne(folder, state).nginx.adopt():
            state.https_port = args.https_port
            state.save(path)
    return state


def _cmd_up(args: argparse.Namespace) -> int:
    folder = Path(args.dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)  # it holds the demo password, the token and the SSH key
    t0 = time.monotonic()
    with _locked(folder / "run" / "aio.lock"):
        state = _aio_state(folder, args, create=True)
        assert state is not None
        aio = AllInOne(folder, state)
        try:
            started = aio.up()
        except (ServiceError, pink_config.ConfigError) as exc:
            print(f"pink-aio: {exc}", file=sys.stderr)
            return 1
    if not started:
        print(f"PINK all-in-one is already up in {folder} ({aio.url}).")
    else:
        print(f"PINK all-in-one is up in {folder} ({time.monotonic() - t0:.1f}s; started: {', '.join(started)}).")
    print(f"  web UI and API: {aio.url}/  (CA certificate: {aio.ssl_dir / 'ca.pem'})")
    print(f"  user: demo, password in {aio.password_file}")
    print(f"  logs: {folder}/*/*.log   stop: python -m pink.allinone down --dir {folder}")
    print("To use the pink CLI, run:")
    print(f"export PINK_CLI_CONFIG={aio.cli_config}")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    folder = Path(args.dir).resolve()
    state = _aio_state(folder, args, create=False)
    if state is None:
        print(f"nothing to stop: {folder} holds no all-in-one cluster")
    else:
        with _locked(folder / "run" / "aio.lock"):
            stopped = AllInOne(folder, state).down()
        print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
    if args.purge and folder.exists():
        with contextlib.suppress(subprocess.SubprocessError, OSError, ServiceError):
            docker = _binary("docker", "/usr/bin/docker")
            ids = subprocess.run(
                [docker, "ps", "-aq", "--filter", "label=pink.job", "--filter", f"label=pink.worker={AIO_WORKER}"],
                capture_output=True, text=True, timeout=60,
            ).stdout.split()
            if ids:
                subprocess.run([docker, "rm", "-f", *ids], capture_output=True, timeout=120)
        shutil.rmtree(folder)
        print(f"deleted {folder}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    folder = Path(args.dir).resolve()
    state = _aio_state(folder, args, create=False)
    if state is None:
        print(f"{folder} holds no all-in-one cluster (run: python -m pink.allinone up --dir {folder})")
        return 1
    aio = AllInOne(folder, state)
    rows = aio.status()
    docker_ok = docker_answers()
    print(f"{'service':<10} {'pid':>8}  state")
    print(f"{'dockerd':<10} {'-':>8}  {'answers' if docker_ok else 'NOT ANSWERING'} (system engine)")
    for name, pid, answers in rows:
        state_text = "answers" if answers else ("running, NOT ANSWERING" if pid else "stopped")
        print(f"{name:<10} {pid if pid else '-':>8}  {state_text}")
    print(f"url: {aio.url}   CLI config: {aio.cli_config}")
    return 0 if docker_ok and all(answers for _, _, answers in rows) and len(rows) == 5 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pink-aio", description="Run a whole PINK cluster on this machine (all-in-one)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("up", "start every service (idempotent)"), ("down", "stop every service"),
                       ("status", "show each service and whether it answers")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--dir", default=".aio", help="folder for all state (default: .aio)")
        p.add_argument("--https-port", type=int, default=8443, help="nginx HTTPS port (default: 8443)")
        p.add_argument("--ssh-port", type=int, default=0, help="sshd port (default: a free one)")
        p.add_argument("--web-port", type=int, default=0, help="gunicorn port (default: a free one)")
        if name == "down":
            p.add_argument("--purge", action="store_true", help="also delete the folder and the job containers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.command == "up" else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s")
    try:
        return {"up": _cmd_up, "down": _cmd_down, "status": _cmd_status}[args.command](args)
    except ServiceError as exc:
        print(f"pink-aio: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
