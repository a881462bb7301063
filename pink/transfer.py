"""SSH links from web servers to workers: one persistent paramiko transport per worker.

Uploads use the SCP protocol (``scp`` package, ``putfo`` from a stream): measured on these
machines it runs ~2x paramiko's SFTP. Reads (archives, logs) run ``tail -c +N`` on an exec
channel, which streams at full speed and gives byte ranges, instead of ``sftp.get`` whose
prefetch stalls on big files. On the worker, a forced command (:mod:`pink.sshgate`) allows only
these commands. Host keys must already be in the known_hosts file: unknown keys are refused.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import BinaryIO, Iterator

import paramiko
from scp import SCPClient, SCPException

from .errors import TransferError, WorkerUnavailable
from .model import JOB_ID, WorkerInfo

log = logging.getLogger(__name__)

CHUNK = 1 << 20
#: AES-GCM is the fastest cipher paramiko speaks on these machines; keep the others after it.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")


class WorkerLink:
    """A persistent, thread-safe SSH transport to one worker's transfer account."""

    def __init__(self, info: WorkerInfo, key_path: str, known_hosts: str, timeout_s: float = 10.0):
        self.info = info
        self.key_path = key_path
        self.known_hosts = known_hosts
        self.timeout_s = timeout_s
        self._transport: paramiko.Transport | None = None
        self._lock = threading.Lock()

    @property
    def _host_id(self) -> str:
        host, port = self.info.ssh_host, self.info.ssh_port
        return host if port == 22 else f"[{host}]:{port}"

    def _connect(self) -> paramiko.Transport:
        known = paramiko.HostKeys(self.known_hosts).lookup(self._host_id) if self.known_hosts else None
        if not known:
            raise WorkerUnavailable(
                f"no pinned host key for worker {self.info.name} ({self._host_id}) in "
                f"{self.known_hosts}; add it there (PINK never accepts unknown host keys)"
            )
        try:
            sock = socket.create_connection((self.info.ssh_host, self.info.ssh_port), self.timeout_s)
        except OSError as exc:
            raise WorkerUnavailable(f"cannot reach worker {self.info.name} at {self._host_id}: {exc}") from None
        transport = paramiko.Transport(sock)
        opts = transport.get_security_options()
        opts.ciphers = tuple(c for c in PREFERRED_CIPHERS if c in opts.ciphers) + tuple(
            c for c in opts.ciphers if c not in PREFERRED_CIPHERS)
        opts.key_types = tuple(t for t in opts.key_types if t in known) or opts.key_types
        try:
            transport.start_client(timeout=self.timeout_s)
            server_key = transport.get_remote_server_key()
            if known.get(server_key.get_name()) != server_key:
                raise WorkerUnavailable(
                    f"host key of worker {self.info.name} ({self._host_id}) does not match "
                    f"{self.known_hosts}: refusing to connect (possible man-in-the-middle)"
                )
            pkey = paramiko.PKey.from_path(self.key_path)
            transport.auth_publickey(self.info.ssh_user, pkey)
        except WorkerUnavailable:
            transport.close()
            raise
        except (paramiko.SSHException, OSError, EOFError) as exc:
            transport.close()
            raise WorkerUnavailable(f"SSH to worker {self.info.name} ({self._host_id}) failed: {exc}") from None
        transport.set_keepalive(15)
        log.info("connected to worker %s at %s", self.info.name, self._host_id)
        return transport

    def transport(self) -> paramiko.Transport:
        with self._lock:
            if self._transport is None or not self._transport.is_active():
                self._transport = self._connect()
            return self._transport

    def close(self) -> None:
        with self._lock:
            if self._transport is not None:
                self._transport.close()
                self._transport = None

    # ----- operations ---------------------------------------------------------------------------
    def inbox_path(self, job_id: str) -> str:
        if not JOB_ID.match(job_id):
            raise ValueError(f"bad job id {job_id!r}")
        return f"{self.info.inbox}/{job_id}.tar"

    def outbox_path(self, job_id: str, kind: str) -> str:
        if not JOB_ID.match(job_id):
            raise ValueError(f"bad job id {job_id!r}")
        suffix = self.info.archive_suffix if kind == "archive" else ".log"
        return f"{self.info.outbox}/{job_id}{suffix}"

    def upload(self, job_id: str, source: BinaryIO, size: int) -> None:
        """Stream ``size`` bytes read from ``source`` into the worker's inbox. Exceptions raised
        by ``source.read`` (a failed validation) propagate unchanged."""
        client = SCPClient(self.transport(), buff_size=CHUNK, socket_timeout=60.0)
        try:
            client.putfo(source, self.inbox_path(job_id), mode="0640", size=size)
        except (SCPException, paramiko.SSHException, OSError, EOFError) as exc:
            raise TransferError(f"upload to worker {self.info.name} failed: {exc}") from None
        finally:
            client.close()

    def _exec(self, command: str) -> paramiko.Channel:
        try:
            channel = self.transport().open_session(timeout=self.timeout_s)
            channel.settimeout(60.0)
            channel.exec_command(command)
            return channel
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.close()
            raise TransferError(f"SSH command on worker {self.info.name} failed: {exc}") from None

    def remove_upload(self, job_id: str) -> None:
        channel = self._exec(f"rm -f {self.inbox_path(job_id)}")
        try:
            status = channel.recv_exit_status()
        finally:
            channel.close()
        if status != 0:
            raise TransferError(f"could not remove upload of job {job_id} on {self.info.name}")

    def read(self, job_id: str, kind: str, offset: int = 0) -> Iterator[bytes]:
        """Yield the bytes of the job's archive or log from ``offset`` on."""
        if offset < 0:
            raise ValueError("offset must be >= 0")
        channel = self._exec(f"tail -c +{offset + 1} {self.outbox_path(job_id, kind)}")
        try:
            while True:
                try:
                    data = channel.recv(CHUNK)
                except socket.timeout:
                    raise TransferError(f"reading from worker {self.info.name} timed out") from None
                if not data:
                    break
                yield data
            if channel.recv_exit_status() != 0:
                err = channel.recv_stderr(4096).decode(errors="replace").strip()
                raise TransferError(f"cannot read {kind} of job {job_id} on {self.info.name}: {err}")
        finally:
            channel.close()


class WorkerLinks:
    """The pool of links, one per worker, replaced when a worker's address changes."""

    def __init__(self, key_path: str, known_hosts: str) -> None:
        self.key_path = key_path
        self.known_hosts = known_hosts
        self._links: dict[str, WorkerLink] = {}
        self._lock = threading.Lock()

    def get(self, info: WorkerInfo) -> WorkerLink:
        with self._lock:
            link = self._links.get(info.name)
            addr = (info.ssh_host, info.ssh_port, info.ssh_user, info.inbox, info.outbox)
            if link is None or (link.info.ssh_host, link.info.ssh_port, link.info.ssh_user,
                                link.info.inbox, link.info.outbox) != addr:
                if link is not None:
                    link.close()
                link = WorkerLink(info, self.key_path, self.known_hosts)
                self._links[info.name] = link
            return link

    def close(self) -> None:
        with self._lock:
            for link in self._links.values():
                link.close()
            self._links.clear()
