"""sshd for the dev cluster: a loopback OpenSSH server whose only key goes through the gate.

Each simulated worker host gets one; the web servers reach its inbox and outbox only through
``gpu_worker.sshgate``, the forced command in its authorized_keys, as on a deployed worker.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from .process import (
    REPO_ROOT, Service, ServiceError, binary, current_user, descendants, free_port, write_private,
)


@functools.lru_cache(maxsize=None)
def _gate_importable() -> bool:
    """Can this interpreter import gpu_worker.sshgate from any folder (project installed)?"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", "import gpu_worker.sshgate"], cwd="/", env=env, capture_output=True, timeout=30
    )
    return result.returncode == 0


def gate_command(inbox: str | os.PathLike[str], outbox: str | os.PathLike[str]) -> str:
    """The forced command that limits a key to the transfer gate (for authorized_keys)."""
    argv = [sys.executable, "-m", "gpu_worker.sshgate", "--inbox", str(inbox), "--outbox", str(outbox)]
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
            [binary("ssh-keygen", "/usr/bin/ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True,
            capture_output=True,
            timeout=30,
        )
    return path


class Sshd(Service):
    """OpenSSH server on loopback whose only key is forced through ``gpu_worker.sshgate``."""

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
        write_private(
            self.authorized_keys,
            f'command="{gate_command(self.inbox, self.outbox)}",restrict {pub}\n',
        )
        write_private(self.known_hosts, self.known_hosts_line + "\n", 0o644)
        write_private(self.config_path, self._config_text(), 0o600)
        if os.getuid() == 0:
            # The privilege-separation folder that Debian's service script normally creates.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        check = subprocess.run(
            [binary("sshd", "/usr/sbin/sshd"), "-t", "-f", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if check.returncode != 0:
            raise ServiceError(f"sshd rejected {self.config_path}: {check.stderr.strip()}")

    def _config_text(self) -> str:
        return "\n".join(
            [
                "# Written by pink_dev: a loopback sshd for PINK's transfer gate.",
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
        return [binary("sshd", "/usr/sbin/sshd"), "-D", "-e", "-f", str(self.config_path)]

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
