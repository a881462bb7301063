"""Processes, ports, polling and private files: the base every launcher of the dev cluster
is built on.

A :class:`Service` owns one folder that holds all of its state (config, data, log, pid), takes
its ports from the caller, and runs its program detached in a new session so that it outlives
the command that started it and can be stopped as a group. Every launcher has ``start()``,
``wait_ready(timeout)``, ``stop()`` (SIGTERM, wait, then SIGKILL), ``kill(sig)``, ``.pid`` and
``.log_path``; ``with launcher:`` starts it, waits until it answers and stops it on exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Self, Sequence

import pink
from pink.errors import PinkError

log = logging.getLogger(__name__)

#: The checkout (or site-packages) that holds ``pink``, ``webapp`` and ``gpu_worker``: the
#: working directory of every Python process we start, so ``-m`` finds them either way.
REPO_ROOT = Path(pink.__file__).resolve().parents[1]


class ServiceError(PinkError):
    """A launched service failed to start, to become ready or to stop."""


def binary(name: str, *fallbacks: str) -> str:
    """Absolute path of a program; sshd in particular refuses to run from a relative path."""
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found:
        return found
    for candidate in fallbacks:
        if os.access(candidate, os.X_OK):
            return candidate
    raise ServiceError(f"{name} is not installed: run scripts/bootstrap.sh (as root) first")


def current_user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Write a file that may hold a secret: created with ``mode`` from the start, no window."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, mode)


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


def cmdline(pid: int) -> str:
    """The command line of ``pid`` with spaces between the arguments ("" if it is gone)."""
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


def _group_members(pgid: int) -> list[int]:
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


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy and return that.

    A probe that raises counts as "not yet"; after ``timeout`` seconds raise
    :class:`ServiceError` naming ``what`` and the last error.
    """
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

    # Life cycle.
    @property
    def pid(self) -> int | None:
        return self._pid

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self._pid is not None and pid_alive(self._pid)

    def start(self) -> Self:
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
                cwd=REPO_ROOT,
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

    def wait_ready(self, timeout: float = 30.0) -> Self:
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
        if _group_members(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            # SIGKILL is delivered asynchronously: return only once they are gone.
            deadline = time.monotonic() + 5
            while _group_members(pid) and time.monotonic() < deadline:
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
        line = cmdline(pid)
        if not pid_alive(pid) or not (str(self.base_dir) in line or (self.marker and self.marker in line)):
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
