"""SSH links from web servers to workers.

Bulk bytes (uploads and downloads of 64 MiB or more) go through OpenSSH's ``ssh`` client, one
process per transfer, when it is installed (the web servers' role installs it): its C AES-GCM
costs a third of the CPU of paramiko's per-packet Python (2.7 vs 5.5-8.5 CPU-seconds per GiB
sent, measured here), and paramiko's re-key after 512 MiB can time out on a loaded machine,
which broke transfers bigger than that. Uploads speak the SCP protocol to ``scp -t``; reads run
``tail -c +N``, which streams at full speed and gives byte ranges. Everything smaller (thin
uploads, logs, which ``?follow=1`` polls, removing a failed upload) rides one persistent
paramiko transport per worker, where opening a channel costs nothing (a new SSH connection
costs 0.1 s idle, over a second on a loaded machine), and so does everything when there is no
``ssh`` binary (uploads with the ``scp`` package, ``putfo`` from a stream). A job's input is
uploaded as ``input-<upload id>.part`` and renamed to ``input-<sha256 hex>.tar`` once whole and
checked, so the worker never sees a partial input under its final name. On the worker, a
forced command (:mod:`gpu_worker.sshgate`) allows only these commands. Host keys must already be in
the known_hosts file: unknown keys are refused by both clients (OpenSSH runs with
``StrictHostKeyChecking=yes`` and the pinned file only).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import re
import shutil
import socket
import subprocess
import threading
import time
from typing import IO, BinaryIO, Iterator

import paramiko
from scp import SCPClient, SCPException

from pink import metrics
from pink.config import WebConfig
from pink.errors import TransferError, WorkerUnavailable
from pink.model import INPUT_ID, JOB_ID, WorkerInfo

log = logging.getLogger(__name__)

CHUNK = 1 << 20
#: AES-GCM is the fastest cipher paramiko speaks on these machines; keep the others after it.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")
#: Pipes to and from ``ssh`` hold this much, so each side moves 1 MiB per system call.
PIPE_BYTES = 1 << 20
#: Transfers of at least this many bytes use OpenSSH's client; smaller ones ride the persistent
#: paramiko transport, since a new SSH connection costs 0.1 s on an idle machine and over a
#: second on a loaded one.
BULK_BYTES = 64 << 20
_F_SETPIPE_SZ = 1031
#: Names an input upload in the worker's inbox until it is whole.
UPLOAD_ID = re.compile(r"^[0-9a-f]{20}$")


def openssh_client() -> str | None:
    """Path of OpenSSH's ``ssh`` client, or None (then paramiko carries everything)."""
    return shutil.which("ssh")


def _grow_pipe(stream: IO[bytes] | None) -> None:
    if stream is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(stream.fileno(), _F_SETPIPE_SZ, PIPE_BYTES)


