"""Docker engines for the dev cluster: the system one, and extra ones for simulated workers.

An extra engine has its own data root, exec root and socket, no bridge and no iptables, so it
never fights the system engine; its containers are a simulated worker host's containers. With
``userns_remap`` it remaps containers' users as deployed workers do (``"userns-remap":
"default"``: root in a container is uid 100000 or so on the host, from /etc/subuid).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from .process import Service, ServiceError, binary, cmdline, descendants

log = logging.getLogger(__name__)

SYSTEM_DOCKER_URL = "unix:///var/run/docker.sock"
DOCKERD_LOG = "/var/log/dockerd.log"


def docker(*args: str, url: str | None = None, stdin: bytes | None = None, timeout: float | None = 60.0,
           check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI against the engine at ``url``, or at whatever the environment names
    (``DOCKER_HOST``, else the system engine). ``stdin`` is fed as bytes; the output comes
    back as text; ``check`` raises CalledProcessError on a non-zero exit."""
    cmd = [binary("docker", "/usr/bin/docker"), *(["-H", url] if url else []), *args]
    raw = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
    result = subprocess.CompletedProcess(cmd, raw.returncode, raw.stdout.decode(errors="replace"),
                                         raw.stderr.decode(errors="replace"))
    if check:
        result.check_returncode()
    return result


def docker_answers(url: str | None = None, timeout: float = 10.0) -> bool:
    """True if the docker engine at ``url`` (default: the system one) answers."""
    try:
        result = docker("version", "--format", "{{.Server.Version}}", url=url, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0 and bool(result.stdout.strip())


def ensure_system_dockerd(timeout: float = 60.0) -> bool:
    """Start the system docker engine if it does not answer (hosts without systemd).

    Returns True if this call started it. Its output goes to /var/log/dockerd.log.
    """
    if docker_answers():
        return False
    dockerd = binary("dockerd", "/usr/sbin/dockerd")
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


def mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    return [m.split()[1] for m in lines if len(m.split()) > 1 and (m.split()[1] + "/").startswith(prefix)]


def _point_at(link: Path, target: Path) -> None:
    """Make ``link`` a symbolic link to ``target`` (for people reading the folder)."""
    with contextlib.suppress(OSError):
        if link.is_symlink() or link.is_file():
            link.unlink()
        link.symlink_to(target)


def _others_traverse(path: Path) -> bool:
    """True if every folder above ``path`` lets others through (o+x)."""
    return all(parent.stat().st_mode & 0o001 for parent in path.parents if parent.exists())


class Dockerd(Service):
    """An extra docker engine (one per simulated worker) with its own roots and socket."""

    name = "dockerd"
    marker = "dockerd"

    #: Unix socket paths are limited to 107 bytes and containerd nests its sockets a few
    #: levels under the exec root, so a long exec root (pytest's tmp paths) moves to /tmp.
    _MAX_EXEC_ROOT = 50

    def __init__(self, base_dir: str | os.PathLike[str], *, userns_remap: bool = False,
                 data_root: str | os.PathLike[str] | None = None,
                 exec_root: str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        """``data_root``/``exec_root``: fixed folders, used as they are (an engine that later
        commands adopt, as the all-in-one's, needs paths that do not change); by default
        ``base_dir``/data and /exec, moved to /tmp where they cannot work (see prepare)."""
        super().__init__(base_dir, **kwargs)
        #: Remap containers' users (``"userns-remap": "default"``), as on deployed workers.
        self.userns_remap = userns_remap
        self._fixed_data = data_root is not None
        self._fixed_exec = exec_root is not None
        self.data_root = Path(data_root) if data_root else self.base_dir / "data"
        self._own_data: Path | None = None  # a data root moved out of base_dir (see prepare)
        self._short_exec: Path | None = None
        self.exec_root = Path(exec_root) if exec_root else self.base_dir / "exec"
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
        if self._fixed_data:
            self.data_root.mkdir(parents=True, exist_ok=True)
            if self.userns_remap:
                os.chmod(self.data_root, 0o711)  # the remapped root goes through it
            if self.data_root != self.base_dir / "data":
                _point_at(self.base_dir / "data", self.data_root)
        elif self.userns_remap and not _others_traverse(self.base_dir / "data"):
            # dockerd refuses a data root below a folder the remapped root cannot traverse
            # (pytest's /tmp/pytest-of-USER is 0700): such an engine keeps its data in /tmp.
            if self._own_data is None or not self._own_data.exists():
                self._own_data = Path(tempfile.mkdtemp(prefix="pinkd-data-", dir="/tmp"))
                os.chmod(self._own_data, 0o711)
            self.data_root = self._own_data
            _point_at(self.base_dir / "data", self.data_root)
        self.data_root.mkdir(parents=True, exist_ok=True)
        # Its own file, so the host's /etc/docker/daemon.json (a deployed worker's, say) does not
        # apply or clash with the flags here. live-restore, as on deployed workers: running
        # containers outlive a restart of the engine.
        config: dict[str, Any] = {"live-restore": True}
        if self.userns_remap:
            config["userns-remap"] = "default"
        self.config_file.write_text(json.dumps(config) + "\n")
        if self._fixed_exec:
            self.exec_root.mkdir(parents=True, exist_ok=True)
            if self.exec_root != self.base_dir / "exec":
                _point_at(self.base_dir / "exec", self.exec_root)
        elif len(str(self.base_dir / "exec")) > self._MAX_EXEC_ROOT:
            if self._short_exec is None or not self._short_exec.exists():
                self._short_exec = Path(tempfile.mkdtemp(prefix="pinkd-", dir="/tmp"))
            self.exec_root = self._short_exec
            # A pointer for people reading the folder; the daemon uses the short path.
            _point_at(self.base_dir / "exec", self.exec_root)
        else:
            self.exec_root.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        # No bridge and no iptables: a second engine must not fight the system one over
        # docker0 and the NAT rules; PINK's jobs run with network "none" anyway.
        return [
            binary("dockerd", "/usr/sbin/dockerd"),
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
        return docker(*args, url=self.url, timeout=timeout, check=check)

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
            if entry.name.isdigit() and "containerd-shim" in (cmd := cmdline(int(entry.name))) and marker in cmd:
                shim = int(entry.name)
                for pid in [*reversed(descendants(shim)), shim]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

    def purge(self) -> None:
        """Delete the engine's data root (after stop), unless something is still mounted there."""
        if self.alive():
            raise ServiceError("stop dockerd before purging its data")
        left = mounts_under(self.data_root)
        # dockerd's private bind mounts of its own root and of its user-namespace root
        # (<uid>.<gid>), which a killed dockerd leaves: if nothing else is left, innermost first.
        own = [m for m in left
               if m == str(self.data_root) or re.fullmatch(r"\d+\.\d+", os.path.relpath(m, self.data_root))]
        if own == left:
            for mount in sorted(own, key=len, reverse=True):
                subprocess.run(["umount", mount], capture_output=True, check=False)
            left = mounts_under(self.data_root)
        if left:
            log.warning("not deleting %s: still mounted: %s", self.data_root, left[:3])
            return
        shutil.rmtree(self.data_root, ignore_errors=True)
        if self._fixed_exec and not mounts_under(self.exec_root):
            shutil.rmtree(self.exec_root, ignore_errors=True)
        if self._own_data is not None:
            (self.base_dir / "data").unlink(missing_ok=True)
        if self._short_exec is not None and not mounts_under(self._short_exec):
            shutil.rmtree(self._short_exec, ignore_errors=True)