class WorkerLink:
    """A persistent, thread-safe SSH transport to one worker's transfer account."""

    def __init__(self, info: WorkerInfo, key_path: str, known_hosts: str, timeout_s: float = 10.0,
                 ssh_binary: str | None = None, ciphers: str = WebConfig.ssh_ciphers):
        self.info = info
        #: OpenSSH's ``Ciphers`` for bulk transfers (``web.ssh_ciphers``).
        self.ciphers = ciphers
        self.key_path = key_path
        self.known_hosts = known_hosts
        self.timeout_s = timeout_s
        #: OpenSSH's client for bulk transfers; None: paramiko carries them too.
        self.ssh_binary = ssh_binary
        self._transport: paramiko.Transport | None = None
        self._lock = threading.Lock()

    @property
    def _host_id(self) -> str:
        host, port = self.info.ssh_host, self.info.ssh_port
        return host if port == 22 else f"[{host}]:{port}"

    def _pinned_keys(self):
        known = paramiko.HostKeys(self.known_hosts).lookup(self._host_id) if self.known_hosts else None
        if not known:
            raise WorkerUnavailable(
                f"no pinned host key for worker {self.info.name} ({self._host_id}) in "
                f"{self.known_hosts}; add it there (PINK never accepts unknown host keys)"
            )
        return known

    def _connect(self) -> paramiko.Transport:
        known = self._pinned_keys()
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

    def input_part_path(self, upload_id: str) -> str:
        if not UPLOAD_ID.match(upload_id):
            raise ValueError(f"bad upload id {upload_id!r}")
        return f"{self.info.inbox}/input-{upload_id}.part"

    def input_path(self, input_id: str) -> str:
        if not INPUT_ID.match(input_id):
            raise ValueError(f"bad input id {input_id!r}")
        return f"{self.info.inbox}/input-{input_id.removeprefix('sha256:')}.tar"

    def outbox_path(self, job_id: str, kind: str) -> str:
        if not JOB_ID.match(job_id):
            raise ValueError(f"bad job id {job_id!r}")
        suffix = self.info.archive_suffix if kind == "archive" else ".log"
        return f"{self.info.outbox}/{job_id}{suffix}"

    # ----- OpenSSH client (bulk transfers) --------------------------------------------------
    def _ssh_argv(self, command: str) -> list[str]:
        assert self.ssh_binary
        return [
            self.ssh_binary, "-F", "/dev/null", "-T", "-x", "-a",
            "-i", self.key_path, "-p", str(self.info.ssh_port), "-l", self.info.ssh_user,
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes", "-o", "CheckHostIP=no", "-o", "UpdateHostKeys=no",
            "-o", f"ConnectTimeout={max(1, int(self.timeout_s))}",
            "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
            "-o", f"Ciphers={self.ciphers}", "-o", "Compression=no",
            "-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "LogLevel=ERROR",
            "--", self.info.ssh_host, command,
        ]

    def _spawn(self, command: str, *, stdin: bool) -> subprocess.Popen:
        self._pinned_keys()  # a clear message when the key is not pinned, before ssh's own
        try:
            proc = subprocess.Popen(
                self._ssh_argv(command), stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True,
            )
        except OSError as exc:
            raise TransferError(f"cannot run {self.ssh_binary}: {exc}") from None
        _grow_pipe(proc.stdin)
        _grow_pipe(proc.stdout)
        return proc

    def _ssh_failure(self, proc: subprocess.Popen, what: str) -> TransferError:
        """The error for a failed ssh process (it has exited or is killed here)."""
        with contextlib.suppress(OSError, ValueError):
            if proc.poll() is None:
                proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        err = b""
        with contextlib.suppress(OSError, ValueError):
            err = proc.stderr.read(4096) if proc.stderr else b""
        detail = err.decode(errors="replace").strip() or f"ssh exit status {proc.returncode}"
        if proc.returncode == 255:
            return WorkerUnavailable(f"SSH to worker {self.info.name} ({self._host_id}) failed: {detail}")
        return TransferError(f"{what} on worker {self.info.name} failed: {detail}")

    @staticmethod
    def _close(proc: subprocess.Popen) -> None:
        with contextlib.suppress(OSError, ValueError):
            if proc.poll() is None:
                proc.kill()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            with contextlib.suppress(OSError, ValueError):
                if stream is not None:
                    stream.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)

    def _scp_ack(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        code = proc.stdout.read(1)
        if code == b"\0":
            return
        if code in (b"\1", b"\2"):
            message = proc.stdout.readline().decode(errors="replace").strip()
            raise TransferError(f"upload to worker {self.info.name} refused: {message}")
        raise self._ssh_failure(proc, "upload")

    def _upload_openssh(self, path: str, source: BinaryIO, size: int) -> None:
        proc = self._spawn(f"scp -t {path}", stdin=True)
        assert proc.stdin is not None
        try:
            try:
                self._scp_ack(proc)
                proc.stdin.write(f"C0640 {size} {path.rpartition('/')[2]}\n".encode())
                proc.stdin.flush()
                self._scp_ack(proc)
                left = size
                while left > 0:
                    chunk = source.read(min(CHUNK, left))  # ImageArchiveError propagates
                    if not chunk:
                        raise TransferError(f"the upload source ended {left} bytes early")
                    proc.stdin.write(chunk)
                    left -= len(chunk)
                proc.stdin.write(b"\0")
                proc.stdin.flush()
                self._scp_ack(proc)
                proc.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                raise self._ssh_failure(proc, "upload") from None
            if proc.wait(60) not in (0, None):
                raise self._ssh_failure(proc, "upload")
        except subprocess.TimeoutExpired:
            raise TransferError(f"upload to worker {self.info.name}: ssh did not exit") from None
        finally:
            self._close(proc)

    def _read_openssh(self, command: str, what: str) -> Iterator[bytes]:
        proc = self._spawn(command, stdin=False)
        assert proc.stdout is not None
        try:
            # read(), not read1(): ssh writes its stdout in pieces of 90-450 KiB, and each one
            # costs a pass through the WSGI stack and a send to nginx; whole MiBs cost less.
            while data := proc.stdout.read(CHUNK):
                yield data
            if proc.wait(60) != 0:
                raise self._ssh_failure(proc, what)
        finally:
            self._close(proc)

    # ----- operations (continued) -------------------------------------------------------------
    def upload(self, job_id: str, source: BinaryIO, size: int) -> None:
        """Stream ``size`` bytes read from ``source`` into the job's file in the worker's inbox.
        Exceptions raised by ``source.read`` (a failed validation) propagate unchanged."""
        self._put(self.inbox_path(job_id), source, size)

    def upload_input(self, upload_id: str, source: BinaryIO, size: int) -> None:
        """Stream an input into the worker's inbox as ``input-<upload id>.part``, as :meth:`upload`."""
        self._put(self.input_part_path(upload_id), source, size)

    def _put(self, path: str, source: BinaryIO, size: int) -> None:
        start = time.monotonic()
        self._put_bytes(path, source, size)
        metrics.transferred("upload", size, time.monotonic() - start)

    def _put_bytes(self, path: str, source: BinaryIO, size: int) -> None:
        if self.ssh_binary and size >= BULK_BYTES:
            return self._upload_openssh(path, source, size)
        client = SCPClient(self.transport(), buff_size=CHUNK, socket_timeout=60.0)
        try:
            client.putfo(source, path, mode="0640", size=size)
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

    def _run(self, command: str, what: str) -> None:
        channel = self._exec(command)
        try:
            status = channel.recv_exit_status()
        finally:
            channel.close()
        if status != 0:
            raise TransferError(f"could not {what} on {self.info.name}")

    def remove_upload(self, job_id: str) -> None:
        self._run(f"rm -f {self.inbox_path(job_id)}", f"remove the upload of job {job_id}")

    def remove_input_part(self, upload_id: str) -> None:
        self._run(f"rm -f {self.input_part_path(upload_id)}", f"remove input upload {upload_id}")

    def commit_input(self, upload_id: str, input_id: str) -> None:
        """Give a whole, checked input upload its final name, ``input-<sha256 hex>.tar``."""
        self._run(f"mv -f -T {self.input_part_path(upload_id)} {self.input_path(input_id)}",
                  f"keep input {input_id}")

    def read(self, job_id: str, kind: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Yield the bytes of the job's archive or log from ``offset`` on (``length``: how many
        the caller expects, when it knows)."""
        return iter(metrics.counted_stream(self._read(job_id, kind, offset, length)))

    def _read(self, job_id: str, kind: str, offset: int, length: int | None) -> Iterator[bytes]:
        if offset < 0:
            raise ValueError("offset must be >= 0")
        command = f"tail -c +{offset + 1} {self.outbox_path(job_id, kind)}"
        if self.ssh_binary and length is not None and length >= BULK_BYTES:
            yield from self._read_openssh(command, f"reading the archive of job {job_id}")
            return
        channel = self._exec(command)
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

    def __init__(self, key_path: str, known_hosts: str, ssh_binary: str | None | bool = True,
                 ciphers: str = WebConfig.ssh_ciphers) -> None:
        self.key_path = key_path
        self.known_hosts = known_hosts
        self.ciphers = ciphers
        #: True: OpenSSH's client if installed; a path; or None/False: paramiko only.
        self.ssh_binary = openssh_client() if ssh_binary is True else (ssh_binary or None)
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
                link = WorkerLink(info, self.key_path, self.known_hosts, ssh_binary=self.ssh_binary,
                                  ciphers=self.ciphers)
                self._links[info.name] = link
            return link

    def close(self) -> None:
        with self._lock:
            for link in self._links.values():
                link.close()
            self._links.clear()
